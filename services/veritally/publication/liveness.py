"""The stall alarm of publication: a log that stays behind ingest without moving on.

A heartbeat cut proves that publication is alive, not that the pipeline is. Every
interval the scheduler tells :class:`StallWatch` how many acta records the log covers and
how many ingest had accepted (aggregation's figure, the one signed into the cut record).
When the log is behind and has not moved on for ``STALL_ALARM_INTERVALS`` intervals in
a row, every further interval returns a :class:`Stall`, which the scheduler logs at ERROR
until the log moves on or catches up. Pure: no IO, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STALL_ALARM_INTERVALS", "Stall", "StallWatch"]

#: Intervals in a row in which the log is behind ingest and covers no new record before
#: the alarm: a burst is absorbed within one or two intervals (aggregation counts tens of
#: thousands of records a second), so three without any progress is a stuck pipeline.
STALL_ALARM_INTERVALS = 3


@dataclass(frozen=True, kw_only=True)
class Stall:
    """The log is stuck behind ingest.

    Attributes:
        acta_records: acta records the log covers (unchanged for ``intervals``).
        ingest_records: acta records ingest had accepted, as aggregation reports.
        intervals: intervals in a row without progress while behind.
    """

    acta_records: int
    ingest_records: int
    intervals: int

    @property
    def lag_records(self) -> int:
        """Records ingest accepted that the log does not cover."""
        return self.ingest_records - self.acta_records


class StallWatch:
    """Counts the intervals in which the log is behind ingest and does not move on."""

    def __init__(self, *, alarm_after: int = STALL_ALARM_INTERVALS) -> None:
        """Args:
        alarm_after: intervals in a row without progress, while behind, before
            :meth:`observe` returns a :class:`Stall`.

        Raises:
            ValueError: if ``alarm_after`` is below 1.
        """
        if alarm_after < 1:
            raise ValueError("alarm_after must be at least 1")
        self._alarm_after = alarm_after
        self._acta_records: int | None = None
        self._intervals = 0

    def observe(self, *, acta_records: int, ingest_records: int) -> Stall | None:
        """Record one interval; a :class:`Stall` if the alarm is due this interval.

        Args:
            acta_records: acta records the log covers after this interval's cut.
            ingest_records: acta records ingest had accepted, as reported with the
                results this interval.
        """
        moved_on = self._acta_records is None or acta_records > self._acta_records
        self._acta_records = acta_records
        if ingest_records <= acta_records or moved_on:
            self._intervals = 0
            return None
        self._intervals += 1
        if self._intervals < self._alarm_after:
            return None
        return Stall(
            acta_records=acta_records,
            ingest_records=ingest_records,
            intervals=self._intervals,
        )
