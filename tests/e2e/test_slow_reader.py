"""A slow reader must not stall other parties' streams at Envoy.

The attack: an outlet opens a few WatchCuts streams from the first cut and stops reading
after the first message. Publication keeps sending the cuts it owes them; Envoy, whose
upstream HTTP/2 windows were the 256 MiB default, accepted all of it, buffered past its
per-connection limit and then stopped reading the whole upstream connection to
publication, which every other outlet's streams share: a new WatchCuts got no first cut
for as long as the slow streams stayed open (10 s in `make soak`'s stream flood). With
small upstream flow-control windows the slow streams only hold up themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client._gen.veritally.v1 import acta_pb2, publication_pb2, publication_pb2_grpc

# Enough casillas that a results blob is ~200 KB, and cuts often enough that a stream
# from the first cut owes a slow reader several MiB within seconds.
CASILLAS = 2_000
INTERVAL_S = 0.2
CUTS_BEFORE = 40  # cuts made before the slow reader comes
SLOW_STREAMS = 8
HOLD_S = 12.0
FIRST_CUT_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("slow-reader"))
    Bootstrap(casillas=CASILLAS, seed=4).ensure(state)
    with Stack(
        state, base_port=None, drain_seconds=0.5, interval_s=INTERVAL_S, single_capture=True
    ) as running:
        yield running


def _channel(stack: Stack, identity: str) -> grpc.Channel:
    return grpc.secure_channel(stack.endpoints.edge, stack.tls(identity).channel_credentials())


def _latest(stack: Stack) -> tuple[int, int]:
    """(cut number, results bytes) of the newest cut."""
    with _channel(stack, "outlet-03") as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        cut = stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=10).cut
    record = acta_pb2.LogLeaf.FromString(cut.cut_leaf).cut_record
    return record.cut_number, len(cut.results)


def test_slow_reading_outlet_does_not_stall_other_outlets_streams(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    number, size = _latest(stack)
    while number < CUTS_BEFORE and time.monotonic() < deadline:
        time.sleep(0.5)
        number, size = _latest(stack)
    # What one stream from the first cut owes: well past Envoy's 1 MiB buffer.
    assert number * size > 2 * 1024 * 1024, (number, size)
    release = threading.Event()
    held: list[str] = []

    def slow_reader() -> None:
        with _channel(stack, "outlet-01") as channel:
            stub = publication_pb2_grpc.PublicationServiceStub(channel)
            streams = [
                stub.WatchCuts(publication_pb2.WatchCutsRequest(), timeout=HOLD_S * 3)
                for _ in range(SLOW_STREAMS)
            ]
            for stream in streams:
                next(stream)  # the first cut, then no more reading
                held.append("held")
            release.wait(HOLD_S * 2)
            for stream in streams:
                stream.cancel()

    thread = threading.Thread(target=slow_reader, daemon=True)
    thread.start()
    try:
        while len(held) < SLOW_STREAMS and thread.is_alive():
            time.sleep(0.1)
        assert held == ["held"] * SLOW_STREAMS
        waits: list[float] = []
        with _channel(stack, "outlet-02") as channel:
            stub = publication_pb2_grpc.PublicationServiceStub(channel)
            end = time.monotonic() + HOLD_S
            while time.monotonic() < end:
                started = time.monotonic()
                watch = stub.WatchCuts(
                    publication_pb2.WatchCutsRequest(), timeout=FIRST_CUT_TIMEOUT_S
                )
                try:
                    next(watch)
                    waits.append(time.monotonic() - started)
                except grpc.RpcError as e:
                    waited = time.monotonic() - started
                    pytest.fail(
                        "a new WatchCuts got no first cut while another outlet read slowly: "
                        f"{e.code().name} after {waited:.1f} s"
                    )
                finally:
                    watch.cancel()
                time.sleep(0.5)
    finally:
        release.set()
        thread.join(timeout=30)
    assert len(waits) >= 8
    assert max(waits) < FIRST_CUT_TIMEOUT_S
