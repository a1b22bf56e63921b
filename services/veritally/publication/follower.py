"""The cut scheduler: reads aggregation through its gRPC client and cuts every interval.

This room owns the calls to aggregation (their deadline, which records to fetch, the
checks that they extend the log), the interval between cuts, the one-cut-at-a-time lock
and the stall alarm. It may import gRPC and the generated aggregation stubs, the engine
(which makes, serves and bundles the cut), the stall watch and publication's errors;
never the servicer or the app.

Every ``interval`` seconds the scheduler (:meth:`AggregationFollower.cut_once`):

1. asks aggregation for the results blob and the position M it covers, atomically
   (``GetResultsBlob``), with how many records ingest had accepted as aggregation last
   heard (signed into the cut record as ``ingest_records``);
2. streams the acta records from the log's current acta count up to M
   (``StreamAggregatedRecords``, ``follow=False``), keeping the exact bytes;
3. makes the cut (:mod:`veritally.publication.cutter`: append, sign, persist in one
   transaction) — a heartbeat cut with no new records when nothing changed;
4. only then serves it (latest, watchers) and writes it to the bundle;
5. the stall alarm (:mod:`veritally.publication.liveness`): when the log stays behind
   ingest's figure without covering a new record for ``STALL_ALARM_INTERVALS``
   intervals, every interval logs an ERROR with the lag until it moves on.

If aggregation is unreachable or sends something that cannot extend the log, no cut is
made that interval: clients then see the latest cut age, which is the signal they need.

Once a cut's results are final (ingest closed the night and aggregation counted every
record logged at the close, ``Results.final``), it is the night's last: no cut is made
after it, heartbeat or not (docs/adr/0081-the-final-cut.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from veritally.publication.engine import PublicationEngine
from veritally.publication.errors import (
    ForkRefusedError,
    LeaseLostError,
    PublicationError,
    UpstreamDataError,
)
from veritally.publication.liveness import StallWatch
from veritally.publication.store import CutRow
from veritally_client.protocol.pb import aggregation_pb2, aggregation_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["AGGREGATION_DEADLINE_S", "AggregationFollower"]

#: Deadline of each call to aggregation, in seconds: well under a cut interval's worth of
#: waiting on a healthy loopback/mesh hop, long enough for a large first catch-up batch.
AGGREGATION_DEADLINE_S = 30.0


def _ignore(seconds: float | None) -> None:
    """No metrics: nothing to observe."""


class AggregationFollower:
    """Pulls results and records from aggregation and makes each interval's cut."""

    def __init__(
        self, *, engine: PublicationEngine, channel: grpc.aio.Channel, interval: float
    ) -> None:
        """Follow aggregation through ``channel`` every ``interval`` seconds."""
        self.engine = engine
        self.stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        self.interval = interval
        self.channel = channel
        # One cut at a time: the scheduler and any operator-triggered cut never interleave.
        self._lock = asyncio.Lock()
        #: Scheduled cut attempts finished so far (made or skipped), for monitoring.
        self.attempts = 0
        #: Ingest's accepted records as aggregation reported them in this interval's
        #: GetResultsBlob (None until it answers in an interval).
        self.ingest_records: int | None = None
        self._stall = StallWatch()
        #: Called when the fork guard refuses to sign (the service reports NOT_SERVING).
        self.on_refusal: Callable[[], Awaitable[None]] | None = None
        # Called when a cut finds that this publisher lost the lease; cutting stops.
        self.on_deposed: Callable[[LeaseLostError], Awaitable[None]] | None = None
        #: Called once per interval with the cut's duration (seconds), None for no cut.
        self.observe_cut: Callable[[float | None], None] = _ignore

    async def ensure_definition(self) -> None:
        """Fetch and store the election definition once.

        Raises:
            grpc.aio.AioRpcError: if aggregation cannot answer.
        """
        if await self.engine.definition() is not None:
            return
        resp = await self.stub.GetDefinition(
            aggregation_pb2.GetDefinitionRequest(), timeout=AGGREGATION_DEADLINE_S
        )
        await self.engine.set_definition(resp.definition)

    async def cut_once(self) -> CutRow:
        """One cut (see the module docstring).

        Raises:
            grpc.aio.AioRpcError: if aggregation cannot answer.
            UpstreamDataError: if what it sends cannot extend the log.
            ForkRefusedError: if the store does not extend what was published (the
                service then reports NOT_SERVING, for good).
        """
        async with self._lock:
            try:
                return await self._cut_once()
            except ForkRefusedError:
                if self.on_refusal is not None:
                    await self.on_refusal()
                raise

    async def _cut_once(self) -> CutRow:
        final = self.engine.latest_cut_row if self.engine.final else None
        if final is not None:
            # The final cut is the night's last: nothing is signed after it.
            return final
        await self.ensure_definition()
        # (1) results at M, atomically with M
        blob = await self.stub.GetResultsBlob(
            aggregation_pb2.GetResultsBlobRequest(), timeout=AGGREGATION_DEADLINE_S
        )
        have = self.engine.acta_records
        m = blob.acta_records
        # Aggregation knows at least the records it counted (an older one reports 0).
        self.ingest_records = max(blob.ingest_records, m)
        if m < have:
            raise UpstreamDataError(f"aggregation is at {m} records, the log already has {have}")
        # (2) the records [have, M), exact bytes
        leaves: list[bytes] = []
        if m > have:
            call = self.stub.StreamAggregatedRecords(
                aggregation_pb2.StreamAggregatedRecordsRequest(from_sequence=have, follow=False),
                timeout=AGGREGATION_DEADLINE_S,
            )
            async for batch in call:
                if batch.first_sequence != have + len(leaves):
                    call.cancel()
                    raise UpstreamDataError(
                        f"batch starts at {batch.first_sequence}, expected {have + len(leaves)}"
                    )
                leaves.extend(batch.leaves)
                if have + len(leaves) >= m:
                    call.cancel()  # the records after M belong to a later cut
                    break
            if have + len(leaves) < m:
                raise UpstreamDataError(
                    f"aggregation streamed {len(leaves)} records, {m - have} expected"
                )
            del leaves[m - have :]
        # (3) and (4)
        return await self.engine.cut(
            acta_leaves=leaves,
            acta_records=m,
            results=blob.results,
            ingest_records=self.ingest_records,
        )

    def _check_stall(self) -> None:
        """(5) the stall alarm, once per interval in which aggregation answered."""
        if self.ingest_records is None:
            return
        stall = self._stall.observe(
            acta_records=self.engine.acta_records, ingest_records=self.ingest_records
        )
        if stall is not None:
            log.error(
                "publication stalled: the log covers %d acta records, ingest had accepted "
                "%d (%d behind) and no record was added for %d intervals (%.0f s)",
                stall.acta_records,
                stall.ingest_records,
                stall.lag_records,
                stall.intervals,
                stall.intervals * self.interval,
            )

    async def run(self) -> None:
        """Cut every interval until cancelled; errors skip one interval."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.ingest_records = None
            started, took = loop.time(), None
            try:
                row = await self.cut_once()
                took = loop.time() - started
                log.debug("cut %d: size %d", row.cut_number, row.tree_size)
            except grpc.aio.AioRpcError as e:
                log.warning("no cut this interval: aggregation: %s", e.code())
            except LeaseLostError as e:
                # Another publisher holds the lease: nothing was signed, nor will be here.
                if self.on_deposed is not None:
                    await self.on_deposed(e)
                return
            except ForkRefusedError:
                pass  # the guard logged the ALARM; nothing was signed, nor will be
            except PublicationError as e:
                log.error("no cut this interval: %s", e)
            except Exception:
                # Keep the heartbeat alive whatever went wrong; the error is logged, and
                # nothing was served because nothing was committed.
                log.exception("no cut this interval")
            self.observe_cut(took)
            self._check_stall()
            self.attempts += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at, loop.time() - self.interval)  # no burst after a stall
