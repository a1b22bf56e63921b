"""Ingest's acta log stays dense on every backend: the store checks, inside the append
transaction, that a batch's records continue the stored log."""

from __future__ import annotations

import pytest

from veritally.ingest.store import IngestStore, SequenceConflictError, Writes
from veritally.storage import DbLocation


def _record(sequence: int) -> tuple[int, str, int, bytes]:
    return (sequence, f"01-01-0001-B1/C{sequence}", 1, b"leaf-%d" % sequence)


@pytest.mark.parametrize("sequences", [[1], [0, 2], [0, 0]])
def test_rejects_a_batch_that_would_leave_a_gap_in_the_log(
    store_location: DbLocation, sequences: list[int]
) -> None:
    store = IngestStore(store_location)
    try:
        with pytest.raises(SequenceConflictError):
            store.commit(Writes(log=[_record(s) for s in sequences]))
        assert store.log_size() == 0
        store.commit(Writes(log=[_record(0), _record(1)]))
        assert store.log_size() == 2
    finally:
        store.close()


def test_rejects_a_second_writer_appending_at_a_stale_position(
    store_location: DbLocation,
) -> None:
    # Two ingest processes on one store, both deciding from a log of 0 records: the
    # second commit must fail, not reuse or skip a position.
    first, second = IngestStore(store_location), IngestStore(store_location)
    try:
        first.commit(Writes(log=[_record(0)]))
        with pytest.raises(SequenceConflictError):
            second.commit(Writes(log=[_record(0)]))
        reader = second.reader()
        assert reader.page(0, max_leaves=10, max_bytes=1 << 20) == [b"leaf-0"]
        reader.close()
    finally:
        first.close()
        second.close()
