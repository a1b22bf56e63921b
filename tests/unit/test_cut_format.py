"""The cut record's bytes: veritally_client._cut writes them (for publication's cutter)
and reads them (for the verifier); what one writes the other reads back unchanged, and
what no writer would produce is rejected with the SDK's typed error."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veritally_client._cut import (
    cut_leaf_bytes,
    format_cut_time,
    ingest_records_of,
    parse_cut_leaf,
    parse_cut_time,
)
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._leaf import parse_leaf

# Cut times a publisher could write: aware, any offset, 1970-9999 (RFC 3339's years).
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
_TIMES = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(9999, 12, 30),
    timezones=_OFFSETS,
)


@given(when=_TIMES)
def test_cut_time_round_trips_at_millisecond_precision(when: dt.datetime) -> None:
    text = format_cut_time(when)
    parsed = parse_cut_time(text)
    assert parsed.tzinfo == dt.UTC
    assert parsed == when.replace(microsecond=when.microsecond // 1000 * 1000)
    assert format_cut_time(parsed) == text


def test_cut_time_of_a_fixed_instant() -> None:
    text = "2026-06-02T20:03:04.500Z"
    assert parse_cut_time(text) == dt.datetime(2026, 6, 2, 20, 3, 4, 500000, tzinfo=dt.UTC)
    # Other publishers may write seconds only; the reader keeps accepting them.
    assert parse_cut_time("2026-06-02T20:03:04Z") == dt.datetime(
        2026, 6, 2, 20, 3, 4, tzinfo=dt.UTC
    )


def test_format_cut_time_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_cut_time(dt.datetime(2026, 6, 2, 20))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Z",
        "2026-06-02T20:03:04.500+00:00",  # an offset, not Z
        "2026-06-02T14:03:04.500-06:00",
        "2026-06-02 20:03:04.500Z",  # no T
        "2026-06-02T20:03:04.500z",
        "2026-13-02T20:03:04.500Z",  # month 13
        "2026-06-02T25:03:04.500Z",
        "yesterdayTZ",
        "2026-06-02T20:03:04.500ZZ",
    ],
)
def test_rejects_a_cut_time_that_is_not_rfc3339_utc(text: str) -> None:
    with pytest.raises(MalformedDataError):
        parse_cut_time(text)


@given(
    cut_number=st.integers(1, 2**64 - 1),
    acta_records=st.integers(0, 2**40),
    lag=st.none() | st.integers(0, 2**20),
    when=_TIMES,
    digest=st.binary(min_size=32, max_size=32),
)
def test_cut_leaf_round_trips(
    cut_number: int, acta_records: int, lag: int | None, when: dt.datetime, digest: bytes
) -> None:
    ingest = None if lag is None else acta_records + lag
    written = cut_leaf_bytes(
        cut_number=cut_number,
        cut_time=format_cut_time(when),
        acta_records=acta_records,
        results_sha256=digest,
        ingest_records=ingest,
    )
    record = parse_cut_leaf(written)
    assert ingest_records_of(record) == ingest
    again = cut_leaf_bytes(
        cut_number=record.cut_number,
        cut_time=record.cut_time,
        acta_records=record.acta_records,
        results_sha256=record.results_sha256,
        ingest_records=ingest_records_of(record),
    )
    assert again == written
    assert parse_cut_leaf(again) == record
    assert parse_leaf(written).cut_record == record


def test_parse_cut_leaf_rejects_an_acta_record_leaf() -> None:
    acta_leaf = acta_pb2.LogLeaf(
        acta_record=acta_pb2.ActaRecord(acta_id="C1/P", revision=1)
    ).SerializeToString(deterministic=True)
    with pytest.raises(MalformedDataError, match="expected a cut record"):
        parse_cut_leaf(acta_leaf)


@pytest.mark.parametrize("leaf", [b"", b"\x12\x05ab", b"\xff\xff\xff", b"\x12\x02\x0a\xff"])
def test_parse_cut_leaf_rejects_bytes_that_are_not_a_cut_leaf(leaf: bytes) -> None:
    with pytest.raises(MalformedDataError):
        parse_cut_leaf(leaf)
