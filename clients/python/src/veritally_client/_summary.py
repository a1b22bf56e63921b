"""The results summary of a cut: the one module that writes its bytes and reads them back.

A cut's Results blob holds every national, state and district unit (~470 KB on the
national federal night); the front page of a newsroom shows the nation and the states.
The summary (``veritally.v1.ResultsSummary``, docs/adr/0092-results-summary.md) holds
those figures only, with no names (candidates in their race's order, parties as
positions in the definition's party list: names are resolved through the definition the
client already holds, verified by its digest), so it stays small enough to read on every
poll.

* :func:`results_summary_bytes` writes it: a pure function of the Results bytes and the
  definition's party order, used by the publisher that signs its digest in the cut
  record and by a recount that checks that digest against the results it recomputes;
* :func:`verify_summary` reads it back: the bytes are bounded, hashed against the signed
  digest BEFORE they are parsed, then checked against the cut record they belong to.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from veritally_client._errors import DigestMismatchError, MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2

__all__ = ["MAX_SUMMARY_BYTES", "results_summary_bytes", "verify_summary"]

ResultsPb = results_pb2.Results
ResultsSummaryPb = results_pb2.ResultsSummary
ContestSummaryPb = results_pb2.ContestSummary

# The summary of the national federal night (1 + 32 units, 3 contests each) is about
# 11 KiB; a summary is refused above 64 KiB, four times the 16 KiB a read is meant to
# cost, so that a larger election still fits and a hostile one cannot make a client hash
# megabytes on every poll.
MAX_SUMMARY_BYTES = 64 * 1024

_SUMMARISED_LEVELS = (results_pb2.LEVEL_NATIONAL, results_pb2.LEVEL_STATE)


def _contest(totals: results_pb2.ContestTotals, positions: dict[str, int]) -> ContestSummaryPb:
    done = totals.completeness
    try:
        party_positions = [positions[p.party_id] for p in totals.parties]
    except KeyError as e:
        raise ValueError(f"party {e.args[0]!r} of the results is not in the party order") from e
    return ContestSummaryPb(
        contest_id=totals.contest_id,
        race_id=totals.race_id,
        candidate_votes=[c.votes for c in totals.candidates],
        candidate_share_percent_e4=[c.share_percent_e4 for c in totals.candidates],
        party_positions=party_positions,
        party_votes=[p.votes for p in totals.parties],
        party_share_percent_e4=[p.share_percent_e4 for p in totals.parties],
        unregistered_votes=totals.unregistered_votes,
        null_votes=totals.null_votes,
        total_votes=totals.total_votes,
        actas_expected=done.actas_expected,
        actas_captured=done.actas_captured,
        actas_counted=done.actas_counted,
        counted_percent_e4=done.counted_percent_e4,
        turnout_percent_e4=done.turnout_percent_e4,
    )


def results_summary_bytes(results: bytes, *, party_ids: Sequence[str]) -> bytes:
    """The serialized ``ResultsSummary`` of a serialized Results blob.

    Args:
        results: the Results bytes (already verified or computed by the caller).
        party_ids: the definition's parties in its order (``ElectionIndex.party_ids``).

    Returns:
        The deterministic serialization, whose SHA-256 a cut record signs.

    Raises:
        ValueError: if the results do not parse or name a party not in ``party_ids``
            (a caller bug: the results and the definition must be each other's).
    """
    try:
        parsed = ResultsPb.FromString(results)
    except DecodeError as e:
        raise ValueError(f"the results do not parse: {e}") from e
    positions = {party: i for i, party in enumerate(party_ids)}
    summary = ResultsSummaryPb(
        election_id=parsed.election_id,
        definition_sha256=parsed.definition_sha256,
        acta_records=parsed.acta_records,
        final=parsed.final,
        test=parsed.test,
    )
    for unit in parsed.units:
        if unit.level not in _SUMMARISED_LEVELS:
            continue
        summary.units.add(
            level=unit.level,
            unit_id=unit.unit_id,
            contests=[_contest(c, positions) for c in unit.contests],
        )
    return summary.SerializeToString(deterministic=True)


def verify_summary(data: bytes, *, record: acta_pb2.CutRecord) -> results_pb2.ResultsSummary:
    """The summary ``data``, checked against the (verified) cut record that signs it.

    Steps: (1) the record signs a summary and ``data`` is within
    :data:`MAX_SUMMARY_BYTES`; (2) ``data`` hashes to ``record.summary_sha256``, checked
    before parsing; (3) it parses and covers the record's acta records.

    Raises:
        MalformedDataError: the record signs no summary, the bytes are too large, do not
            parse, or cover other acta records than the cut.
        DigestMismatchError: the bytes are not the summary the cut signed.
    """
    # (1) a signed summary, bounded before hashing
    if len(record.summary_sha256) != hashlib.sha256().digest_size:
        raise MalformedDataError(f"cut {record.cut_number} signs no results summary")
    if len(data) > MAX_SUMMARY_BYTES:
        raise MalformedDataError(
            f"results summary is {len(data)} bytes, at most {MAX_SUMMARY_BYTES}"
        )
    # (2) the bytes signed, before parsing
    digest = hashlib.sha256(data).digest()
    if not hmac.compare_digest(digest, record.summary_sha256):
        raise DigestMismatchError(
            f"results summary hashes to {digest.hex()}, cut {record.cut_number} signed "
            f"{record.summary_sha256.hex()}"
        )
    # (3) parsed, and about this cut
    try:
        summary = ResultsSummaryPb.FromString(data)
    except DecodeError as e:
        raise MalformedDataError(f"results summary does not parse: {e}") from e
    if summary.acta_records != record.acta_records:
        raise MalformedDataError(
            f"results summary covers {summary.acta_records} acta records, cut "
            f"{record.cut_number} {record.acta_records}"
        )
    return summary
