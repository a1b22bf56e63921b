"""Pages of the acta log are capped by bytes, and a stream never stalls on a big leaf."""

from __future__ import annotations

from veritally.storage import capped_page


def _rows(*sizes: int) -> list[tuple[bytes]]:
    return [(bytes([i]) * size,) for i, size in enumerate(sizes)]


def test_page_stops_before_the_leaf_that_would_pass_the_cap() -> None:
    page = capped_page(_rows(40, 40, 40), max_bytes=100)
    assert [len(leaf) for leaf in page] == [40, 40]


def test_page_takes_leaves_that_fill_the_cap_exactly() -> None:
    page = capped_page(_rows(50, 50, 1), max_bytes=100)
    assert [len(leaf) for leaf in page] == [50, 50]


def test_first_leaf_is_taken_even_when_larger_than_the_cap() -> None:
    page = capped_page(_rows(500, 1), max_bytes=100)
    assert [len(leaf) for leaf in page] == [500]


def test_page_keeps_log_order_and_content() -> None:
    rows = _rows(3, 2, 1)
    assert capped_page(rows, max_bytes=1_000) == [row[0] for row in rows]


def test_empty_log_gives_an_empty_page() -> None:
    assert capped_page([], max_bytes=100) == []
