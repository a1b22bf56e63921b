"""NIST SP 1500-100 Rev. 2 (Election Results Reporting) JSON from a verified cut.

One ``ElectionReport`` with the election, its parties and coalitions, the geography as
``ReportingUnit`` GpUnits (the nation, states, districts) and one ``CandidateContest`` per
race. The mapping:

* report: ``Format`` ``summary-contest``; ``GeneratedDate`` the cut time (UTC, seconds);
  ``Issuer`` the signed log's origin, ``IssuerAbbreviation`` the election id;
  ``VendorApplicationId`` this export's format name (not a software version, so that every
  client writes the same bytes); ``Status`` ``unofficial-partial``, or
  ``unofficial-complete`` for the final cut (PREP's figures are preliminary, never
  certified); ``IsTest`` the rehearsal flag (``TestType`` ``rehearsal``); the cut number,
  the SHA-256 of the signed results, the tree size and root, and the definition's SHA-256
  as ``ExternalIdentifier`` entries of type ``other``; ``Notes`` the signed checkpoint;
* ``Election``: ``Type`` ``general``, ``StartDate`` = ``EndDate`` = the cut's UTC date
  (the definition carries no election date), ``ElectionScopeId`` the nation;
* GpUnits: the nation (``country``), states (``state``), districts (``congressional``),
  each composed of the units below it;
* ``Party``: each party, and each coalition (``Coalition`` with its ``PartyIds`` and the
  ``ContestIds`` of the races where it nominates a candidate);
* one ``CandidateContest`` per race (``ElectionDistrictId`` the race's unit,
  ``VotesAllowed`` 1, ``TotalSubUnits``/``SubUnitsReported`` the race's expected and
  counted actas, ``CountStatus`` ``in-process`` or ``completed`` on the final cut), with one
  ``CandidateSelection`` per option of the race's ballot: its candidate (``CandidateIds``)
  and the parties it stands for (``EndorsementPartyIds``: a coalition combination endorses
  one candidate by several parties, as fusion voting does), plus a write-in selection
  (``IsWriteIn``) for unregistered candidates. Candidates are in ``Election.Candidate``;
  a candidate's total (PREP's "votos por candidatura") is the sum of its selections;
* ``VoteCounts`` (``Type`` ``total``) of each selection for the race's unit and every unit
  inside it that the signed results hold; null votes (PREP's VOTOS NULOS), which NIST has
  no per-contest field for, are the contest's ``OtherCounts.Overvotes`` per unit, so that
  selections plus that figure give PREP's total.

Ids are prefixed by kind (``gpu-``, ``par-``, ``coa-``, ``con-``, ``can-``, ``sel-``) so
that they are unique across the document. Output is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, TextIO

from veritally_client._election import ElectionIndex, RaceInfo
from veritally_client._export import check_election
from veritally_client._gen.veritally.v1 import results_pb2
from veritally_client._verify import VerifiedCut

__all__ = ["FORMAT_NAME", "to_nist", "write_nist"]

#: ``VendorApplicationId`` of every report: the format of this export.
FORMAT_NAME: Final = "veritally-nist-1500-100-export/1"

_NATIONAL: Final = results_pb2.LEVEL_NATIONAL
_STATE: Final = results_pb2.LEVEL_STATE
_DISTRICT: Final = results_pb2.LEVEL_DISTRICT
_ER: Final = "ElectionResults."


def _gpu(level: int, unit_id: str) -> str:
    if level == _NATIONAL:
        return "gpu-nation"
    if level == _STATE:
        return f"gpu-state-{unit_id}"
    return f"gpu-district-{unit_id}"


def _text(content: str, language: str) -> dict[str, Any]:
    return {
        "@type": _ER + "InternationalizedText",
        "Text": [{"@type": _ER + "LanguageString", "Content": content, "Language": language}],
    }


def _other_id(kind: str, value: str) -> dict[str, Any]:
    return {
        "@type": _ER + "ExternalIdentifier",
        "Type": "other",
        "OtherType": kind,
        "Value": value,
    }


def _party_ref(election: ElectionIndex, nominator: str) -> str:
    if nominator in election.party_ids:
        return f"par-{nominator}"
    return f"coa-{nominator}"


def _gp_units(election: ElectionIndex, language: str) -> list[dict[str, Any]]:
    pb = election.pb
    districts_of: dict[str, list[str]] = {s.id: [] for s in pb.states}
    for d in pb.districts:
        districts_of[d.state_id].append(d.id)
    units: list[dict[str, Any]] = [
        {
            "@id": "gpu-nation",
            "@type": _ER + "ReportingUnit",
            "ComposingGpUnitIds": [_gpu(_STATE, s.id) for s in pb.states],
            "Name": _text(election.name or election.election_id, language),
            "Type": "country",
        }
    ]
    for s in pb.states:
        units.append(
            {
                "@id": _gpu(_STATE, s.id),
                "@type": _ER + "ReportingUnit",
                "ComposingGpUnitIds": [_gpu(_DISTRICT, d) for d in districts_of[s.id]],
                "ExternalIdentifier": [_other_id("veritally-state-id", s.id)],
                "Name": _text(s.name or s.id, language),
                "Type": "state",
            }
        )
    for d in pb.districts:
        units.append(
            {
                "@id": _gpu(_DISTRICT, d.id),
                "@type": _ER + "ReportingUnit",
                "ExternalIdentifier": [_other_id("veritally-district-id", d.id)],
                "Name": _text(d.name or d.id, language),
                "Type": "congressional",
            }
        )
    return units


def _parties(election: ElectionIndex, language: str) -> list[dict[str, Any]]:
    parties: list[dict[str, Any]] = [
        {
            "@id": f"par-{p.id}",
            "@type": _ER + "Party",
            "Abbreviation": _text(p.abbreviation or p.id, language),
            "Name": _text(p.name or p.id, language),
        }
        for p in election.pb.parties
    ]
    for coalition in election.pb.coalitions:
        contests = [
            f"con-{race.id}"
            for race in election.races
            if any(c.nominator_id == coalition.id for c in race.candidates)
        ]
        parties.append(
            {
                "@id": f"coa-{coalition.id}",
                "@type": _ER + "Coalition",
                "ContestIds": contests,
                "Name": _text(coalition.name or coalition.id, language),
                "PartyIds": [f"par-{p}" for p in coalition.party_ids],
            }
        )
    return parties


def _race_unit(race: RaceInfo) -> tuple[int, str]:
    return race.level, race.unit_id


def _contest(
    race: RaceInfo,
    election: ElectionIndex,
    shown: list[tuple[results_pb2.UnitResults, results_pb2.ContestTotals]],
    final: bool,
) -> dict[str, Any]:
    contest = election.contest(race.contest_id)
    owner = {o: c.id for c in race.candidates for o in c.option_ids}
    by_option: dict[str, list[dict[str, Any]]] = {o: [] for o in race.option_ids}
    write_ins: list[dict[str, Any]] = []
    nulls: list[dict[str, Any]] = []
    own: results_pb2.ContestTotals | None = None
    for unit, totals in shown:
        gpu = _gpu(unit.level, unit.unit_id)
        if (unit.level, unit.unit_id) == _race_unit(race):
            own = totals
        for option in totals.options:
            by_option[option.option_id].append(_count(gpu, option.votes))
        write_ins.append(_count(gpu, totals.unregistered_votes))
        nulls.append(
            {"@type": _ER + "OtherCounts", "GpUnitId": gpu, "Overvotes": totals.null_votes}
        )
    selections: list[dict[str, Any]] = []
    for i, option_id in enumerate(race.option_ids, start=1):
        selection: dict[str, Any] = {
            "@id": f"sel-{race.id}-{option_id}",
            "@type": _ER + "CandidateSelection",
        }
        if option_id in owner:
            selection["CandidateIds"] = [f"can-{race.id}-{owner[option_id]}"]
        selection["EndorsementPartyIds"] = [f"par-{p}" for p in contest.option_parties[option_id]]
        selection["SequenceOrder"] = i
        selection["VoteCounts"] = by_option[option_id]
        selections.append(selection)
    selections.append(
        {
            "@id": f"sel-{race.id}-unregistered",
            "@type": _ER + "CandidateSelection",
            "IsWriteIn": True,
            "SequenceOrder": len(race.option_ids) + 1,
            "VoteCounts": write_ins,
        }
    )
    completeness = own.completeness if own is not None else results_pb2.Completeness()
    unit_name = _unit_name(election, race)
    name = race.name or (f"{contest.name} {unit_name}".strip() if unit_name else contest.name)
    return {
        "@id": f"con-{race.id}",
        "@type": _ER + "CandidateContest",
        "ContestSelection": selections,
        "CountStatus": [
            {
                "@type": _ER + "CountStatus",
                "Status": "completed" if final else "in-process",
                "Type": "total",
            }
        ],
        "ElectionDistrictId": _gpu(race.level, race.unit_id),
        "ExternalIdentifier": [
            _other_id("veritally-race-id", race.id),
            _other_id("veritally-contest-id", race.contest_id),
        ],
        "Name": name or race.id,
        "OtherCounts": nulls,
        "SequenceOrder": race.index + 1,
        "SubUnitsReported": completeness.actas_counted,
        "TotalSubUnits": completeness.actas_expected,
        "VotesAllowed": 1,
    }


def _unit_name(election: ElectionIndex, race: RaceInfo) -> str:
    names: Mapping[str, str]
    if race.level == _STATE:
        names = {s.id: s.name for s in election.pb.states}
    elif race.level == _DISTRICT:
        names = {d.id: d.name for d in election.pb.districts}
    else:
        return ""
    return names.get(race.unit_id, race.unit_id)


def _count(gpu: str, votes: int) -> dict[str, Any]:
    return {"@type": _ER + "VoteCounts", "Count": votes, "GpUnitId": gpu, "Type": "total"}


def to_nist(cut: VerifiedCut, *, election: ElectionIndex, language: str = "es") -> dict[str, Any]:
    """The ``ElectionReport`` of a verified cut, as a JSON-ready dict.

    Args:
        cut: the verified cut.
        election: its definition (``Client.election()``).
        language: the language tag of every name (``LanguageString.Language``).

    Raises:
        ValueError: if ``election`` is not the cut's definition.
    """
    check_election(cut, election)
    shown: dict[str, list[tuple[results_pb2.UnitResults, results_pb2.ContestTotals]]] = {
        r.id: [] for r in election.races
    }
    for unit in cut.results.units:
        for totals in unit.contests:
            if totals.race_id in shown:
                shown[totals.race_id].append((unit, totals))
    candidates = [
        {
            "@id": f"can-{race.id}-{c.id}",
            "@type": _ER + "Candidate",
            "BallotName": _text(c.name or c.id, language),
            **(
                {}
                if c.nominated_by == "independent"
                else {"PartyId": _party_ref(election, c.nominator_id)}
            ),
        }
        for race in election.races
        for c in race.candidates
    ]
    day = cut.cut_time.date().isoformat()
    report: dict[str, Any] = {
        "@type": _ER + "ElectionReport",
        "Election": [
            {
                "@type": _ER + "Election",
                "Candidate": candidates,
                "Contest": [
                    _contest(race, election, shown[race.id], cut.final) for race in election.races
                ],
                "ElectionScopeId": "gpu-nation",
                "EndDate": day,
                "ExternalIdentifier": [_other_id("veritally-election-id", election.election_id)],
                "Name": _text(election.name or election.election_id, language),
                "StartDate": day,
                "Type": "general",
            }
        ],
        "ExternalIdentifier": [
            _other_id("veritally-cut-number", str(cut.cut_number)),
            _other_id("veritally-results-sha256", cut.cut_record.results_sha256.hex()),
            _other_id("veritally-tree-size", str(cut.tree_size)),
            _other_id("veritally-root-hash", cut.root_hash.hex()),
            _other_id("veritally-definition-sha256", cut.definition_sha256.hex()),
        ],
        "Format": "summary-contest",
        "GeneratedDate": cut.cut_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "GpUnit": _gp_units(election, language),
        "IsTest": cut.test,
        "Issuer": cut.checkpoint.origin,
        "IssuerAbbreviation": election.election_id,
        "Notes": cut.note.decode("utf-8"),
        "Party": _parties(election, language),
        "SequenceEnd": 1,
        "SequenceStart": 1,
        "Status": "unofficial-complete" if cut.final else "unofficial-partial",
        "VendorApplicationId": FORMAT_NAME,
    }
    if cut.test:
        report["TestType"] = "rehearsal"
    return report


def write_nist(
    cut: VerifiedCut, out: TextIO, *, election: ElectionIndex, language: str = "es"
) -> None:
    """Write the NIST SP 1500-100 JSON of ``cut`` to ``out`` (arguments as :func:`to_nist`).

    Raises:
        ValueError: if ``election`` is not the cut's definition.
    """
    json.dump(to_nist(cut, election=election, language=language), out, indent=2)
    out.write("\n")
