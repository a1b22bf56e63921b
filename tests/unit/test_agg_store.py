"""Aggregation's store keeps leaves and cursor together: appends must continue the
cursor exactly, and a replay returns the leaves in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from veritally.aggregation.store import AggregationStore, CursorMismatchError


def test_append_advances_cursor_and_replay_keeps_order(tmp_path: Path) -> None:
    store = AggregationStore(tmp_path / "agg.db")
    store.append(0, [b"a", b"b"])
    store.append(2, [b"c"])
    assert store.cursor() == 3
    store.close()
    reopened = AggregationStore(tmp_path / "agg.db")
    assert reopened.cursor() == 3
    assert list(reopened.replay()) == [b"a", b"b", b"c"]
    reopened.close()


@pytest.mark.parametrize("first", [0, 1, 3])
def test_rejects_a_page_that_does_not_continue_the_cursor(tmp_path: Path, first: int) -> None:
    store = AggregationStore(tmp_path / "agg.db")
    store.append(0, [b"a", b"b"])
    with pytest.raises(CursorMismatchError):
        store.append(first, [b"x"])
    assert store.cursor() == 2
    assert list(store.replay()) == [b"a", b"b"]
    store.close()
