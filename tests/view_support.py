"""The JSON view's figures next to the SDK's: each side read into the same plain form.

:func:`json_race` reads one contest of the JSON view as a reader of the JSON would (proto3
JSON writes 64-bit integers as strings; shares are decimal strings), :func:`sdk_race` reads
the SDK's named results of the same contest and unit; a test compares the two.
:func:`view_json` prints a ``CutView`` as the transcoder prints it (field names as in the
proto, fields at their default values included).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from google.protobuf import json_format

from veritally_client import RaceResult
from veritally_client.protocol.pb import publication_pb2

__all__ = ["NOMINATED_BY", "json_race", "sdk_race", "view_json"]

#: The JSON's nomination enum names, as the SDK names nominations.
NOMINATED_BY = {
    "NOMINATION_PARTY": "party",
    "NOMINATION_COALITION": "coalition",
    "NOMINATION_INDEPENDENT": "independent",
}


def view_json(view: publication_pb2.CutView) -> dict[str, Any]:
    """``view`` as the JSON view's transcoder prints it (its print options)."""
    return json_format.MessageToDict(
        view, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def json_race(contest: Mapping[str, Any]) -> dict[str, object]:
    """One contest of the JSON view, as plain figures."""
    c = contest["completeness"]
    return {
        "contest": (contest["contest_id"], contest["contest_name"]),
        "race": (contest["race_id"], contest["race_name"]),
        "options": [
            (o["option_id"], o["name"], tuple(o["party_ids"]), int(o["votes"]), Decimal(o["share"]))
            for o in contest["options"]
        ],
        "candidates": [
            (
                x["candidate_id"],
                x["name"],
                NOMINATED_BY[x["nominated_by"]],
                x["nominator_id"],
                x["nominator_name"],
                tuple(x["party_ids"]),
                int(x["votes"]),
                Decimal(x["share"]),
            )
            for x in contest["candidates"]
        ],
        "parties": [
            (p["party_id"], p["name"], p["abbreviation"], int(p["votes"]), Decimal(p["share"]))
            for p in contest["parties"]
        ],
        "others": (
            int(contest["unregistered_votes"]),
            Decimal(contest["unregistered_share"]),
            int(contest["null_votes"]),
            Decimal(contest["null_share"]),
            int(contest["total_votes"]),
        ),
        "completeness": (
            int(c["actas_expected"]),
            int(c["actas_registered"]),
            int(c["actas_out_of_catalogue"]),
            int(c["actas_captured"]),
            Decimal(c["captured_percent"]),
            int(c["actas_counted"]),
            Decimal(c["counted_percent"]),
            int(c["actas_not_counted"]),
            tuple((n["reason"], int(n["actas"])) for n in c["not_counted"]),
            int(c["actas_inconsistent"]),
            Decimal(c["inconsistent_percent"]),
            int(c["nominal_list_counted"]),
            int(c["total_votes_with_special"]),
            int(c["total_votes_without_special"]),
            Decimal(c["participation_percent"]),
        ),
    }


def sdk_race(race: RaceResult) -> dict[str, object]:
    """The SDK's named results of one contest in one unit, as plain figures."""
    c = race.completeness
    return {
        "contest": (race.contest_id, race.contest_name),
        "race": (race.race_id, race.race_name),
        "options": [(o.id, o.name, o.party_ids, o.votes, o.share) for o in race.options],
        "candidates": [
            (
                x.id,
                x.name,
                x.nominated_by,
                x.nominator_id,
                x.nominator_name,
                x.party_ids,
                x.votes,
                x.share,
            )
            for x in race.candidates
        ],
        "parties": [(p.id, p.name, p.abbreviation, p.votes, p.share) for p in race.parties],
        "others": (
            race.unregistered_votes,
            race.unregistered_share,
            race.null_votes,
            race.null_share,
            race.total_votes,
        ),
        "completeness": (
            c.expected,
            c.registered,
            c.out_of_catalogue,
            c.captured,
            c.captured_percent,
            c.counted,
            c.counted_percent,
            c.not_counted,
            tuple(
                (f"NOT_COUNTED_REASON_{reason.upper()}", actas)
                for reason, actas in c.not_counted_by_reason
            ),
            c.inconsistent,
            c.inconsistent_percent,
            c.nominal_list_counted,
            c.total_votes_with_special,
            c.total_votes_without_special,
            c.participation,
        ),
    }
