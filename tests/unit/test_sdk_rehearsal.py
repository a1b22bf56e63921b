"""A rehearsal's cuts are test data: refused unless the client is told to accept them.

Every PREP has public rehearsals (simulacros) whose figures look like real ones. The
definition's ``test`` flag is copied into every signed results blob, so a client can tell
them apart from the signed bytes alone, whichever mirror served them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.unit.sdk_fake import (
    FakePublisher,
    make_trust_root,
    small_election,
    with_two_cuts,
    write_bundle,
)
from veritally_client import Client, ClientConfig, RehearsalCutError, verify_bundle
from veritally_client._cli import EXIT_VERIFICATION, main
from veritally_client._election import ElectionIndex

CONFIG = ClientConfig(max_checkpoint_age=300.0)


def _rehearsal() -> FakePublisher:
    pb = small_election().pb
    pb.test = True
    return with_two_cuts(FakePublisher(election=ElectionIndex.from_pb(pb)))


def _client(pub: FakePublisher, state_dir: Path, config: ClientConfig) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=config, clock=lambda: pub.now
    )


def test_rehearsal_cut_taken_for_a_real_one_is_refused(tmp_path: Path) -> None:
    pub = _rehearsal()
    with _client(pub, tmp_path, CONFIG) as client:
        with pytest.raises(RehearsalCutError, match="rehearsal"):
            client.latest()
        assert client.trusted_state is None  # nothing of it was persisted


def test_rehearsal_cut_is_accepted_and_marked_when_test_data_is_allowed(tmp_path: Path) -> None:
    pub = _rehearsal()
    config = dataclasses.replace(CONFIG, allow_test=True)
    with _client(pub, tmp_path, config) as client:
        cut = client.latest()
        assert cut.test
        assert client.cut(1).test


def test_real_cut_is_not_marked_as_a_test(tmp_path: Path) -> None:
    pub = with_two_cuts(FakePublisher())
    with _client(pub, tmp_path, CONFIG) as client:
        assert not client.latest().test


def test_rehearsal_bundle_is_refused_offline_too(tmp_path: Path) -> None:
    pub = _rehearsal()
    write_bundle(pub, tmp_path / "bundle")
    with pytest.raises(RehearsalCutError):
        verify_bundle(tmp_path / "bundle", trust_root=pub.trust_root(), config=CONFIG)
    report = verify_bundle(
        tmp_path / "bundle",
        trust_root=pub.trust_root(),
        config=dataclasses.replace(CONFIG, allow_test=True, max_checkpoint_age=10**9),
    )
    assert report.latest.test


def test_cli_refuses_a_rehearsal_bundle_without_allow_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = _rehearsal()
    bundle = tmp_path / "bundle"
    write_bundle(pub, bundle)
    path = tmp_path / "root.pb"
    # The CLI checks expiry against the real clock.
    path.write_bytes(make_trust_root(pub.signers, expires=pub.now.replace(year=2100)))
    root = str(path)
    assert main(["--trust-root", root, "verify-bundle", str(bundle)]) == EXIT_VERIFICATION
    assert "rehearsal" in capsys.readouterr().err
    assert main(["--trust-root", root, "--allow-test", "verify-bundle", str(bundle)]) == 0
