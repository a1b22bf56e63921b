"""A publisher heartbeating over a stuck pipeline is reported as stalled, from the signed
ingest figure of its cuts; a figure that contradicts itself is malformed. Against a fake
publisher that signs real cuts; nothing in the client is mocked."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher
from veritally_client import (
    Client,
    ClientConfig,
    MalformedDataError,
    StalledError,
    VerificationError,
)
from veritally_client._gen.veritally.v1 import acta_pb2

# Cuts every 60 s (the fake's interval); a stall is reported after 5 minutes.
CONFIG = ClientConfig(max_checkpoint_age=300.0, max_stall_seconds=300.0)
HEARTBEAT = dt.timedelta(seconds=60)


def client_for(pub: FakePublisher, state_dir: Path, config: ClientConfig = CONFIG) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=config, clock=lambda: pub.now
    )


def test_cut_exposes_the_ingest_figure_and_the_lag(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=3)
    cut = client_for(pub, tmp_path).latest()
    assert (cut.acta_records, cut.ingest_records, cut.lag_records) == (4, 7, 3)
    assert cut.stall_since == cut.cut_time
    assert cut.stall_since_cut == 1


def test_heartbeat_over_a_frozen_pipeline_is_reported_as_stalled(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=0)
    client = client_for(pub, tmp_path)
    assert client.latest().lag_records == 0
    # Ingest goes on accepting; the cuts heartbeat over the same 4 records.
    seen = []
    for behind in range(1, 7):
        pub.make_cut(behind=behind, advance=HEARTBEAT)
        seen.append(client.latest().lag_records)
    # Cut 2 starts the stall; cuts 3-7 are within 5 minutes of it; cut 8 is 6 minutes on.
    assert seen == [1, 2, 3, 4, 5, 6]
    pub.make_cut(behind=7, advance=HEARTBEAT)
    with pytest.raises(StalledError) as raised:
        client.latest()
    error = raised.value
    assert isinstance(error, VerificationError)
    assert (error.cut.cut_number, error.cut.lag_records) == (8, 7)
    assert (error.since_cut, error.stalled_seconds) == (2, 360.0)
    # Nothing of the stalled cut is trusted: the state stays at the last good cut.
    state = client.trusted_state
    assert state is not None
    assert state.cut_number == 7
    # It stays stalled on every later look until a cut covers a new record.
    pub.make_cut(behind=8, advance=HEARTBEAT)
    with pytest.raises(StalledError):
        client.latest()
    pub.step(1, behind=8)
    assert client.latest().lag_records == 8


def test_watch_stops_with_stalled_when_heartbeats_never_cover_ingest(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=2)
    client = client_for(pub, tmp_path)
    watched = client.watch()
    assert next(watched).cut_number == 1
    for _ in range(6):
        pub.make_cut(behind=2, advance=HEARTBEAT)
    got = [next(watched).cut_number for _ in range(5)]
    assert got == [2, 3, 4, 5, 6]
    with pytest.raises(StalledError) as raised:
        next(watched)
    assert raised.value.since_cut == 1


def test_a_pipeline_that_keeps_moving_is_never_stalled(tmp_path: Path) -> None:
    pub = FakePublisher()
    client = client_for(pub, tmp_path)
    # Always behind (a steady flow), but every cut covers new records: slow, not stuck.
    for _ in range(15):
        pub.add_actas(1)
        pub.make_cut(behind=40, advance=HEARTBEAT)
        cut = client.latest()
        assert cut.lag_records == 40
        assert cut.stall_since == cut.cut_time


def test_a_publisher_without_the_figure_is_not_judged(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4)
    client = client_for(pub, tmp_path)
    for _ in range(10):
        pub.make_cut(advance=HEARTBEAT)
        cut = client.latest()
        assert cut.ingest_records is None
        assert cut.lag_records is None


def test_stall_is_counted_across_client_restarts(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=0)
    client_for(pub, tmp_path).latest()
    for _ in range(6):  # cuts 2-7: the stall starts at cut 2 and lasts 5 minutes
        pub.make_cut(behind=1, advance=HEARTBEAT)
        client_for(pub, tmp_path).latest()  # a new process every time (cron)
    pub.make_cut(behind=1, advance=HEARTBEAT)
    with pytest.raises(StalledError) as raised:
        client_for(pub, tmp_path).latest()
    assert raised.value.since_cut == 2


def test_state_written_before_the_stall_fields_still_loads(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=1)
    client = client_for(pub, tmp_path)
    client.latest()
    path = client._store.directory / "state.json"
    doc = json.loads(path.read_text())
    assert (doc["ingest_records"], doc["stall_since_cut"]) == (5, 1)
    for key in ("ingest_records", "stall_since", "stall_since_cut"):
        del doc[key]
    path.write_text(json.dumps(doc))  # as an older client wrote it
    client.close()
    pub.make_cut(behind=1, advance=HEARTBEAT)
    cut = client_for(pub, tmp_path).latest()
    assert cut.stall_since_cut == 2  # the stall is counted from the first cut seen again


def test_config_refuses_a_zero_stall_limit() -> None:
    with pytest.raises(ValueError, match="max_stall_seconds"):
        dataclasses.replace(CONFIG, max_stall_seconds=0)


def test_rejects_a_cut_claiming_ingest_accepted_fewer_records_than_it_covers(
    tmp_path: Path,
) -> None:
    pub = FakePublisher()
    pub.add_actas(4)

    def fewer(record: acta_pb2.CutRecord) -> None:
        record.ingest_records = record.acta_records - 1

    pub.make_cut(record_mutator=fewer)
    with pytest.raises(MalformedDataError):
        client_for(pub, tmp_path).latest()


def test_rejects_an_ingest_figure_that_goes_back(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=5)  # ingest had 9
    client = client_for(pub, tmp_path)
    client.latest()

    def back(record: acta_pb2.CutRecord) -> None:
        record.ingest_records = 8

    pub.make_cut(record_mutator=back)
    with pytest.raises(MalformedDataError):
        client.latest()


def test_rejects_a_cut_that_drops_the_ingest_figure(tmp_path: Path) -> None:
    pub = FakePublisher()
    pub.step(4, behind=5)
    client = client_for(pub, tmp_path)
    client.latest()
    pub.make_cut()  # the figure silently left out: a stall could hide behind it
    with pytest.raises(MalformedDataError):
        client.latest()


def test_recount_rejects_an_ingest_figure_that_went_back_between_two_cuts(
    tmp_path: Path,
) -> None:
    pub = FakePublisher()
    pub.step(4, behind=5)  # ingest had 9

    def back(record: acta_pb2.CutRecord) -> None:
        record.ingest_records = 8

    pub.add_actas(1)
    pub.make_cut(record_mutator=back)
    client = client_for(pub, tmp_path)
    client.latest()  # a first look sees only the newest cut: nothing to compare
    with pytest.raises(MalformedDataError):
        client.recount()
