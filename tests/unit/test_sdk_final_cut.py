"""The final cut: the SDK shows it, and its age is not staleness (nothing is signed after
it), while a preliminary cut as old is refused as stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, with_two_cuts
from veritally_client import AfterFinalCutError, Client, ClientConfig, StaleCheckpointError

CONFIG = ClientConfig(max_checkpoint_age=300.0)


def _client(pub: FakePublisher, state_dir: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=CONFIG, clock=lambda: pub.now
    )


def test_final_cut_is_shown_final_and_stays_valid_after_the_night(tmp_path: Path) -> None:
    pub = with_two_cuts(FakePublisher())
    with _client(pub, tmp_path) as client:
        assert not client.latest().final
        pub.make_cut(final=True)
        final = client.latest()
        assert final.final
        pub.now += dt.timedelta(days=2)
        assert client.latest().cut_number == final.cut_number


def test_preliminary_cut_as_old_is_stale(tmp_path: Path) -> None:
    pub = with_two_cuts(FakePublisher())
    with _client(pub, tmp_path) as client:
        client.latest()
        pub.now += dt.timedelta(days=2)
        with pytest.raises(StaleCheckpointError):
            client.latest()


def test_cut_signed_after_the_final_cut_is_refused(tmp_path: Path) -> None:
    """A publisher that closes the night and then signs more (actas after the close, a
    cut over them) cannot move a client that saw the final cut."""
    pub = with_two_cuts(FakePublisher())
    with _client(pub, tmp_path) as client:
        pub.make_cut(final=True)
        final = client.latest()
        assert final.final
        pub.step(2)
        with pytest.raises(AfterFinalCutError, match=f"after the final cut {final.cut_number}"):
            client.latest()
    # The refusal survives a restart: the saved state says the cut was final.
    with _client(pub, tmp_path) as client, pytest.raises(AfterFinalCutError):
        client.latest()


def test_recount_refuses_a_cut_record_after_a_final_one(tmp_path: Path) -> None:
    """A client that never saw the final cut still finds it in the log when it recounts."""
    pub = with_two_cuts(FakePublisher())
    pub.make_cut(final=True)
    pub.step(2)
    with _client(pub, tmp_path) as client:
        assert not client.latest().final
        with pytest.raises(AfterFinalCutError, match="signed after the final cut 3"):
            client.recount()
