"""The capture client: submitting actas to ingest through the edge, the one way
``veritally import``, the demo, the soak and the benchmarks all do it.

What it does, in order:

1. **Batching.** :class:`Batcher` groups actas per capture centre into
   ``SubmitActasRequest`` messages of :attr:`CaptureConfig.batch` actas (ingest commits
   one SQLite transaction per message, so a few hundred amortise its fsync).
2. **Channels.** :class:`CaptureClient` opens one long-lived channel (one HTTP/2
   connection) per operator identity and reuses it for every stream. An operator's
   identity is the certificate its channel presents
   (``spiffe://<td>/capture/<centre>/<operator>`` at Envoy), so each capture travels on
   the channel of the operator who made it.
3. **Streams.** A ``SubmitActas`` stream carries up to
   :attr:`CaptureConfig.messages_per_stream` messages and is then closed to read its
   outcomes: ingest answers a stream once, at its end (``IngestServicer.SubmitActas``),
   so a stream that stayed open for the whole import would report nothing until the
   end, and a failure on it would leave the client not knowing which messages were
   committed. The default is one message per stream: outcomes (and progress) arrive per
   batch and a retry resends one batch. Longer streams buy nothing measurable: against
   ``veritally serve ingest`` on loopback (58,931 actas in messages of 500, two streams,
   two runs each) one message per stream gave 18,600-20,500 actas/s and twenty gave
   17,100-20,800, with the first answer after 0.05-0.07 s against 0.4-0.6 s; and through
   Envoy a stream is one token of the centre's call budget, so 500 actas a token keep the
   default budget (50 calls/s) far above what ingest commits. ``streams`` streams per
   centre are in flight.
4. **Double capture.** A centre given two operators has every stream sent by the
   first, then by the second: ingest logs an acta when the second capture agrees.
5. **Missing actas.** A ``RecordMissingActaRequest`` among the messages (an expected
   acta that never arrived, PREP's "sin acta") is sent as one ``RecordMissingActa`` call
   on the centre's first operator's channel: one record suffices, there are no figures
   for a second operator to agree with. A refusal ingest answers (a status with its
   ``google.rpc.Status`` details: the casilla of another centre, an acta already logged)
   is that record's REJECTED outcome, as SubmitActas answers a refused acta in its
   outcomes; it does not stop the others.
6. **Retries.** A stream or a call that fails with a status of :data:`RETRYABLE` (Envoy's
   rate limit answers RESOURCE_EXHAUSTED, a restarting service UNAVAILABLE) is sent again
   whole, after an exponential backoff with jitter, until its retry budget is spent.
   Resending is safe: an acta ingest already committed comes back DUPLICATE (with its
   sequence), a repeated capture by the same operator changes nothing, and a missing
   acta recorded again is DUPLICATE. Every other status (PERMISSION_DENIED,
   INVALID_ARGUMENT...) is final.
7. **Errors.** Failures raise subclasses of :class:`CaptureError`; the client prints
   nothing. Counts of streams, calls and retries (per status) are in
   :class:`CaptureCounters`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeAlias, TypeVar

import grpc

from veritally.bounds import MAX_ACTAS_PER_MESSAGE, MAX_ACTAS_PER_STREAM
from veritally.errors import ServiceError
from veritally.rpc import TlsFiles, aio_channel
from veritally.rpc.status import service_refusal
from veritally_client.protocol.pb import acta_pb2, ingest_pb2, ingest_pb2_grpc

__all__ = [
    "RETRYABLE",
    "Answer",
    "Batcher",
    "Capture",
    "CaptureBudgetExhaustedError",
    "CaptureClient",
    "CaptureConfig",
    "CaptureCounters",
    "CaptureError",
    "CaptureRefusedError",
    "Operator",
    "record_missing",
    "submit_stream",
]

ActaPb = acta_pb2.Acta
ActaOutcomePb = ingest_pb2.ActaOutcome
SubmitActasRequestPb = ingest_pb2.SubmitActasRequest
SubmitActasResponsePb = ingest_pb2.SubmitActasResponse
RecordMissingActaRequestPb = ingest_pb2.RecordMissingActaRequest
RecordMissingActaResponsePb = ingest_pb2.RecordMissingActaResponse
# What the client sends for a centre: a SubmitActas message, or a missing acta's record.
Capture: TypeAlias = SubmitActasRequestPb | RecordMissingActaRequestPb
# Longest piece of a refusal's message kept in an outcome or an error, in characters.
DETAILS_CHARS: Final = 200

# Statuses after which a stream is sent again. All are transient: Envoy's rate limit
# (RESOURCE_EXHAUSTED, also ingest's streams-per-identity bound), a service restarting or
# the edge draining (UNAVAILABLE, or CANCELLED when a stream is reset), a loaded machine
# (DEADLINE_EXCEEDED), a commit that lost a race (ABORTED). Ingest's own permanent
# RESOURCE_EXHAUSTED (too many actas in one stream) is ruled out by CaptureConfig.
RETRYABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """The capture client's limits.

    Raises:
        ValueError: a limit out of range (at construction).
    """

    # Actas per SubmitActasRequest message: a few hundred amortise ingest's commit; ingest
    # takes at most MAX_ACTAS_PER_MESSAGE.
    batch: int = 500
    # Messages per SubmitActas stream before it is closed for its outcomes (see the module
    # docstring, 3.); at most MAX_ACTAS_PER_STREAM actas in all.
    messages_per_stream: int = 1
    # Streams in flight per capture centre: one being committed while the next is on the
    # wire.
    streams: int = 2
    # Deadline of one stream (seconds): a 500-acta message commits in well under a second;
    # the margin covers a loaded 2-core machine.
    call_timeout_s: float = 60.0
    # How long one stream may keep failing with retryable statuses before the client gives
    # up (seconds, from its first attempt): a service restart (health check out and in,
    # ~5 s) many times over, and minutes of Envoy's rate limit.
    retry_budget_s: float = 120.0
    # First wait after a retryable failure (seconds); doubled after each further one.
    backoff_initial_s: float = 0.1
    # Longest wait between two attempts (seconds): a centre's capture bucket refills a
    # few tokens in that time (docs/mesh.md).
    backoff_max_s: float = 2.0
    # Fraction of each wait drawn at random (0: none, 1: anywhere in [0, wait]), so that
    # the streams of many centres refused at once do not come back at once.
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= MAX_ACTAS_PER_MESSAGE:
            raise ValueError(f"batch must be in [1, {MAX_ACTAS_PER_MESSAGE}], got {self.batch}")
        if self.messages_per_stream < 1 or (
            self.batch * self.messages_per_stream > MAX_ACTAS_PER_STREAM
        ):
            raise ValueError(
                f"messages_per_stream must be at least 1, with at most {MAX_ACTAS_PER_STREAM}"
                f" actas per stream; got {self.messages_per_stream} of {self.batch}"
            )
        if self.streams < 1:
            raise ValueError(f"streams must be at least 1, got {self.streams}")
        if self.call_timeout_s <= 0 or self.retry_budget_s < 0:
            raise ValueError("call_timeout_s must be positive and retry_budget_s not negative")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter}")


# ------------------------------------------------------------------------------------
# outcomes and errors


class CaptureError(ServiceError):
    """A stream of captures could not be submitted.

    Attributes:
        code: the last gRPC status received.
        details: its details, as the server (or Envoy) sent them.
        attempts: how many times the stream was sent.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode, details: str, attempts: int):
        super().__init__(message)
        self.code = code
        self.details = details
        self.attempts = attempts


class CaptureRefusedError(CaptureError):
    """The stream failed with a status that is not retryable (PERMISSION_DENIED,
    INVALID_ARGUMENT...): sending it again would fail the same way."""


class CaptureBudgetExhaustedError(CaptureError):
    """The stream kept failing with retryable statuses for longer than the retry budget."""


@dataclass
class CaptureCounters:
    """What the client did, updated as it goes (read it from another task for progress).

    Attributes:
        streams: SubmitActas streams sent, retries included.
        records: RecordMissingActa calls sent, retries included.
        retries: streams and calls sent again, per status name of the failure that
            caused it.
    """

    streams: int = 0
    records: int = 0
    retries: Counter[str] = field(default_factory=Counter)

    @property
    def total_retries(self) -> int:
        """Streams and calls sent again, whatever the status."""
        return sum(self.retries.values())


@dataclass(frozen=True)
class Answer:
    """Ingest's answer to one stream.

    Attributes:
        centre: the key of the centre that sent it (as given to :class:`CaptureClient`).
        operator: index of the operator in that centre's list (0 first, 1 second capture).
        outcomes: one per acta of the stream, in order; for a missing acta's record, its
            one outcome.
        messages: the stream's messages (none for a missing acta's record).
        missing: the missing acta's record answered, or None for a stream.
    """

    centre: str
    operator: int
    outcomes: Sequence[ActaOutcomePb]
    messages: Sequence[SubmitActasRequestPb]
    missing: RecordMissingActaRequestPb | None = None


# ------------------------------------------------------------------------------------
# one stream, with retries (pure: the call, the clock, the sleep and the randomness are
# parameters, so that the logic is tested without sockets)

SubmitCall = Callable[..., Awaitable[SubmitActasResponsePb]]
RecordMissingCall = Callable[..., Awaitable[RecordMissingActaResponsePb]]
_R = TypeVar("_R")


async def _retrying(
    send: Callable[[], Awaitable[_R]],
    *,
    what: str,
    config: CaptureConfig,
    counters: CaptureCounters,
    sleep: Callable[[float], Awaitable[Any]],
    clock: Callable[[], float],
    uniform: Callable[[], float],
) -> _R:
    """``send()`` again after each failure with a status of :data:`RETRYABLE`, with
    exponential backoff and jitter, within ``config.retry_budget_s``.

    Raises:
        CaptureRefusedError: a status not in :data:`RETRYABLE` (the gRPC error is its
            cause).
        CaptureBudgetExhaustedError: retryable failures beyond the budget.
    """
    give_up = clock() + config.retry_budget_s
    backoff = config.backoff_initial_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return await send()
        except grpc.aio.AioRpcError as e:
            code, details = e.code(), e.details() or ""
            if code not in RETRYABLE:
                raise CaptureRefusedError(
                    f"ingest refused the {what}: {code.name}: {details[:DETAILS_CHARS]}",
                    code=code,
                    details=details,
                    attempts=attempts,
                ) from e
            # Full backoff minus a random fraction of it: never more than backoff_max_s.
            wait = backoff * (1.0 - config.jitter * uniform())
            if clock() + wait > give_up:
                raise CaptureBudgetExhaustedError(
                    f"still {code.name} after {attempts} attempts in "
                    f"{config.retry_budget_s:g} s: {details[:DETAILS_CHARS]}",
                    code=code,
                    details=details,
                    attempts=attempts,
                ) from e
            counters.retries[code.name] += 1
            await sleep(wait)
            backoff = min(backoff * 2.0, config.backoff_max_s)


async def submit_stream(
    call: SubmitCall,
    messages: Sequence[SubmitActasRequestPb],
    *,
    config: CaptureConfig,
    counters: CaptureCounters,
    metadata: Sequence[tuple[str, str]] = (),
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    uniform: Callable[[], float] = random.random,
) -> list[ActaOutcomePb]:
    """Send ``messages`` on one SubmitActas stream until ingest answers it.

    Args:
        call: the stub's ``SubmitActas`` on a grpc.aio channel.
        messages: the stream's messages.
        config: deadline, retry budget and backoff.
        counters: updated with the streams sent and the retries.
        metadata: call metadata of every attempt.
        sleep: waits between attempts.
        clock: monotonic seconds (the retry budget).
        uniform: a number in [0, 1) (the jitter).

    Returns:
        The outcomes, one per acta, in order.

    Raises:
        CaptureRefusedError: a status not in :data:`RETRYABLE`.
        CaptureBudgetExhaustedError: retryable failures beyond ``config.retry_budget_s``.
    """

    async def send() -> list[ActaOutcomePb]:
        counters.streams += 1
        response = await call(
            iter(messages), timeout=config.call_timeout_s, metadata=tuple(metadata) or None
        )
        return list(response.outcomes)

    return await _retrying(
        send,
        what="stream",
        config=config,
        counters=counters,
        sleep=sleep,
        clock=clock,
        uniform=uniform,
    )


async def record_missing(
    call: RecordMissingCall,
    request: RecordMissingActaRequestPb,
    *,
    config: CaptureConfig,
    counters: CaptureCounters,
    metadata: Sequence[tuple[str, str]] = (),
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    uniform: Callable[[], float] = random.random,
) -> ActaOutcomePb:
    """Record one missing acta with a RecordMissingActa call until ingest answers it,
    with the retries of :func:`submit_stream`.

    Args:
        call: the stub's ``RecordMissingActa`` on a grpc.aio channel.
        request: the missing acta and its reason.
        config: as for :func:`submit_stream`.
        counters: as for :func:`submit_stream` (``records`` counts the calls sent).
        metadata: as for :func:`submit_stream`.
        sleep: as for :func:`submit_stream`.
        clock: as for :func:`submit_stream`.
        uniform: as for :func:`submit_stream`.

    Returns:
        Ingest's outcome (ACCEPTED, not counted, or DUPLICATE), or, when ingest refused
        the record (a status with its details), a REJECTED outcome with the status's
        code, field and message, as SubmitActas reports a refused acta.

    Raises:
        CaptureRefusedError: a status not in :data:`RETRYABLE` that ingest did not
            decide (Envoy's RBAC, a transport failure).
        CaptureBudgetExhaustedError: retryable failures beyond ``config.retry_budget_s``.
    """

    async def send() -> ActaOutcomePb:
        counters.records += 1
        response = await call(
            request, timeout=config.call_timeout_s, metadata=tuple(metadata) or None
        )
        return response.outcome

    try:
        return await _retrying(
            send,
            what="missing acta",
            config=config,
            counters=counters,
            sleep=sleep,
            clock=clock,
            uniform=uniform,
        )
    except CaptureRefusedError as e:
        cause = e.__cause__
        refusal = service_refusal(cause) if isinstance(cause, grpc.aio.AioRpcError) else None
        if refusal is None:
            raise
        return ActaOutcomePb(
            acta_id=f"{request.casilla_id}/{request.contest_id}",
            status=ingest_pb2.OUTCOME_STATUS_REJECTED,
            code=refusal.code.name,
            field=refusal.field,
            message=refusal.message[:DETAILS_CHARS],
        )


# ------------------------------------------------------------------------------------
# batching


class Batcher:
    """Groups actas per centre into messages of ``size`` actas."""

    def __init__(self, size: int) -> None:
        """Messages of ``size`` actas (the last of each centre may be shorter)."""
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._pending: dict[str, list[ActaPb]] = {}

    def add(self, centre: str, acta: ActaPb) -> SubmitActasRequestPb | None:
        """Add ``acta`` to ``centre``'s pending message; returns it once full."""
        pending = self._pending.setdefault(centre, [])
        pending.append(acta)
        if len(pending) < self.size:
            return None
        del self._pending[centre]
        return SubmitActasRequestPb(actas=pending)

    def flush(self) -> list[tuple[str, SubmitActasRequestPb]]:
        """The partly filled messages, per centre; nothing stays pending."""
        out = [(c, SubmitActasRequestPb(actas=p)) for c, p in self._pending.items() if p]
        self._pending.clear()
        return out

    @staticmethod
    def all(
        actas: Iterable[ActaPb], size: int, *, centre: str = ""
    ) -> Iterable[tuple[str, SubmitActasRequestPb]]:
        """Every acta of ``actas`` in messages of ``size``, all sent by ``centre``."""
        batcher = Batcher(size)
        for acta in actas:
            if (message := batcher.add(centre, acta)) is not None:
                yield centre, message
        yield from batcher.flush()


# ------------------------------------------------------------------------------------
# the client


@dataclass(frozen=True, kw_only=True)
class Operator:
    """One capture operator's way in.

    Attributes:
        tls: the operator's certificate, key and CA: its identity at Envoy. None for a
            plaintext channel (tests and benchmarks on loopback, without Envoy).
        metadata: call metadata of every stream (a benchmark without Envoy sets the
            ``x-forwarded-client-cert`` Envoy would set for the certificate).
    """

    tls: TlsFiles | None = None
    metadata: tuple[tuple[str, str], ...] = ()


class CaptureClient:
    """Submits captures through the edge, with the operators of one or more centres.

    Use as an async context manager (it owns one channel per operator)::

        async with CaptureClient(target=edge, operators={"cc-01": [op1, op2]}) as client:
            await client.run(messages, on_answer)
    """

    def __init__(
        self,
        *,
        target: str,
        operators: Mapping[str, Sequence[Operator]],
        config: CaptureConfig | None = None,
        server_name: str | None = None,
        counters: CaptureCounters | None = None,
    ) -> None:
        """A client for ``operators``: per centre key, the operators whose captures are
        sent, in order (two for double capture).

        Raises:
            ValueError: no centre, or a centre without operators.
        """
        if not operators or not all(operators.values()):
            raise ValueError("every centre needs at least one operator")
        self.target = target
        self.config = config or CaptureConfig()
        self.counters = counters if counters is not None else CaptureCounters()
        self._operators = {c: tuple(ops) for c, ops in operators.items()}
        self._server_name = server_name
        self._stack = contextlib.AsyncExitStack()
        self._calls: dict[str, list[tuple[SubmitCall, Operator]]] = {}
        # Per centre: RecordMissingActa on its first operator's channel.
        self._record_calls: dict[str, tuple[RecordMissingCall, Operator]] = {}

    async def __aenter__(self) -> Self:
        """Open one channel per operator."""
        await self._stack.__aenter__()
        try:
            for centre, ops in self._operators.items():
                calls = self._calls[centre] = []
                for op in ops:
                    channel = await self._stack.enter_async_context(
                        aio_channel(self.target, tls=op.tls, server_name=self._server_name)
                    )
                    stub = ingest_pb2_grpc.IngestServiceStub(channel)
                    calls.append((stub.SubmitActas, op))
                    self._record_calls.setdefault(centre, (stub.RecordMissingActa, op))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the channels."""
        await self._stack.__aexit__(exc_type, exc, tb)

    async def submit(
        self, centre: str, messages: Sequence[SubmitActasRequestPb]
    ) -> list[list[ActaOutcomePb]]:
        """Send one stream of ``messages`` with each operator of ``centre`` in turn.

        Returns:
            The outcomes of each operator's stream.

        Raises:
            CaptureError: a stream refused or out of retry budget.
            KeyError: ``centre`` has no operators.
        """
        return [
            await submit_stream(
                call, messages, config=self.config, counters=self.counters, metadata=op.metadata
            )
            for call, op in self._calls[centre]
        ]

    async def record(self, centre: str, request: RecordMissingActaRequestPb) -> ActaOutcomePb:
        """Record a missing acta with ``centre``'s first operator (one record suffices:
        there are no figures for a second operator to agree with).

        Returns:
            Ingest's outcome; REJECTED when ingest refused the record
            (:func:`record_missing`).

        Raises:
            CaptureError: a call refused by something other than ingest, or out of
                retry budget.
            KeyError: ``centre`` has no operators.
        """
        call, op = self._record_calls[centre]
        return await record_missing(
            call, request, config=self.config, counters=self.counters, metadata=op.metadata
        )

    async def run(
        self,
        messages: AsyncIterable[tuple[str, Capture]],
        on_answer: Callable[[Answer], None],
    ) -> None:
        """Send every ``(centre, message)`` of ``messages`` with that centre's operators,
        ``config.streams`` streams (or missing acta records) in flight per centre;
        ``on_answer`` gets each answer.

        Raises:
            ExceptionGroup: of :class:`CaptureError` when a stream or a record failed (the
                others are cancelled), or of ValueError for a centre without operators.
        """
        streams = self.config.streams
        queues: dict[str, asyncio.Queue[Capture | None]] = {
            c: asyncio.Queue(maxsize=2 * streams) for c in self._calls
        }

        async def record(centre: str, request: RecordMissingActaRequestPb) -> None:
            outcome = await self.record(centre, request)
            on_answer(
                Answer(centre=centre, operator=0, outcomes=[outcome], messages=(), missing=request)
            )

        async def send(centre: str) -> None:
            queue = queues[centre]
            last = False
            while not last and (first := await queue.get()) is not None:
                if isinstance(first, RecordMissingActaRequestPb):
                    await record(centre, first)
                    continue
                group = [first]
                after: RecordMissingActaRequestPb | None = None
                while len(group) < self.config.messages_per_stream:
                    try:
                        more = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if more is None:  # this sender's end: send what it holds, then stop
                        last = True
                        break
                    if isinstance(more, RecordMissingActaRequestPb):
                        after = more  # recorded once the stream it interrupts is sent
                        break
                    group.append(more)
                for i, outcomes in enumerate(await self.submit(centre, group)):
                    on_answer(Answer(centre=centre, operator=i, outcomes=outcomes, messages=group))
                if after is not None:
                    await record(centre, after)

        async def produce() -> None:
            async for centre, message in messages:
                queue = queues.get(centre)
                if queue is None:
                    raise ValueError(f"no operator for capture centre {centre[:64]!r}")
                await queue.put(message)
            for queue in queues.values():
                for _ in range(streams):
                    await queue.put(None)

        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for centre in queues:
                for _ in range(streams):
                    group.create_task(send(centre))
