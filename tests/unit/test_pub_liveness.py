"""Publication's stall alarm: a log behind ingest that does not move on for N intervals
alarms at every further interval; a log that moves on, or is not behind, never does."""

from __future__ import annotations

import pytest

from veritally.publication.liveness import STALL_ALARM_INTERVALS, Stall, StallWatch


def test_heartbeats_over_a_stuck_pipeline_alarm_every_interval_with_the_lag() -> None:
    watch = StallWatch()
    results = [watch.observe(acta_records=10, ingest_records=10 + n) for n in range(1, 7)]
    # The first look starts the count; the alarm is due after N intervals without progress.
    due = STALL_ALARM_INTERVALS + 1
    assert results[: due - 1] == [None] * (due - 1)
    assert results[due - 1 :] == [
        Stall(acta_records=10, ingest_records=10 + n, intervals=n - 1) for n in range(due, 7)
    ]
    assert results[-1] is not None
    assert results[-1].lag_records == 6


def test_a_log_that_moves_on_while_behind_never_alarms() -> None:
    watch = StallWatch()
    assert all(
        watch.observe(acta_records=n, ingest_records=n + 500) is None for n in range(0, 100, 3)
    )


def test_an_idle_log_that_covers_everything_never_alarms() -> None:
    watch = StallWatch()
    assert all(watch.observe(acta_records=5, ingest_records=5) is None for _ in range(20))


def test_progress_resets_the_count() -> None:
    watch = StallWatch(alarm_after=2)
    for _ in range(3):
        watch.observe(acta_records=1, ingest_records=4)
    assert watch.observe(acta_records=1, ingest_records=4) is not None
    assert watch.observe(acta_records=2, ingest_records=4) is None
    assert watch.observe(acta_records=2, ingest_records=4) is None
    assert watch.observe(acta_records=2, ingest_records=4) is not None


def test_refuses_an_alarm_that_could_never_wait() -> None:
    with pytest.raises(ValueError, match="alarm_after"):
        StallWatch(alarm_after=0)
