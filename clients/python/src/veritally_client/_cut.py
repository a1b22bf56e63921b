"""The cut record leaf: the one module that writes its bytes and reads them back, shared
by the publisher that signs it and every verifier that reads it.

* :func:`format_cut_time` writes the cut time (RFC 3339 in UTC, ``Z``, milliseconds) and
  :func:`parse_cut_time` reads it;
* :func:`cut_leaf_bytes` writes the leaf and :func:`parse_cut_leaf` reads it (a
  ``LogLeaf`` holding a ``CutRecord``; the envelope itself is ``veritally_client._leaf``);
* :func:`ingest_records_of` and :func:`check_ingest_records` read its liveness figure.

A cut record says what a cut covers (``acta_records``) and, when the publisher reports
it, how many acta records ingest had accepted as far as the pipeline knew when the cut
was made (``ingest_records``, docs/adr/0054-ingest-records-in-the-cut-record.md). Their
difference is the cut's lag behind ingest. A reader checks, on the record alone, that the
figure is not below what the cut covers (ingest's log holds every record aggregation
counted); across cuts, that it never goes back and is never dropped once reported.
"""

from __future__ import annotations

import datetime as dt

from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._leaf import parse_leaf

__all__ = [
    "check_ingest_records",
    "cut_leaf_bytes",
    "format_cut_time",
    "ingest_records_of",
    "lag_records_of",
    "parse_cut_leaf",
    "parse_cut_time",
]

LogLeafPb = acta_pb2.LogLeaf
CutRecordPb = acta_pb2.CutRecord


def format_cut_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and millisecond precision.

    Raises:
        ValueError: if ``when`` is naive.
    """
    if when.tzinfo is None:
        raise ValueError("cut times must be timezone-aware")
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_cut_time(value: str) -> dt.datetime:
    """Parse a cut record's RFC 3339 UTC time (``...Z``).

    Raises:
        MalformedDataError: if it is not an RFC 3339 time in UTC with a ``Z`` suffix.
    """
    if not value.endswith("Z") or "T" not in value:
        raise MalformedDataError(f"cut_time {value!r} is not RFC 3339 UTC with a Z suffix")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise MalformedDataError(f"cut_time {value!r} is not RFC 3339") from e
    return parsed.astimezone(dt.UTC)


def cut_leaf_bytes(
    *,
    cut_number: int,
    cut_time: str,
    acta_records: int,
    results_sha256: bytes,
    ingest_records: int | None,
    summary_sha256: bytes = b"",
) -> bytes:
    """The serialized ``LogLeaf`` of a cut record, exactly as it is hashed into the log.

    Args:
        cut_number: 1 for the first cut, then consecutive.
        cut_time: RFC 3339 UTC with a ``Z`` suffix.
        acta_records: acta records the cut covers.
        results_sha256: SHA-256 of the results blob (32 bytes).
        ingest_records: ingest's accepted records as last known, or None to leave the
            figure out (a publisher that does not report it).
        summary_sha256: SHA-256 of the results summary (32 bytes), or empty for a cut
            that signs none (docs/adr/0092-results-summary.md).

    Raises:
        ValueError: if ``ingest_records`` is below ``acta_records`` (a caller bug: the
            log ingest accepted holds every record the cut covers).
    """
    record = CutRecordPb(
        cut_number=cut_number,
        cut_time=cut_time,
        acta_records=acta_records,
        results_sha256=results_sha256,
        summary_sha256=summary_sha256,
    )
    if summary_sha256 and len(summary_sha256) != len(results_sha256):
        raise ValueError("summary_sha256 is not a SHA-256 digest")
    if ingest_records is not None:
        if ingest_records < acta_records:
            raise ValueError(
                f"ingest_records {ingest_records} is below acta_records {acta_records}"
            )
        record.ingest_records = ingest_records
    return LogLeafPb(cut_record=record).SerializeToString(deterministic=True)


def parse_cut_leaf(leaf: bytes) -> acta_pb2.CutRecord:
    """The cut record of a serialized ``LogLeaf``, which must hold one.

    Only the envelope is checked; what the record says is the caller's to judge.

    Raises:
        MalformedDataError: if the bytes do not parse or the leaf holds no cut record.
    """
    parsed = parse_leaf(leaf)
    kind = parsed.WhichOneof("kind")
    if kind != "cut_record":
        raise MalformedDataError(f"cut leaf holds {kind!r}, expected a cut record")
    return parsed.cut_record


def ingest_records_of(record: acta_pb2.CutRecord) -> int | None:
    """The record's ``ingest_records``, or None if the publisher did not report it."""
    return record.ingest_records if record.HasField("ingest_records") else None


def lag_records_of(record: acta_pb2.CutRecord) -> int | None:
    """``ingest_records - acta_records``: how many records ingest had accepted that the
    cut does not cover; None if the figure is not reported."""
    ingest = ingest_records_of(record)
    return None if ingest is None else ingest - record.acta_records


def check_ingest_records(
    record: acta_pb2.CutRecord, *, previous: int | None, previous_cut: int
) -> None:
    """Check the figure of ``record`` on its own and against an earlier cut's.

    Args:
        record: the cut record.
        previous: the figure of an earlier verified cut of the same log (None if it had
            none, or there is no earlier cut).
        previous_cut: that cut's number (0 if there is none); the check against it
            applies only when ``record`` is a later cut.

    Raises:
        MalformedDataError: the figure is below what the cut covers, went back from the
            earlier cut's, or is missing after an earlier cut reported one.
    """
    ingest = ingest_records_of(record)
    if ingest is not None and ingest < record.acta_records:
        raise MalformedDataError(
            f"cut {record.cut_number} covers {record.acta_records} acta records but says "
            f"ingest had accepted only {ingest}"
        )
    if previous is None or record.cut_number <= previous_cut:
        return
    if ingest is None:
        raise MalformedDataError(
            f"cut {record.cut_number} does not say how many records ingest had accepted; "
            f"cut {previous_cut} did"
        )
    if ingest < previous:
        raise MalformedDataError(
            f"cut {record.cut_number} says ingest had accepted {ingest} records, fewer than "
            f"the {previous} of cut {previous_cut}: ingest's log only grows"
        )
