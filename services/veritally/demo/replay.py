"""The replay of an election night: every acta of the file submitted through the edge
with the capture centres' certificates, by the capture client (``veritally.capture``).

Each centre of the file is served by one of the PKI's capture-centre identities, several
in parallel, in batches on the ``SubmitActas`` stream. With double capture, every acta
is captured twice, by two operators, and logged when the second capture agrees. A speed
X replays the night X times faster than the clock of the actas' capture times; 0 sends
as fast as the stack accepts. Used by ``veritally demo``, the soak and the end-to-end
tests.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from veritally.capture import (
    Answer,
    Batcher,
    CaptureClient,
    CaptureConfig,
    CaptureCounters,
    Operator,
)
from veritally.stack import Stack
from veritally_client.protocol.pb import acta_pb2, ingest_pb2

__all__ = ["CaptureStats", "replay"]

ActaPb = acta_pb2.Acta

# Actas per SubmitActas message. Ingest commits one SQLite transaction per message, so a
# few hundred amortise the fsync; Envoy counts one call per stream against the centre's
# budget (docs/mesh.md), so bigger batches also keep a fast replay within it.
BATCH = 500
# Streams in flight per capture centre: one being committed while the next is on the wire.
STREAMS_PER_CENTRE = 2
# Longest a partly filled batch waits for more actas in a paced replay (seconds).
FLUSH_S = 0.5
# Retries, backoff and deadlines are the capture client's (veritally.capture): a batch
# keeps being sent for up to its retry budget (120 s) after Envoy's rate limit or a
# restarting service.


@dataclass
class CaptureStats:
    """What the replay sent and what ingest answered.

    Attributes:
        actas: actas read from the file.
        captures: captures submitted (twice the actas with double capture).
        status: outcome counts of the last answer for each capture.
        logged: acta ids ingest logged (ACCEPTED, or DUPLICATE of a logged revision).
        counters: streams sent and retried (per status) by the capture client.
        started: monotonic start time.
        finished: monotonic end time (0 while running).
    """

    actas: int = 0
    captures: int = 0
    status: Counter[str] = field(default_factory=Counter)
    logged: set[str] = field(default_factory=set)
    counters: CaptureCounters = field(default_factory=CaptureCounters)
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0

    def seconds(self) -> float:
        """Elapsed seconds of the replay."""
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float:
        """Captures answered per second."""
        return sum(self.status.values()) / max(self.seconds(), 1e-9)

    @property
    def retries(self) -> int:
        """Batches sent again after a retryable error."""
        return self.counters.total_retries

    def answered(self, answer: Answer) -> None:
        """Count ingest's answer to one stream."""
        for outcome in answer.outcomes:
            name = ingest_pb2.OutcomeStatus.Name(outcome.status).removeprefix("OUTCOME_STATUS_")
            self.status[name] += 1
            if outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED or (
                outcome.status == ingest_pb2.OUTCOME_STATUS_DUPLICATE and outcome.revision > 0
            ):
                self.logged.add(outcome.acta_id)


# The operators of each capture centre who capture an acta the first and second time:
# their certificates (``cc-01/op-1``...) are what tells them apart, not a field.
FIRST_OPERATOR = "op-1"
SECOND_OPERATOR = "op-2"


def _capture_time(acta: ActaPb) -> float:
    return float(acta.provenance.captured_time.seconds)


class _Paced:
    """Releases actas at ``speed`` times the pace of their capture times (0: at once)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first: float | None = None
        self.start = time.monotonic()

    def delay(self, acta: ActaPb) -> float:
        if self.speed <= 0:
            return 0.0
        t = _capture_time(acta)
        if self.first is None:
            self.first = t
        due = self.start + max(0.0, t - self.first) / self.speed
        return max(0.0, due - time.monotonic())


async def replay(
    stack: Stack,
    actas: Iterator[ActaPb],
    stats: CaptureStats,
    *,
    speed: float = 0.0,
    double_capture: bool = True,
    centres: list[str] | None = None,
) -> CaptureStats:
    """Submit ``actas`` through the edge with the capture centres' certificates.

    Args:
        stack: the running stack.
        actas: in arrival order.
        stats: updated as answers arrive (read it from another task for progress).
        speed: replay pace relative to the actas' capture times; 0 for as fast as possible.
        double_capture: send each acta a second time from another operator.
        centres: capture centres to use (default: every one in the PKI). Each acta is
            sent by the centre its casilla is assigned to (its provenance's centre in
            the actas file), with the certificate of that centre's first operator, and
            again with the second operator's.

    Returns:
        ``stats``, finished.

    Raises:
        ExceptionGroup: of veritally.capture.CaptureError, when a batch failed with a
            non-retryable status or kept failing beyond the retry budget.
    """
    names = centres or [i.name for i in stack.pki.identities("capture") if "/" not in i.name]
    if not names:
        raise ValueError("the PKI has no capture-centre identity")
    known = set(names)
    stats.started = time.monotonic()
    # Each centre's captures travel on its operators' channels (their certificates are
    # their identities): the first operator's, then the second's for double capture.
    operators = [FIRST_OPERATOR, SECOND_OPERATOR] if double_capture else [FIRST_OPERATOR]
    client = CaptureClient(
        target=stack.endpoints.edge,
        operators={n: [Operator(tls=stack.tls(f"{n}/{op}")) for op in operators] for n in names},
        config=CaptureConfig(batch=BATCH, streams=STREAMS_PER_CENTRE),
        counters=stats.counters,
    )

    async def produce() -> AsyncIterator[tuple[str, ingest_pb2.SubmitActasRequest]]:
        paced = _Paced(speed)
        batcher = Batcher(BATCH)
        last_flush = last_yield = time.monotonic()
        for acta in actas:
            wait = paced.delay(acta)
            if wait > 0:
                # A paced replay holds an acta at most about FLUSH_S: what is pending
                # goes out before a long wait, or once it has waited that long. Fewer,
                # fuller batches keep each centre within its call budget at Envoy.
                if wait >= FLUSH_S or time.monotonic() - last_flush >= FLUSH_S:
                    for item in batcher.flush():
                        yield item
                    last_flush = time.monotonic()
                await asyncio.sleep(wait)
            cc = acta.provenance.capture_centre_id
            name = cc if cc in known else names[zlib.crc32(cc.encode()) % len(names)]
            stats.actas += 1
            stats.captures += len(operators)
            if (message := batcher.add(name, acta)) is not None:
                yield name, message
            now = time.monotonic()
            if now - last_yield > FLUSH_S:
                last_yield = now
                await asyncio.sleep(0)  # let the senders run while parsing
        for item in batcher.flush():
            yield item

    async with client:
        await client.run(produce(), stats.answered)
    stats.finished = time.monotonic()
    return stats
