"""The final cut: the SDK shows it, and its age is not staleness (nothing is signed after
it), while a preliminary cut as old is refused as stale."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, with_two_cuts
from veritally_client import Client, ClientConfig, StaleCheckpointError

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
