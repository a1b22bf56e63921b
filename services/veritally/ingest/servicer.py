"""The gRPC adapter of ingest: ``veritally.v1.IngestService`` over an ``IngestEngine``.

Thin: each call checks the request's bounds, hands it to the engine, and turns the
engine's outcome into a response or an error status (``veritally.rpc.status``); the
decisions are the engine's (``veritally.ingest.engine``). The service around it is
wired in ``veritally.ingest.app``.

Operator-only calls (CorrectActa, ListCrossChecks, ResolveCrossCheck, CloseNight) are
restricted by Envoy's RBAC at the edge. The caller's identity comes from
``x-forwarded-client-cert``, which Envoy sets from the certificate it verified
(SANITIZE_SET) and which no one else can send, since the service admits Envoy alone as
its peer; the engine takes the
capture centre and the operator from it (``veritally.ingest.operators``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from veritally import bounds
from veritally.ingest.engine import CommitError, IngestEngine
from veritally.metrics.families import IngestMetrics
from veritally.reject import RejectCode, Rejection
from veritally.rpc.peer import forwarded_identity
from veritally.rpc.status import bad_request, grpc_code
from veritally_client.protocol.pb import ingest_pb2, ingest_pb2_grpc

# Seconds a StreamRecords follow stream may go without a message: past this a keep-alive
# (no leaves, the log size) is sent. Well under Envoy's stream idle timeout (300 s), and
# short enough that aggregation's figure of ingest's log size, signed into every cut, is
# at most a few seconds old while aggregation cannot read past a record.
STREAM_KEEPALIVE_S = 5.0


def rejection_status(outcome: ingest_pb2.ActaOutcome) -> grpc.Status:
    """The error status of a rejected outcome, with a ``google.rpc.BadRequest`` detail
    naming the field at fault (when there is one). Outcomes never quote unbounded input
    (``bounds.clip``), so neither does the status."""
    message = f"{outcome.acta_id}: {outcome.message}" if outcome.acta_id else outcome.message
    return bad_request(
        grpc_code(RejectCode[outcome.code]),
        message,
        field=outcome.field,
        description=outcome.message,
    )


def _bound_violation(
    request: Message,
    *,
    acta_id: str | None = None,
    page_token: str | None = None,
    reason: str | None = None,
) -> ingest_pb2.ActaOutcome | None:
    """The REJECTED outcome (INVALID_ARGUMENT naming the field) of a request that carries
    unknown fields or whose acta id, page token (an acta id, or empty) or reason breaks
    its bounds; None if the request is within them."""
    problems = [
        bounds.request_problem(request),
        None if acta_id is None else _named("acta_id", bounds.acta_id_problem(acta_id)),
        None if not page_token else _named("page_token", bounds.acta_id_problem(page_token)),
        None if reason is None else _named("reason", bounds.reason_problem(reason)),
    ]
    for problem in problems:
        if problem is not None:
            return ingest_pb2.ActaOutcome(
                status=ingest_pb2.OUTCOME_STATUS_REJECTED,
                code=RejectCode.INVALID_ARGUMENT.name,
                field=problem[0],
                message=problem[1],
            )
    return None


def _named(field_name: str, problem: str | None) -> tuple[str, str] | None:
    return None if problem is None else (field_name, problem)


async def _within_bounds(
    context: grpc.aio.ServicerContext[Any, object],
    request: Message,
    **fields: str,
) -> None:
    """Abort with INVALID_ARGUMENT naming the field when ``request`` breaks its bounds
    (:func:`_bound_violation`; ``fields`` are its keyword arguments)."""
    violation = _bound_violation(request, **fields)
    if violation is not None:
        await context.abort_with_status(rejection_status(violation))


async def _accepted(
    context: grpc.aio.ServicerContext[Any, object], change: Awaitable[ingest_pb2.ActaOutcome]
) -> ingest_pb2.ActaOutcome:
    """The outcome of one change of the log, or the call aborted.

    A failed commit is UNAVAILABLE (nothing was written, retrying is safe); a rejection is
    the error status naming the field (:func:`rejection_status`).
    """
    try:
        outcome = await change
    except CommitError as e:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"not committed, retry: {e}")
    if outcome.status == ingest_pb2.OUTCOME_STATUS_REJECTED:
        await context.abort_with_status(rejection_status(outcome))
    return outcome


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Answers IngestService calls from an ``IngestEngine``."""

    def __init__(self, engine: IngestEngine, metrics: IngestMetrics | None = None) -> None:
        """Serve ``engine``; count each answered batch in ``metrics``."""
        self.engine = engine
        self.metrics = metrics if metrics is not None else IngestMetrics()

    async def SubmitActa(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.SubmitActaRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.SubmitActaRequest, object],
    ) -> ingest_pb2.SubmitActaResponse:
        """Submit one acta; a rejection is an error status naming the field."""
        await _within_bounds(context, request)
        try:
            [outcome] = await self.engine.submit(
                [request.acta], submitter=forwarded_identity(context)
            )
        except CommitError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not committed, retry: {e}")
        self.metrics.count(1, [outcome])
        if outcome.status == ingest_pb2.OUTCOME_STATUS_REJECTED:
            await context.abort_with_status(rejection_status(outcome))
        return ingest_pb2.SubmitActaResponse(outcome=outcome)

    async def SubmitActas(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request_iterator: AsyncIterator[ingest_pb2.SubmitActasRequest],
        context: grpc.aio.ServicerContext[ingest_pb2.SubmitActasRequest, object],
    ) -> ingest_pb2.SubmitActasResponse:
        """Submit batches; each message is committed as it arrives, outcomes at the end."""
        submitter = forwarded_identity(context)
        response = ingest_pb2.SubmitActasResponse()
        async for request in request_iterator:
            await _within_bounds(context, request)
            if len(request.actas) > bounds.MAX_ACTAS_PER_MESSAGE:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"actas: {len(request.actas)} actas in one message, at most "
                    f"{bounds.MAX_ACTAS_PER_MESSAGE}",
                )
            if len(response.outcomes) + len(request.actas) > bounds.MAX_ACTAS_PER_STREAM:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"more than {bounds.MAX_ACTAS_PER_STREAM} actas in one stream; "
                    f"the first {len(response.outcomes)} were processed, open a new stream",
                )
            try:
                outcomes = await self.engine.submit(request.actas, submitter=submitter)
            except CommitError as e:
                # Earlier messages of this stream are committed; resubmitting them is safe
                # (they come back as DUPLICATE).
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"not committed, retry: {e}")
            self.metrics.count(len(request.actas), outcomes)
            response.outcomes.extend(outcomes)
        return response

    async def CorrectActa(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.CorrectActaRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CorrectActaRequest, object],
    ) -> ingest_pb2.CorrectActaResponse:
        """Propose or approve a corrected revision (operator role, enforced by the mesh;
        two distinct operators, enforced by the engine)."""
        await _within_bounds(context, request, reason=request.reason)
        outcome = await _accepted(
            context,
            self.engine.correct(
                request.acta,
                supersedes_revision=request.supersedes_revision,
                reason=request.reason,
                submitter=forwarded_identity(context),
            ),
        )
        return ingest_pb2.CorrectActaResponse(outcome=outcome)

    async def ListCrossChecks(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.ListCrossChecksRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.ListCrossChecksRequest, object],
    ) -> ingest_pb2.ListCrossChecksResponse:
        """A page of the cross-check queue (operator role)."""
        await _within_bounds(context, request, page_token=request.page_token)
        checks, token = self.engine.cross_checks(
            page_size=request.page_size, page_token=request.page_token
        )
        return ingest_pb2.ListCrossChecksResponse(cross_checks=checks, next_page_token=token)

    async def ResolveCrossCheck(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.ResolveCrossCheckRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.ResolveCrossCheckRequest, object],
    ) -> ingest_pb2.ResolveCrossCheckResponse:
        """Accept one capture of a cross-check (operator role)."""
        await _within_bounds(context, request, acta_id=request.acta_id, reason=request.reason)
        outcome = await _accepted(
            context,
            self.engine.resolve(
                request.acta_id,
                capture_index=request.capture_index,
                reason=request.reason,
                submitter=forwarded_identity(context),
            ),
        )
        return ingest_pb2.ResolveCrossCheckResponse(outcome=outcome)

    async def StreamRecords(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.StreamRecordsRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.StreamRecordsRequest, object],
    ) -> AsyncIterator[ingest_pb2.StreamRecordsResponse]:
        """Stream the log from ``from_sequence``; with ``follow``, keep streaming.

        Every message carries the committed log size. A follow stream opens with a
        keep-alive (no leaves), so that a follower learns how far the log goes even when
        the page after its cursor cannot reach it, and sends one every
        ``STREAM_KEEPALIVE_S`` while nothing is committed.
        """
        engine = self.engine

        def closed_at() -> int | None:
            night = engine.night_closed
            return None if night is None else night.closed_at_records

        if request.follow:
            yield ingest_pb2.StreamRecordsResponse(
                first_sequence=request.from_sequence,
                log_size=engine.log_size,
                closed_at_records=closed_at(),
            )
        async for first, leaves in engine.records(
            request.from_sequence,
            follow=request.follow,
            keepalive=STREAM_KEEPALIVE_S if request.follow else None,
        ):
            # A page may hold a record committed an instant before the size moves on.
            size = max(engine.log_size, first + len(leaves))
            yield ingest_pb2.StreamRecordsResponse(
                first_sequence=first, leaves=leaves, log_size=size, closed_at_records=closed_at()
            )

    async def RecordMissingActa(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.RecordMissingActaRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.RecordMissingActaRequest, object],
    ) -> ingest_pb2.RecordMissingActaResponse:
        """Log that an expected acta will not arrive (capture role, its casillas)."""
        await _within_bounds(context, request)
        outcome = await _accepted(
            context,
            self.engine.record_missing(
                request.casilla_id,
                request.contest_id,
                request.reason,
                submitter=forwarded_identity(context),
            ),
        )
        return ingest_pb2.RecordMissingActaResponse(outcome=outcome)

    async def CloseNight(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: ingest_pb2.CloseNightRequest,
        context: grpc.aio.ServicerContext[ingest_pb2.CloseNightRequest, object],
    ) -> ingest_pb2.CloseNightResponse:
        """Close the night (operator role); the first close is answered every time."""
        await _within_bounds(context, request)
        try:
            closed = await self.engine.close_night(submitter=forwarded_identity(context))
        except CommitError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"not closed, retry: {e}")
        if isinstance(closed, Rejection):
            await context.abort_with_status(
                bad_request(grpc_code(closed.code), closed.message, field=closed.field)
            )
        close_time = Timestamp()
        close_time.FromDatetime(dt.datetime.fromisoformat(closed.close_time))
        return ingest_pb2.CloseNightResponse(
            closed_at_records=closed.closed_at_records,
            close_time=close_time,
            closed_by=closed.closed_by,
        )
