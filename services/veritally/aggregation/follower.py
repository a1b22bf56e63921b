"""The follower of ingest: reads its acta log through ingest's gRPC client into the engine.

This room owns the stream from ingest: the channel and its reconnection backoff, resuming
from the engine's position, the retry loop, telling a stuck follower from a blip, and the
health report of the follower. It may import gRPC, the generated ingest stubs, the
shared channel plumbing (:mod:`veritally.rpc`), the engine and the store's errors;
never the servicer or the app.

The follower, in order:

1. at startup, the engine rebuilds the tally from the stored leaves (the state at
   position N is a pure function of the first N records, so replaying them is exact);
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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from veritally.aggregation.engine import AggregationEngine
from veritally.aggregation.store import CursorMismatchError
from veritally.rpc import MAX_MESSAGE_BYTES, TlsFiles
from veritally_client import MalformedDataError
from veritally_client.protocol.pb import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "FOLLOWER_HEALTH_NAME",
    "STUCK_AFTER_FAILURES",
    "FollowerHealth",
    "IngestFollower",
]

# Reconnection backoff towards ingest, in seconds: first wait, and the most it grows to.
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
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


class IngestFollower:
    """Follows ingest's acta log into an :class:`AggregationEngine` (steps 2-5)."""

    def __init__(
        self,
        *,
        engine: AggregationEngine,
        target: str,
        tls: TlsFiles | None = None,
        server_name: str | None = None,
        health: FollowerHealth | None = None,
    ) -> None:
        """Follow ingest at ``target`` into ``engine``.

        Args:
            engine: where the pages are stored and counted.
            target: ingest's ``host:port``.
            tls: client certificate for the channel (mTLS).
            server_name: TLS name of ingest, if not the target's host.
            health: told when the follower gets stuck and when it moves on (step 5).
        """
        self.engine = engine
        self.target = target
        self.tls = tls
        self.server_name = server_name
        self.health = health

    async def run(self) -> None:
        """Follow ingest until cancelled or the engine ends its streams (steps 2-5).

        Raises:
            veritally_client.MalformedDataError: if ingest sent a record the tally
                refuses (the follower stops; the service reports NOT_SERVING).
        """
        engine = self.engine
        delay = BACKOFF_INITIAL_S
        failures = 0  # streams in a row that ended without moving the position
        while not engine.closed:
            start = engine.position
            reason = "ingest ended the stream"
            try:
                async with _ingest_channel(
                    self.target, tls=self.tls, server_name=self.server_name
                ) as channel:
                    stub = ingest_pb2_grpc.IngestServiceStub(channel)
                    # (2) resume from the cursor
                    call = stub.StreamRecords(
                        ingest_pb2.StreamRecordsRequest(from_sequence=engine.position, follow=True)
                    )
                    async for page in call:
                        # (3) note ingest's size, store and count
                        closed_at = (
                            page.closed_at_records if page.HasField("closed_at_records") else None
                        )
                        engine.heard(page.log_size, closed_at)
                        if page.leaves:
                            before = engine.position
                            await engine.consume(page.first_sequence, list(page.leaves))
                            if engine.position > before:
                                delay, failures = BACKOFF_INITIAL_S, 0
                                await self._moved_on()
            except grpc.aio.AioRpcError as e:
                details = (e.details() or "")[:_MAX_REASON_CHARS]
                reason = f"{e.code().name}: {details}"
            except MalformedDataError:
                # The tally refuses a record ingest logged: the definition does not match
                # ingest's. Counting on would publish wrong totals: stop, loudly. The
                # stored leaves are still a faithful copy of ingest's log, so a restart
                # with the right definition rebuilds from them.
                log.critical("ingest sent an invalid record at %d; not following", engine.position)
                raise
            except CursorMismatchError as e:
                reason = str(e)
            failures = 0 if engine.position > start else failures + 1
            behind = engine.ingest_records - engine.position
            if failures >= STUCK_AFTER_FAILURES and behind > 0:
                # (5) stuck before a record: loudly, at every attempt, with the position
                log.error(
                    "aggregation stuck at record %d: ingest has %d records (%d behind), "
                    "%d streams in a row failed there: %s; retrying in %.1f s",
                    engine.position,
                    engine.ingest_records,
                    behind,
                    failures,
                    reason,
                    delay,
                )
                if engine.note_stuck() and self.health is not None:
                    await self.health(False)
            else:
                log.warning(
                    "ingest stream at %s: %s; retrying in %.1f s", self.target, reason, delay
                )
            # (4) backoff, also when ingest ended the stream (it is shutting down)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _moved_on(self) -> None:
        was = self.engine.note_moved_on()
        if was is None:
            return
        log.warning("aggregation moved past record %d (now at %d)", was, self.engine.position)
        if self.health is not None:
            await self.health(True)
