"""Flat, database-ready exports of verified results (CSV and JSON).

One CSV row per level x unit x contest x option, like the elex tool: every row carries
the cut it comes from and the unit's completeness figures, so a newsroom can load the
file into a table and key it on (cut_number, level, unit_id, contest_id, option_kind,
option_id). Unregistered-candidate and null votes are rows of their own kind
(``option_kind`` ``"unregistered"`` / ``"null"``, empty ``option_id``) so that summing
the ``votes`` of a contest gives its total. Percentages are exact decimals with four
places, from the signed integers (percent x 10^4); no floats are involved.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from google.protobuf import json_format

from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._navigate import level_name
from veritally_client._verify import VerifiedCut

__all__ = ["CSV_COLUMNS", "csv_rows", "percent_text", "to_json", "write_csv", "write_json"]

#: The CSV header, in order.
CSV_COLUMNS = (
    "cut_number",
    "cut_time",
    "tree_size",
    "acta_records",
    "final",
    "level",
    "unit_id",
    "contest_id",
    "option_kind",
    "option_id",
    "votes",
    "contest_total_votes",
    "actas_expected",
    "actas_captured",
    "actas_counted",
    "actas_not_counted",
    "captured_percent",
    "counted_percent",
    "nominal_list_counted",
    "turnout_percent",
)


def percent_text(value_e4: int) -> str:
    """A percent x 10^4 integer as an exact decimal string: 931234 -> "93.1234"."""
    return f"{value_e4 // 10_000}.{value_e4 % 10_000:04d}"


def csv_rows(
    cut: VerifiedCut, *, extra_units: Iterable[results_pb2.UnitResults] = ()
) -> Iterator[dict[str, str]]:
    """The rows of a cut's results (blob units, then ``extra_units`` from a recount)."""
    base = {
        "cut_number": str(cut.cut_number),
        "cut_time": cut.cut_record.cut_time,
        "tree_size": str(cut.tree_size),
        "acta_records": str(cut.acta_records),
        "final": "true" if cut.final else "false",
    }
    units: Iterable[results_pb2.UnitResults] = list(cut.results.units) + list(extra_units)
    for unit in units:
        for contest in unit.contests:
            c = contest.completeness
            common = {
                **base,
                "level": level_name(unit.level),
                "unit_id": unit.unit_id,
                "contest_id": contest.contest_id,
                "contest_total_votes": str(contest.total_votes),
                "actas_expected": str(c.actas_expected),
                "actas_captured": str(c.actas_captured),
                "actas_counted": str(c.actas_counted),
                "actas_not_counted": str(sum(n.actas for n in c.not_counted)),
                "captured_percent": percent_text(c.captured_percent_e4),
                "counted_percent": percent_text(c.counted_percent_e4),
                "nominal_list_counted": str(c.nominal_list_counted),
                "turnout_percent": percent_text(c.turnout_percent_e4),
            }
            for option in contest.options:
                yield {
                    **common,
                    "option_kind": "option",
                    "option_id": option.option_id,
                    "votes": str(option.votes),
                }
            yield {
                **common,
                "option_kind": "unregistered",
                "option_id": "",
                "votes": str(contest.unregistered_votes),
            }
            yield {
                **common,
                "option_kind": "null",
                "option_id": "",
                "votes": str(contest.null_votes),
            }


def write_csv(
    cut: VerifiedCut, out: TextIO, *, extra_units: Iterable[results_pb2.UnitResults] = ()
) -> int:
    """Write the CSV export of ``cut`` to ``out``; returns the number of data rows."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in csv_rows(cut, extra_units=extra_units):
        writer.writerow(row)
        n += 1
    return n


def _unit_json(unit: results_pb2.UnitResults) -> dict[str, Any]:
    doc = json_format.MessageToDict(
        unit,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        use_integers_for_enums=False,
    )
    doc["level"] = level_name(unit.level)
    for contest in doc.get("contests", []):
        comp = contest.get("completeness", {})
        for key in ("captured_percent_e4", "counted_percent_e4", "turnout_percent_e4"):
            if key in comp:
                comp[key.removesuffix("_e4")] = percent_text(int(comp[key]))
        for nc in comp.get("not_counted", []):
            nc["reason"] = acta_pb2.NotCountedReason.Name(
                acta_pb2.NotCountedReason.Value(nc["reason"])
            )
    return doc


def to_json(
    cut: VerifiedCut, *, extra_units: Iterable[results_pb2.UnitResults] = ()
) -> dict[str, Any]:
    """The JSON export of ``cut``: what was verified, and the results by unit.

    64-bit counts are JSON numbers here (they fit in 53 bits for any election).
    """
    units = [_unit_json(u) for u in list(cut.results.units) + list(extra_units)]
    for u in units:
        for contest in u.get("contests", []):
            for key in ("unregistered_votes", "null_votes", "total_votes"):
                contest[key] = int(contest.get(key, 0))
            for opt in contest.get("options", []):
                opt["votes"] = int(opt.get("votes", 0))
            comp = contest.get("completeness", {})
            for key, value in list(comp.items()):
                if key != "not_counted" and isinstance(value, str) and value.isdigit():
                    comp[key] = int(value)
            for nc in comp.get("not_counted", []):
                nc["actas"] = int(nc.get("actas", 0))
    return {
        "cut": {
            "cut_number": cut.cut_number,
            "cut_time": cut.cut_record.cut_time,
            "tree_size": cut.tree_size,
            "root_hash": cut.root_hash.hex(),
            "acta_records": cut.acta_records,
            "ingest_records": cut.ingest_records,
            "results_sha256": cut.cut_record.results_sha256.hex(),
            "checkpoint": cut.note.decode("utf-8"),
        },
        "election_id": cut.results.election_id,
        "definition_sha256": cut.definition_sha256.hex(),
        "final": cut.final,
        "units": units,
    }


def write_json(
    cut: VerifiedCut, out: TextIO, *, extra_units: Iterable[results_pb2.UnitResults] = ()
) -> None:
    """Write the JSON export of ``cut`` to ``out``."""
    json.dump(to_json(cut, extra_units=extra_units), out, indent=2, sort_keys=False)
    out.write("\n")
