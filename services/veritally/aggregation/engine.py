"""Aggregation's domain: the tally of ingest's acta log, its store and its position.

This room owns the totals and how far they reach: rebuilding the tally from the stored
leaves at start, storing and counting each page of ingest's log, the largest log size
ingest has reported, where the follower is stuck, and the pages of counted records
publication streams. It may import the store and the SDK's protocol layer (``Tally``,
``ElectionIndex``); never gRPC, the follower, the servicer or the app. Bad pages are
raised as :class:`~veritally.aggregation.store.CursorMismatchError` or the SDK's
``MalformedDataError``, which the follower handles.

It does two of the follower's steps (:mod:`veritally.aggregation.follower`), under
their numbers there: (1) at startup, rebuild the tally from the stored leaves (the state
at position N is a pure function of the first N records, so replaying them is exact);
(3) for every page, drop any overlap with what is stored, refuse a gap, store the leaves
and the new cursor in one transaction, then apply them to the tally and wake the readers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable

from veritally.aggregation.store import AggregationStore, CursorMismatchError
from veritally.storage import STREAM_PAGE_BYTES, STREAM_PAGE_LEAVES, DbLocation
from veritally_client.protocol import ElectionIndex, Tally

log = logging.getLogger(__name__)

__all__ = ["AggregationEngine"]


def _ignore(seconds: float) -> None:
    """The default commit observer: no metrics."""


class AggregationEngine:
    """The tally, its store, and what the follower of ingest reports into them."""

    def __init__(self, *, election: ElectionIndex, db_path: DbLocation) -> None:
        """Open the store and rebuild the tally from it (step 1).

        Raises:
            veritally_client.MalformedDataError: if a stored leaf is not a valid record.
            RuntimeError: if the store's cursor disagrees with its leaves.
        """
        self.election = election
        self._store = AggregationStore(db_path)
        self._changed = asyncio.Condition()
        self._closed = False
        # The largest log size ingest has reported on its stream since the start.
        self._ingest_log_size = 0
        # The records ingest logged when it closed the night, once it says so.
        self._closed_at: int | None = None
        #: The position the follower is stuck at (step 5), None while it moves on.
        self.stuck_at: int | None = None
        #: Called with the seconds of each page appended to the store (the metrics).
        self.observe_commit: Callable[[float], None] = _ignore
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

    def heard(self, log_size: int, closed_at_records: int | None = None) -> None:
        """Note a log size ingest reported (step 3), and the close of the night when it
        reports one."""
        self._ingest_log_size = max(self._ingest_log_size, log_size)
        if closed_at_records is not None:
            self._closed_at = closed_at_records

    @property
    def final(self) -> bool:
        """Whether ingest closed the night and every record it logged is counted: the
        results are then the night's final ones."""
        return self._closed_at is not None and self.position >= self._closed_at

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
        started = time.perf_counter()
        await asyncio.to_thread(self._store.append, position, fresh)
        self.observe_commit(time.perf_counter() - started)
        for leaf in fresh:
            self.tally.apply_leaf(leaf)
        async with self._changed:
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`end_streams` was called: the follower stops, streams end."""
        return self._closed

    def note_stuck(self) -> bool:
        """Note that the follower is stuck at the current position (step 5).

        Returns:
            True if it was not stuck there already (its health report changes).
        """
        if self.stuck_at == self.position:
            return False
        self.stuck_at = self.position
        return True

    def note_moved_on(self) -> int | None:
        """Note that the follower moved on: the position it was stuck at, or None."""
        was, self.stuck_at = self.stuck_at, None
        return was

    async def aggregated(
        self, from_sequence: int, *, follow: bool
    ) -> AsyncGenerator[tuple[int, list[bytes]], None]:
        """Pages ``(first_sequence, leaves)`` of the counted records; with ``follow``,
        waits for more (woken by :meth:`consume`) until :meth:`end_streams`."""
        reader = self._store.reader()
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
