"""Aggregation: follow ingest's acta log, count it with the SDK's ``Tally``, serve totals.

The follower, in order:

1. at startup, rebuild the tally from the stored leaves (the state at position N is a
   pure function of the first N records, so replaying them is exact);
2. ask ingest for ``StreamRecords(from_sequence=cursor, follow=True)``;
3. for every page: note ingest's log size (every message carries it, keep-alives
   included), drop any overlap with what is stored, refuse a gap, store the leaves and
   the new cursor in one transaction, then apply them to the tally and wake the readers;
4. when ingest is unreachable or the stream ends, reconnect with exponential backoff
   (reset only when the position moves on);
5. when ``STUCK_AFTER_FAILURES`` streams in a row fail without moving the position while
   ingest says it holds records past it (a record that cannot be read, e.g. a page over
   the message size limit), log an ERROR naming the position at every further attempt
   and report ``FOLLOWER_HEALTH_NAME`` NOT_SERVING until the position moves again. The
   totals stay served (``SERVICE_NAME`` stays SERVING) so that publication keeps cutting
   and signs how far behind ingest the cuts are (``GetResultsBlob.ingest_records``).

Every gRPC answer reads the tally synchronously on the event loop, so the position and
the results it returns are always taken together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from veritally.aggregation.store import AggregationStore, CursorMismatchError, LeafReader
from veritally.ingest.bounds import clip
from veritally.rpc import MAX_MESSAGE_BYTES, ServiceServer, TlsFiles
from veritally_client import MalformedDataError
from veritally_client.protocol import ElectionIndex, Tally
from veritally_client.protocol.pb import (
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    results_pb2,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "veritally.v1.AggregationService"
# Reconnection backoff towards ingest, in seconds: first wait, and the most it grows to.
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
# Leaves per StreamAggregatedRecords message and bytes past the first (as ingest's pages).
STREAM_PAGE_LEAVES = 1_000
STREAM_PAGE_BYTES = 1024 * 1024
# Streams in a row that end without moving the position, while ingest reports records
# past it, before the follower calls itself stuck (step 5). One failure is a restart of
# ingest or a network blip; three in a row at one position, with the backoff growing
# between them, is a record that cannot be read.
STUCK_AFTER_FAILURES = 3
# Health service name of the follower (step 5): NOT_SERVING while stuck. Apart from
# SERVICE_NAME, which Envoy's health checks use, so that the totals stay reachable.
FOLLOWER_HEALTH_NAME = "veritally.v1.AggregationService/follow-ingest"
# Characters of an error's details kept in a log line (they come from the network).
_MAX_REASON_CHARS = 200

#: ``report(ok)``: called with False when the follower gets stuck, True when it moves on.
FollowerHealth = Callable[[bool], Awaitable[None]]


def _ingest_channel(
    target: str, *, tls: TlsFiles | None, server_name: str | None
) -> grpc.aio.Channel:
    """A channel to ingest whose reconnection backoff matches the follower's.

    gRPC's own subchannel backoff grows to 120 s by default, and subchannels are shared
    process-wide, so a fresh channel would still wait that long after a long outage of
    ingest. These options cap it at ``BACKOFF_MAX_S`` and keep the subchannel private.
    (``veritally.rpc.aio_channel`` takes no extra options; otherwise identical.)
    """
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", int(BACKOFF_INITIAL_S * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(BACKOFF_INITIAL_S * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(BACKOFF_MAX_S * 1000)),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)


class AggregationEngine:
    """The tally, its store and the follower of ingest."""

    def __init__(self, *, election: ElectionIndex, db_path: Path) -> None:
        """Open the store and rebuild the tally from it (step 1).

        Raises:
            veritally_client.MalformedDataError: if a stored leaf is not a valid record.
            RuntimeError: if the store's cursor disagrees with its leaves.
        """
        self.election = election
        self._db_path = db_path
        self._store = AggregationStore(db_path)
        self._changed = asyncio.Condition()
        self._closed = False
        # The largest log size ingest has reported on its stream since the start.
        self._ingest_log_size = 0
        #: The position the follower is stuck at (step 5), None while it moves on.
        self.stuck_at: int | None = None
        started = time.perf_counter()
        self.tally = Tally(election)
        # (1) rebuild: apply_leaves reads each leaf through the tally's view, the fast
        # path (a national log of ~500,000 leaves in seconds)
        self.tally.apply_leaves(self._store.replay())
        cursor = self._store.cursor()
        if cursor != self.tally.acta_records:  # pragma: no cover - guarded by the store
            raise RuntimeError(f"cursor {cursor} but {self.tally.acta_records} leaves replayed")
        log.info(
            "aggregation rebuilt %d records in %.2f s",
            self.tally.acta_records,
            time.perf_counter() - started,
        )

    @property
    def position(self) -> int:
        """Records counted (and stored)."""
        return self.tally.acta_records

    @property
    def ingest_records(self) -> int:
        """Records ingest had accepted as far as this aggregation knows: the largest log
        size ingest has reported since the start, and never below the position (every
        counted record came from ingest's log, which only grows)."""
        return max(self._ingest_log_size, self.position)

    def heard(self, log_size: int) -> None:
        """Note a log size ingest reported (step 3)."""
        self._ingest_log_size = max(self._ingest_log_size, log_size)

    async def consume(self, first_sequence: int, leaves: list[bytes]) -> None:
        """Store and count one page of ingest's log (step 3).

        Raises:
            CursorMismatchError: if the page starts after the cursor (a gap).
            veritally_client.MalformedDataError: if a leaf is not a valid record.
        """
        position = self.position
        if first_sequence > position:
            raise CursorMismatchError(f"page starts at {first_sequence}, expected {position}")
        overlap = position - first_sequence
        if overlap >= len(leaves):
            return
        fresh = leaves[overlap:]
        await asyncio.to_thread(self._store.append, position, fresh)
        for leaf in fresh:
            self.tally.apply_leaf(leaf)
        async with self._changed:
            self._changed.notify_all()

    async def follow(
        self,
        target: str,
        *,
        tls: TlsFiles | None = None,
        server_name: str | None = None,
        health: FollowerHealth | None = None,
    ) -> None:
        """Follow ingest at ``target`` until cancelled (steps 2-5).

        Args:
            target: ingest's ``host:port``.
            tls: client certificate for the channel (mTLS).
            server_name: TLS name of ingest, if not the target's host.
            health: told when the follower gets stuck and when it moves on (step 5).
        """
        delay = BACKOFF_INITIAL_S
        failures = 0  # streams in a row that ended without moving the position
        while not self._closed:
            start = self.position
            reason = "ingest ended the stream"
            try:
                async with _ingest_channel(target, tls=tls, server_name=server_name) as channel:
                    stub = ingest_pb2_grpc.IngestServiceStub(channel)
                    # (2) resume from the cursor
                    call = stub.StreamRecords(
                        ingest_pb2.StreamRecordsRequest(from_sequence=self.position, follow=True)
                    )
                    async for page in call:
                        # (3) note ingest's size, store and count
                        self.heard(page.log_size)
                        if page.leaves:
                            before = self.position
                            await self.consume(page.first_sequence, list(page.leaves))
                            if self.position > before:
                                delay, failures = BACKOFF_INITIAL_S, 0
                                await self._moved_on(health)
            except grpc.aio.AioRpcError as e:
                details = (e.details() or "")[:_MAX_REASON_CHARS]
                reason = f"{e.code().name}: {details}"
            except MalformedDataError:
                # The tally refuses a record ingest logged: the definition does not match
                # ingest's. Counting on would publish wrong totals: stop, loudly. The
                # stored leaves are still a faithful copy of ingest's log, so a restart
                # with the right definition rebuilds from them.
                log.critical("ingest sent an invalid record at %d; not following", self.position)
                raise
            except CursorMismatchError as e:
                reason = str(e)
            failures = 0 if self.position > start else failures + 1
            behind = self.ingest_records - self.position
            if failures >= STUCK_AFTER_FAILURES and behind > 0:
                # (5) stuck before a record: loudly, at every attempt, with the position
                log.error(
                    "aggregation stuck at record %d: ingest has %d records (%d behind), "
                    "%d streams in a row failed there: %s; retrying in %.1f s",
                    self.position,
                    self.ingest_records,
                    behind,
                    failures,
                    reason,
                    delay,
                )
                if self.stuck_at != self.position:
                    self.stuck_at = self.position
                    if health is not None:
                        await health(False)
            else:
                log.warning("ingest stream at %s: %s; retrying in %.1f s", target, reason, delay)
            # (4) backoff, also when ingest ended the stream (it is shutting down)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _moved_on(self, health: FollowerHealth | None) -> None:
        if self.stuck_at is None:
            return
        log.warning("aggregation moved past record %d (now at %d)", self.stuck_at, self.position)
        self.stuck_at = None
        if health is not None:
            await health(True)

    async def aggregated(
        self, from_sequence: int, *, follow: bool
    ) -> AsyncGenerator[tuple[int, list[bytes]], None]:
        """Pages ``(first_sequence, leaves)`` of the counted records; with ``follow``,
        waits for more (woken by :meth:`consume`) until :meth:`end_streams`."""
        reader = LeafReader(self._db_path)
        try:
            position = from_sequence
            while True:
                counted = self.position
                if position < counted:
                    leaves = reader.page(
                        position,
                        counted,
                        max_leaves=STREAM_PAGE_LEAVES,
                        max_bytes=STREAM_PAGE_BYTES,
                    )
                    yield position, leaves
                    position += len(leaves)
                    continue
                if not follow or self._closed:
                    return
                async with self._changed:
                    await self._changed.wait_for(
                        lambda p=position: self.position > p or self._closed  # type: ignore[misc]  # default binds the loop value
                    )
        finally:
            reader.close()

    async def end_streams(self) -> None:
        """Stop following ingest and end every follow stream."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        """Close the store."""
        self._store.close()


class AggregationServicer(aggregation_pb2_grpc.AggregationServiceServicer):
    """Answers AggregationService calls from an ``AggregationEngine``."""

    def __init__(self, engine: AggregationEngine) -> None:
        """Serve ``engine``."""
        self.engine = engine

    async def GetResults(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsResponse:
        """Totals of one unit at the current position."""
        if request.level == results_pb2.LEVEL_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "level: not set")
        if request.level == results_pb2.LEVEL_NATIONAL and request.unit_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "unit_id: must be empty for the nation"
            )
        tally = self.engine.tally
        try:
            unit = tally.unit_results(request.level, request.unit_id)
        except LookupError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unit_id: unknown unit {clip(request.unit_id)} at level {request.level}",
            )
        return aggregation_pb2.GetResultsResponse(acta_records=tally.acta_records, results=unit)

    async def GetResultsBlob(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsBlobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsBlobResponse:
        """The results blob and its position, taken together (no await in between)."""
        engine = self.engine
        tally = engine.tally
        return aggregation_pb2.GetResultsBlobResponse(
            acta_records=tally.acta_records,
            results=tally.results_bytes(final=request.final),
            ingest_records=engine.ingest_records,
        )

    async def GetDefinition(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetDefinitionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetDefinitionResponse:
        """The exact definition bytes the totals are computed with."""
        return aggregation_pb2.GetDefinitionResponse(
            definition=self.engine.election.definition_bytes
        )

    async def StreamAggregatedRecords(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.StreamAggregatedRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[aggregation_pb2.StreamAggregatedRecordsResponse]:
        """The counted records from ``from_sequence``; with ``follow``, keep streaming."""
        async for first, leaves in self.engine.aggregated(
            request.from_sequence, follow=request.follow
        ):
            yield aggregation_pb2.StreamAggregatedRecordsResponse(
                first_sequence=first, leaves=leaves
            )


@dataclass
class AggregationService:
    """A running aggregation: server, engine, follower task and bound port."""

    server: ServiceServer
    engine: AggregationEngine
    follower: asyncio.Task[None]
    port: int

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Stop following, end streams, drain and stop the server, close the store."""
        await self.engine.end_streams()
        self.follower.cancel()
        # A follower that already failed was reported when it failed (log, health).
        await asyncio.gather(self.follower, return_exceptions=True)
        await self.server.stop(drain_seconds=drain_seconds, grace=grace)
        self.engine.close()


async def start_aggregation(
    *,
    election: ElectionIndex,
    db_path: Path,
    address: str,
    ingest_target: str,
    tls: TlsFiles | None = None,
    ingest_tls: TlsFiles | None = None,
    ingest_server_name: str | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AggregationService:
    """Rebuild from the store, start serving on ``address`` and follow ``ingest_target``.

    Raises:
        OSError: if the address cannot be bound.
        veritally_client.MalformedDataError: if the store holds an invalid record.
    """
    engine = AggregationEngine(election=election, db_path=db_path)
    server = ServiceServer(name=SERVICE_NAME, interceptors=interceptors)
    aggregation_pb2_grpc.add_AggregationServiceServicer_to_server(
        AggregationServicer(engine), server.grpc
    )
    port = await server.start(address, tls=tls)

    async def follower_health(ok: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await server.health.set(FOLLOWER_HEALTH_NAME, status)

    await follower_health(True)
    follower = asyncio.create_task(
        engine.follow(
            ingest_target,
            tls=ingest_tls,
            server_name=ingest_server_name,
            health=follower_health,
        ),
        name="follow-ingest",
    )
    background: set[asyncio.Task[None]] = set()

    def follower_done(task: asyncio.Task[None]) -> None:
        # The follower only ends on its own for a record the tally refuses: stop
        # advertising totals that can no longer follow the log.
        if not task.cancelled() and task.exception() is not None:
            report = asyncio.create_task(server.set_serving(False))
            background.add(report)
            report.add_done_callback(background.discard)

    follower.add_done_callback(follower_done)
    log.info(
        "aggregation serving on port %d at position %d, following %s",
        port,
        engine.position,
        ingest_target,
    )
    return AggregationService(server=server, engine=engine, follower=follower, port=port)
