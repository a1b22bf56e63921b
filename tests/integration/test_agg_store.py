"""Aggregation's store keeps leaves and cursor together: appends must continue the
cursor exactly, and a replay returns the leaves in order. Each test runs on SQLite and
on PostgreSQL (``store_location``)."""

from __future__ import annotations

import pytest

from veritally.aggregation.store import AggregationStore, CursorMismatchError
from veritally.storage import DbLocation


def test_append_advances_cursor_and_replay_keeps_order(store_location: DbLocation) -> None:
    store = AggregationStore(store_location)
    store.append(0, [b"a", b"b"])
    store.append(2, [b"c"])
    assert store.cursor() == 3
    store.close()
    reopened = AggregationStore(store_location)
    assert reopened.cursor() == 3
    assert list(reopened.replay()) == [b"a", b"b", b"c"]
    reader = reopened.reader()
    assert reader.page(1, 3, max_leaves=10, max_bytes=1 << 20) == [b"b", b"c"]
    reader.close()
    reopened.close()


@pytest.mark.parametrize("first", [0, 1, 3])
def test_rejects_a_page_that_does_not_continue_the_cursor(
    store_location: DbLocation, first: int
) -> None:
    store = AggregationStore(store_location)
    store.append(0, [b"a", b"b"])
    with pytest.raises(CursorMismatchError):
        store.append(first, [b"x"])
    assert store.cursor() == 2
    assert list(store.replay()) == [b"a", b"b"]
    store.close()


def test_rejects_a_second_writer_appending_at_a_stale_cursor(store_location: DbLocation) -> None:
    # Two aggregation processes on one store (a restarted one while the old one still
    # runs) both append the page they read at cursor 0: the second must fail rather
    # than store the records twice.
    first = AggregationStore(store_location)
    second = AggregationStore(store_location)
    first.append(0, [b"a"])
    with pytest.raises(CursorMismatchError):
        second.append(0, [b"a"])
    assert list(second.replay()) == [b"a"]
    first.close()
    second.close()
