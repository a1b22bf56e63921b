"""Per-identity stream bounds in a real ingest service (grpc.aio on a loopback socket,
SQLite in a tmp dir), with small limits set as a deployment sets them: through the
environment the service process reads (``VERITALLY_STREAM_LIMITS``).

The identity is the one Envoy forwards in ``x-forwarded-client-cert``; here the test
sets that header itself, as Envoy would (tests/e2e/test_isolation.py does it through a
real Envoy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from tests.write_path_support import make_acta, small_election
from veritally.ingest.app import IngestService, start_ingest
from veritally.rpc import aio_channel
from veritally.rpc.streams import STREAM_LIMITS_ENV, StreamLimits
from veritally_client._gen.veritally.v1 import ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
CASILLA = "01-01-0001-B1"
LIMITS = StreamLimits(max_per_identity=2, request_idle_s=0.5, max_duration_s=1.5)
TD = "spiffe://veritally.example"
WAIT_S = 5.0


def _as(identity: str) -> tuple[tuple[str, str]]:
    return (("x-forwarded-client-cert", f"By={TD}/service/envoy;URI={TD}/{identity}"),)


@pytest.fixture
async def ingest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub]]:
    monkeypatch.setenv(STREAM_LIMITS_ENV, LIMITS.to_env())
    service = await start_ingest(
        election=ELECTION,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=False,
    )
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        yield service, ingest_pb2_grpc.IngestServiceStub(channel)
    await service.stop()


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` every 10 ms for at most WAIT_S (the server counts streams on
    its own loop, a moment after the client opened them)."""
    for _ in range(int(WAIT_S / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)


def _acta_request(casilla: str = CASILLA) -> ingest_pb2.SubmitActasRequest:
    return ingest_pb2.SubmitActasRequest(actas=[make_acta(ELECTION, casilla, "PRES", [1, 2, 3])])


def test_stream_limits_round_trip_through_the_environment() -> None:
    assert StreamLimits.from_env({STREAM_LIMITS_ENV: LIMITS.to_env()}) == LIMITS
    assert StreamLimits.from_env({}) == StreamLimits()
    with pytest.raises(ValueError, match="NAME=VALUE"):
        StreamLimits.from_env({STREAM_LIMITS_ENV: "streams=3"})


async def test_silent_submit_streams_of_one_centre_do_not_block_another_centre_or_the_follower(
    ingest: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = ingest
    open_count = service.server.streams.open
    # cc-01 holds its cap of silent SubmitActas streams.
    held = [stub.SubmitActas(metadata=_as("capture/cc-01")) for _ in range(LIMITS.max_per_identity)]
    await _until(lambda: open_count[f"{TD}/capture/cc-01"] == LIMITS.max_per_identity)
    assert open_count[f"{TD}/capture/cc-01"] == LIMITS.max_per_identity
    # Its next stream is refused at once, with RESOURCE_EXHAUSTED.
    extra = stub.SubmitActas(metadata=_as("capture/cc-01"))
    await extra.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await extra
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at most 2" in (refused.value.details() or "")
    # Another centre submits, and aggregation's follow stream reads the log.
    other = stub.SubmitActas(metadata=_as("capture/cc-02"))
    await other.write(_acta_request())
    await other.done_writing()
    response = await other
    assert len(response.outcomes) == 1
    follow = stub.StreamRecords(
        ingest_pb2.StreamRecordsRequest(from_sequence=0, follow=False),
        metadata=_as("service/aggregation"),
    )
    pages = [page async for page in follow]
    assert sum(len(p.leaves) for p in pages) == 1
    for call in held:
        call.cancel()


async def test_silent_submit_stream_is_ended_after_the_idle_bound_and_its_slot_freed(
    ingest: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = ingest
    call = stub.SubmitActas(metadata=_as("capture/cc-01"))
    await call.write(_acta_request())  # one batch, then silence
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await call
    assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "no message for 0.5 s" in (ended.value.details() or "")
    assert time.monotonic() - started < WAIT_S
    await _until(lambda: not service.server.streams.open)
    assert not service.server.streams.open
    # The batch answered before the silence was committed.
    assert service.engine.log_size == 1


async def test_follow_stream_ends_normally_at_its_lifetime_so_the_follower_resumes(
    ingest: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = ingest
    started = time.monotonic()
    follow = stub.StreamRecords(
        ingest_pb2.StreamRecordsRequest(from_sequence=0, follow=True),
        metadata=_as("service/aggregation"),
    )
    pages = [page async for page in follow]  # ends on its own, without an error
    elapsed = time.monotonic() - started
    assert await follow.code() == grpc.StatusCode.OK
    assert LIMITS.max_duration_s - 0.1 <= elapsed < WAIT_S
    assert all(not p.leaves for p in pages)
    assert not service.server.streams.open


async def test_busy_submit_stream_is_ended_at_its_lifetime(
    ingest: tuple[IngestService, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, stub = ingest
    call = stub.SubmitActas(metadata=_as("capture/cc-01"))
    started = time.monotonic()
    # Never idle for long (a message every 0.2 s), but open longer than allowed.
    while not call.done() and time.monotonic() - started < WAIT_S:
        with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
            await call.write(_acta_request())
        await asyncio.sleep(0.2)
    assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"stream open for {LIMITS.max_duration_s:g} s" in (await call.details() or "")
    assert LIMITS.max_duration_s - 0.1 <= time.monotonic() - started < WAIT_S
    await _until(lambda: not service.server.streams.open)
    assert not service.server.streams.open
    assert service.engine.log_size == 1  # the same acta each time: one record
