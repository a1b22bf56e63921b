"""The capture client's retry logic (``veritally.capture.submit_stream`` and
``record_missing``) with a fake SubmitActas or RecordMissingActa call, a fake clock and a
recorded sleep: which statuses are retried, the backoff, the jitter, the retry budget and
the per-call deadline, and which refusals of a missing acta's record are its outcome.
No sockets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from veritally.bounds import MAX_ACTAS_PER_MESSAGE, MAX_ACTAS_PER_STREAM
from veritally.capture import (
    Batcher,
    CaptureBudgetExhaustedError,
    CaptureConfig,
    CaptureCounters,
    CaptureError,
    CaptureRefusedError,
    record_missing,
    submit_stream,
)
from veritally.rpc.status import bad_request
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2

# No jitter unless a test is about it: the waits are then exactly the backoff.
EXACT = CaptureConfig(jitter=0.0, backoff_initial_s=0.1, backoff_max_s=2.0, retry_budget_s=30.0)


def _error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _messages(n: int = 2) -> list[ingest_pb2.SubmitActasRequest]:
    return [
        ingest_pb2.SubmitActasRequest(actas=[acta_pb2.Acta(casilla_id=f"a{i}")]) for i in range(n)
    ]


class FakeIngest:
    """SubmitActas that fails with ``failures`` (in order), then answers each acta
    ACCEPTED; records what every attempt sent and with which deadline."""

    def __init__(self, failures: Sequence[grpc.StatusCode]) -> None:
        self.failures = list(failures)
        self.attempts: list[tuple[list[str], float, Any]] = []

    async def __call__(
        self,
        request_iterator: Iterator[ingest_pb2.SubmitActasRequest],
        *,
        timeout: float,  # noqa: ASYNC109 - the gRPC call's keyword, faked
        metadata: Any = None,
    ) -> ingest_pb2.SubmitActasResponse:
        ids = [a.casilla_id for m in request_iterator for a in m.actas]
        self.attempts.append((ids, timeout, metadata))
        if self.failures:
            raise _error(self.failures.pop(0), "local_rate_limited")
        return ingest_pb2.SubmitActasResponse(
            outcomes=[
                ingest_pb2.ActaOutcome(acta_id=i, status=ingest_pb2.OUTCOME_STATUS_ACCEPTED)
                for i in ids
            ]
        )


class FakeTime:
    """A monotonic clock that only ``sleep`` advances."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def _run(
    ingest: FakeIngest,
    time: FakeTime,
    *,
    config: CaptureConfig = EXACT,
    counters: CaptureCounters | None = None,
    uniform: float = 0.0,
) -> list[ingest_pb2.ActaOutcome]:
    return await submit_stream(
        ingest,
        _messages(),
        config=config,
        counters=counters if counters is not None else CaptureCounters(),
        metadata=(("x-test", "1"),),
        sleep=time.sleep,
        clock=time.clock,
        uniform=lambda: uniform,
    )


async def test_envoy_rate_limit_is_ridden_out_with_exponential_backoff() -> None:
    ingest = FakeIngest([grpc.StatusCode.RESOURCE_EXHAUSTED] * 3)
    time, counters = FakeTime(), CaptureCounters()
    outcomes = await _run(ingest, time, counters=counters)
    assert [o.acta_id for o in outcomes] == ["a0", "a1"]
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert counters.retries == {"RESOURCE_EXHAUSTED": 3}
    assert counters.streams == 4
    # Every attempt resends the whole stream, with the deadline and the metadata.
    assert ingest.attempts == [(["a0", "a1"], 60.0, (("x-test", "1"),))] * 4


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    ],
)
async def test_transient_statuses_are_retried(code: grpc.StatusCode) -> None:
    counters = CaptureCounters()
    await _run(FakeIngest([code]), FakeTime(), counters=counters)
    assert counters.retries == {code.name: 1}


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
    ],
)
async def test_a_refused_stream_is_not_sent_again(code: grpc.StatusCode) -> None:
    ingest, time = FakeIngest([code]), FakeTime()
    with pytest.raises(CaptureRefusedError) as raised:
        await _run(ingest, time)
    assert raised.value.code == code
    assert raised.value.attempts == 1
    assert isinstance(raised.value.__cause__, grpc.aio.AioRpcError)
    assert len(ingest.attempts) == 1
    assert time.sleeps == []


async def test_backoff_is_capped_at_its_maximum() -> None:
    time = FakeTime()
    await _run(FakeIngest([grpc.StatusCode.UNAVAILABLE] * 8), time)
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0])


async def test_jitter_shortens_each_wait_by_at_most_its_fraction() -> None:
    jittery = CaptureConfig(jitter=0.5, backoff_initial_s=0.1, backoff_max_s=2.0)
    shortest, longest = FakeTime(), FakeTime()
    failures = [grpc.StatusCode.RESOURCE_EXHAUSTED] * 6
    await _run(FakeIngest(failures), shortest, config=jittery, uniform=0.999999)
    await _run(FakeIngest(failures), longest, config=jittery, uniform=0.0)
    assert longest.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    for short, long in zip(shortest.sleeps, longest.sleeps, strict=True):
        assert long / 2 <= short < long


async def test_a_stream_refused_beyond_the_retry_budget_gives_up() -> None:
    config = CaptureConfig(jitter=0.0, retry_budget_s=10.0)
    ingest, time = FakeIngest([grpc.StatusCode.UNAVAILABLE] * 1000), FakeTime()
    started = time.now
    with pytest.raises(CaptureBudgetExhaustedError) as raised:
        await _run(ingest, time, config=config)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.attempts == len(ingest.attempts) > 1
    assert isinstance(raised.value, CaptureError)
    # It waited within the budget and stopped before a wait would have passed it.
    assert time.now - started <= 10.0
    assert time.now - started + 2.0 > 10.0


async def test_a_zero_budget_sends_once() -> None:
    ingest = FakeIngest([grpc.StatusCode.UNAVAILABLE])
    with pytest.raises(CaptureBudgetExhaustedError):
        await _run(ingest, FakeTime(), config=CaptureConfig(retry_budget_s=0.0))
    assert len(ingest.attempts) == 1


def test_config_keeps_streams_within_ingest_bounds() -> None:
    with pytest.raises(ValueError, match="batch"):
        CaptureConfig(batch=MAX_ACTAS_PER_MESSAGE + 1)
    with pytest.raises(ValueError, match="messages_per_stream"):
        CaptureConfig(batch=500, messages_per_stream=MAX_ACTAS_PER_STREAM // 500 + 1)
    with pytest.raises(ValueError, match="jitter"):
        CaptureConfig(jitter=1.5)
    with pytest.raises(ValueError, match="backoff"):
        CaptureConfig(backoff_initial_s=3.0, backoff_max_s=2.0)
    assert CaptureConfig(batch=500, messages_per_stream=MAX_ACTAS_PER_STREAM // 500)


def test_batcher_groups_each_centre_into_full_messages() -> None:
    batcher = Batcher(2)
    sent = []
    for i, centre in enumerate(["cc-01", "cc-02", "cc-01", "cc-01", "cc-02", "cc-01"]):
        if (message := batcher.add(centre, acta_pb2.Acta(casilla_id=str(i)))) is not None:
            sent.append((centre, [a.casilla_id for a in message.actas]))
    assert sent == [("cc-01", ["0", "2"]), ("cc-02", ["1", "4"]), ("cc-01", ["3", "5"])]
    assert batcher.flush() == []
    actas = [acta_pb2.Acta(casilla_id=str(i)) for i in range(5)]
    assert [len(m.actas) for _, m in Batcher.all(actas, 2)] == [2, 2, 1]


# -- a missing acta's record (RecordMissingActa) ----------------------------------------

MISSING = ingest_pb2.RecordMissingActaRequest(
    casilla_id="01-0001-B1",
    contest_id="PRES",
    reason=acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
)


def _ingest_refusal(code: grpc.StatusCode, field: str) -> grpc.aio.AioRpcError:
    """The error a client gets when ingest refuses a call (``rejection_status``)."""
    status = bad_request(code, f"refused on {field or 'the call'}", field=field, description="x")
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


class FakeRecord:
    """RecordMissingActa that fails with ``failures`` (in order), then answers ACCEPTED,
    not counted, with the request's reason; records every attempt."""

    def __init__(self, failures: Sequence[grpc.aio.AioRpcError]) -> None:
        self.failures = list(failures)
        self.attempts: list[tuple[ingest_pb2.RecordMissingActaRequest, float, Any]] = []

    async def __call__(
        self,
        request: ingest_pb2.RecordMissingActaRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the gRPC call's keyword, faked
        metadata: Any = None,
    ) -> ingest_pb2.RecordMissingActaResponse:
        self.attempts.append((request, timeout, metadata))
        if self.failures:
            raise self.failures.pop(0)
        return ingest_pb2.RecordMissingActaResponse(
            outcome=ingest_pb2.ActaOutcome(
                acta_id=f"{request.casilla_id}/{request.contest_id}",
                status=ingest_pb2.OUTCOME_STATUS_ACCEPTED,
                counted=False,
                not_counted_reason=request.reason,
            )
        )


async def _record(
    call: FakeRecord, time: FakeTime, counters: CaptureCounters | None = None
) -> ingest_pb2.ActaOutcome:
    return await record_missing(
        call,
        MISSING,
        config=EXACT,
        counters=counters if counters is not None else CaptureCounters(),
        metadata=(("x-test", "1"),),
        sleep=time.sleep,
        clock=time.clock,
        uniform=lambda: 0.0,
    )


async def test_missing_acta_record_rides_out_the_rate_limit_like_a_stream() -> None:
    call = FakeRecord([_error(grpc.StatusCode.RESOURCE_EXHAUSTED)] * 2)
    time, counters = FakeTime(), CaptureCounters()
    outcome = await _record(call, time, counters)
    assert outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
    assert outcome.not_counted_reason == MISSING.reason
    assert time.sleeps == pytest.approx([0.1, 0.2])
    assert (counters.records, counters.streams) == (3, 0)
    assert counters.retries == {"RESOURCE_EXHAUSTED": 2}
    assert call.attempts == [(MISSING, 60.0, (("x-test", "1"),))] * 3


@pytest.mark.parametrize(
    ("code", "field"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "casilla_id"),  # another centre's casilla
        (grpc.StatusCode.ALREADY_EXISTS, ""),  # the acta is logged
        (grpc.StatusCode.FAILED_PRECONDITION, ""),  # the night is closed
    ],
)
async def test_missing_acta_record_refused_by_ingest_is_its_rejected_outcome(
    code: grpc.StatusCode, field: str
) -> None:
    call, time = FakeRecord([_ingest_refusal(code, field)]), FakeTime()
    outcome = await _record(call, time)
    assert outcome.status == ingest_pb2.OUTCOME_STATUS_REJECTED
    assert (outcome.acta_id, outcome.code, outcome.field) == ("01-0001-B1/PRES", code.name, field)
    assert len(call.attempts) == 1
    assert time.sleeps == []


async def test_missing_acta_record_refused_by_the_edge_stops_the_import() -> None:
    # Envoy's RBAC answers PERMISSION_DENIED with no google.rpc.Status: not ingest's verdict
    # on this record, and every other record would meet the same.
    call = FakeRecord([_error(grpc.StatusCode.PERMISSION_DENIED, "RBAC: access denied")])
    with pytest.raises(CaptureRefusedError) as raised:
        await _record(call, FakeTime())
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert len(call.attempts) == 1


async def test_missing_acta_record_beyond_the_retry_budget_gives_up() -> None:
    call = FakeRecord([_error(grpc.StatusCode.UNAVAILABLE)] * 1000)
    with pytest.raises(CaptureBudgetExhaustedError):
        await _record(call, FakeTime())
