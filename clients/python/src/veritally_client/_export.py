"""Flat, database-ready exports of verified results (CSV and JSON).

One CSV row per level x unit x contest x option, like the elex tool: every row carries
the cut it comes from (its number and the SHA-256 of the signed results), the unit's
completeness figures and the rehearsal flag, so a newsroom can load the file into a table
and key it on (cut_number, level, unit_id, contest_id, option_kind, option_id).
Unregistered-candidate and null votes are rows of their own kind (``option_kind``
``"unregistered"`` / ``"null"``, empty ``option_id``) so that summing the ``votes`` of the
kinds ``option``, ``unregistered`` and ``null`` of a contest gives its total. Candidate and
party totals, when asked for (``kinds``), are rows of the kinds ``"candidate"`` and
``"party"``: they repeat votes already in the option rows, as PREP shows them.

Percentages and shares are exact decimals with four places, from the signed integers
(percent x 10^4); no floats are involved. Names (units, contests, races, options,
candidates, parties) come from the election definition the cut was verified against,
whose SHA-256 must be the one bound into the signed results. The bytes written depend
only on the cut, the definition and the arguments: everyone exporting the same cut gets
the same file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Final, TextIO

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import results_pb2
from veritally_client._navigate import level_name
from veritally_client._verify import VerifiedCut

__all__ = [
    "CSV_COLUMNS",
    "OPTION_KINDS",
    "check_election",
    "csv_rows",
    "percent_text",
    "to_json",
    "write_csv",
    "write_json",
]

#: The CSV header, in order. Columns are only ever appended.
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
    # Added with races, candidates and rehearsals (docs/sdk.md, "Exports").
    "election_id",
    "test",
    "results_sha256",
    "unit_name",
    "state_id",
    "state_name",
    "district_id",
    "district_name",
    "contest_name",
    "race_id",
    "race_name",
    "option_name",
    "party_ids",
    "nominated_by",
    "share_percent",
)

#: Row kinds, in the order they are written for each contest of a unit.
OPTION_KINDS: Final = ("option", "unregistered", "null", "candidate", "party")
#: The kinds written unless asked otherwise: their votes add up to the contest's total.
_DEFAULT_KINDS: Final = frozenset({"option", "unregistered", "null"})

_NATIONAL: Final = results_pb2.LEVEL_NATIONAL
_STATE: Final = results_pb2.LEVEL_STATE
_DISTRICT: Final = results_pb2.LEVEL_DISTRICT
_SECTION: Final = results_pb2.LEVEL_SECTION
_CASILLA: Final = results_pb2.LEVEL_CASILLA


def percent_text(value_e4: int) -> str:
    """A percent x 10^4 integer as an exact decimal string: 931234 -> "93.1234"."""
    return f"{value_e4 // 10_000}.{value_e4 % 10_000:04d}"


def check_election(cut: VerifiedCut, election: ElectionIndex) -> None:
    """Check that ``election`` is the definition the cut's results were computed with.

    Raises:
        ValueError: if its SHA-256 is not the one bound into the signed results (a caller
            mixing up elections: ``Client.election()`` already checks what it serves).
    """
    if election.definition_sha256 != cut.definition_sha256:
        raise ValueError(
            f"election: the definition hashes to {election.definition_sha256.hex()}, the "
            f"cut's results are for {cut.definition_sha256.hex()}"
        )


class _Names:
    """Display names from the definition; empty strings without one."""

    def __init__(self, election: ElectionIndex | None) -> None:
        self.election = election
        pb = election.pb if election is not None else None
        self.states = {s.id: s.name for s in pb.states} if pb is not None else {}
        self.districts = {d.id: d.name for d in pb.districts} if pb is not None else {}
        self.contests = {c.id: c.name for c in pb.contests} if pb is not None else {}
        self.options = (
            {(c.id, o.id): o.name for c in pb.contests for o in c.options} if pb is not None else {}
        )
        self.parties = {p.id: p.name for p in pb.parties} if pb is not None else {}

    def places(self, unit: results_pb2.UnitResults) -> tuple[str, str, str]:
        """(state id, district id, unit name) of a unit."""
        election = self.election
        if election is None or unit.level == _NATIONAL:
            return "", "", ""
        try:
            if unit.level == _STATE:
                return unit.unit_id, "", self.states.get(unit.unit_id, "")
            if unit.level == _DISTRICT:
                district = unit.unit_id
                return election.district_state(district), district, self.districts[district]
            if unit.level == _SECTION:
                district = election.section_district(unit.unit_id)
            elif unit.level == _CASILLA:
                district = election.casilla(unit.unit_id).district_id
            else:
                return "", "", ""
        except (LookupError, KeyError):
            return "", "", ""
        return election.district_state(district), district, unit.unit_id

    def race(self, race_id: str) -> str:
        if self.election is None or not race_id:
            return ""
        try:
            return self.election.race(race_id).name
        except LookupError:
            return ""

    def candidates(self, race_id: str) -> Mapping[str, tuple[str, str]]:
        """candidate id -> (name, "kind:nominator") of a race."""
        if self.election is None or not race_id:
            return {}
        try:
            race = self.election.race(race_id)
        except LookupError:
            return {}
        return {c.id: (c.name, f"{c.nominated_by}:{c.nominator_id}") for c in race.candidates}

    def option_parties(self, contest_id: str) -> Mapping[str, tuple[str, ...]]:
        if self.election is None:
            return {}
        try:
            return self.election.contest(contest_id).option_parties
        except LookupError:
            return {}


def _check_kinds(kinds: Collection[str]) -> frozenset[str]:
    unknown = set(kinds) - set(OPTION_KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown row kinds {sorted(unknown)}; one of {OPTION_KINDS}")
    return frozenset(kinds)


def csv_rows(
    cut: VerifiedCut,
    *,
    election: ElectionIndex | None = None,
    extra_units: Iterable[results_pb2.UnitResults] = (),
    kinds: Collection[str] = _DEFAULT_KINDS,
) -> Iterator[dict[str, str]]:
    """The rows of a cut's results (blob units, then ``extra_units`` from a recount).

    Args:
        cut: the verified cut.
        election: its definition, for names (``Client.election()``); without it the name
            columns are empty.
        extra_units: section and casilla results from a recount, appended.
        kinds: which rows to write for each contest of a unit, among
            :data:`OPTION_KINDS` (by default options, unregistered and null votes).

    Raises:
        ValueError: if ``election`` is not the cut's definition or a kind is unknown.
    """
    wanted = _check_kinds(kinds)
    if election is not None:
        check_election(cut, election)
    names = _Names(election)
    base = {
        "cut_number": str(cut.cut_number),
        "cut_time": cut.cut_record.cut_time,
        "tree_size": str(cut.tree_size),
        "acta_records": str(cut.acta_records),
        "final": "true" if cut.final else "false",
        "election_id": cut.results.election_id,
        "test": "true" if cut.test else "false",
        "results_sha256": cut.cut_record.results_sha256.hex(),
    }
    units: Iterable[results_pb2.UnitResults] = list(cut.results.units) + list(extra_units)
    for unit in units:
        state_id, district_id, unit_name = names.places(unit)
        where = {
            "level": level_name(unit.level),
            "unit_id": unit.unit_id,
            "unit_name": unit_name,
            "state_id": state_id,
            "state_name": names.states.get(state_id, ""),
            "district_id": district_id,
            "district_name": names.districts.get(district_id, ""),
        }
        for contest in unit.contests:
            yield from _contest_rows(base | where, contest, names, wanted)


def _contest_rows(
    head: dict[str, str],
    contest: results_pb2.ContestTotals,
    names: _Names,
    wanted: frozenset[str],
) -> Iterator[dict[str, str]]:
    c = contest.completeness
    common = {
        **head,
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
        "contest_name": names.contests.get(contest.contest_id, ""),
        "race_id": contest.race_id,
        "race_name": names.race(contest.race_id),
        "nominated_by": "",
    }
    cid = contest.contest_id
    if "option" in wanted:
        parties = names.option_parties(cid)
        for option in contest.options:
            yield {
                **common,
                "option_kind": "option",
                "option_id": option.option_id,
                "option_name": names.options.get((cid, option.option_id), ""),
                "party_ids": ";".join(parties.get(option.option_id, ())),
                "votes": str(option.votes),
                "share_percent": percent_text(option.share_percent_e4),
            }
    for kind, votes, share in (
        ("unregistered", contest.unregistered_votes, contest.unregistered_share_percent_e4),
        ("null", contest.null_votes, contest.null_share_percent_e4),
    ):
        if kind in wanted:
            yield {
                **common,
                "option_kind": kind,
                "option_id": "",
                "option_name": "",
                "party_ids": "",
                "votes": str(votes),
                "share_percent": percent_text(share),
            }
    if "candidate" in wanted:
        candidates = names.candidates(contest.race_id)
        for candidate in contest.candidates:
            name, nominated_by = candidates.get(candidate.candidate_id, ("", ""))
            yield {
                **common,
                "option_kind": "candidate",
                "option_id": candidate.candidate_id,
                "option_name": name,
                "party_ids": "",
                "nominated_by": nominated_by,
                "votes": str(candidate.votes),
                "share_percent": percent_text(candidate.share_percent_e4),
            }
    if "party" in wanted:
        for party in contest.parties:
            yield {
                **common,
                "option_kind": "party",
                "option_id": party.party_id,
                "option_name": names.parties.get(party.party_id, ""),
                "party_ids": party.party_id,
                "votes": str(party.votes),
                "share_percent": percent_text(party.share_percent_e4),
            }


def write_csv(
    cut: VerifiedCut,
    out: TextIO,
    *,
    election: ElectionIndex | None = None,
    extra_units: Iterable[results_pb2.UnitResults] = (),
    kinds: Collection[str] = _DEFAULT_KINDS,
) -> int:
    """Write the CSV export of ``cut`` to ``out``; returns the number of data rows.

    Arguments as :func:`csv_rows`. Lines end in ``\\n``; open files with ``newline=""``.

    Raises:
        ValueError: if ``election`` is not the cut's definition or a kind is unknown.
    """
    rows = csv_rows(cut, election=election, extra_units=extra_units, kinds=kinds)
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in rows:
        writer.writerow(row)
        n += 1
    return n


# -- JSON ---------------------------------------------------------------------------------


def _message_json(message: Message) -> dict[str, Any]:
    """Every field of a results message by its proto name, integers as JSON numbers and
    enums by name, in field order (as ``json_format`` with proto field names and every
    field printed, but 64-bit counts as numbers: they fit in 53 bits for any election)."""
    doc: dict[str, Any] = {}
    for fd in message.DESCRIPTOR.fields:
        value = getattr(message, fd.name)
        enum = None if fd.enum_type is None else {v.number: v.name for v in fd.enum_type.values}
        if fd.is_repeated:
            doc[fd.name] = [_field_json(fd.type, enum, v) for v in value]
        else:
            doc[fd.name] = _field_json(fd.type, enum, value)
    return doc


def _field_json(kind: int, enum: Mapping[int, str] | None, value: Any) -> Any:
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message_json(value)
    if enum is not None:
        return enum[value]
    return value


def _add_percents(doc: dict[str, Any]) -> None:
    """Next to every ``*_percent_e4`` integer, its exact decimal without the suffix."""
    for key in [k for k in doc if k.endswith("_percent_e4")]:
        doc[key.removesuffix("_e4")] = percent_text(int(doc[key]))


def _unit_json(unit: results_pb2.UnitResults, names: _Names) -> dict[str, Any]:
    doc = _message_json(unit)
    doc["level"] = level_name(unit.level)
    state_id, district_id, unit_name = names.places(unit)
    doc["name"] = unit_name
    doc["state_id"] = state_id
    doc["district_id"] = district_id
    for contest in doc["contests"]:
        cid = contest["contest_id"]
        _add_percents(contest)
        _add_percents(contest["completeness"])
        contest["name"] = names.contests.get(cid, "")
        contest["race_name"] = names.race(contest["race_id"])
        parties = names.option_parties(cid)
        for option in contest["options"]:
            _add_percents(option)
            option["name"] = names.options.get((cid, option["option_id"]), "")
            option["party_ids"] = list(parties.get(option["option_id"], ()))
        candidates = names.candidates(contest["race_id"])
        for candidate in contest["candidates"]:
            _add_percents(candidate)
            name, nominated_by = candidates.get(candidate["candidate_id"], ("", ""))
            candidate["name"] = name
            candidate["nominated_by"] = nominated_by
        for party in contest["parties"]:
            _add_percents(party)
            party["name"] = names.parties.get(party["party_id"], "")
    return doc


def to_json(
    cut: VerifiedCut,
    *,
    election: ElectionIndex | None = None,
    extra_units: Iterable[results_pb2.UnitResults] = (),
) -> dict[str, Any]:
    """The JSON export of ``cut``: what was verified, and the results by unit.

    Args:
        cut: the verified cut.
        election: its definition, for names; without it names are empty strings.
        extra_units: section and casilla results from a recount, appended.

    Raises:
        ValueError: if ``election`` is not the cut's definition.
    """
    if election is not None:
        check_election(cut, election)
    names = _Names(election)
    units = [_unit_json(u, names) for u in list(cut.results.units) + list(extra_units)]
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
        "election_name": election.name if election is not None else "",
        "definition_sha256": cut.definition_sha256.hex(),
        "final": cut.final,
        "test": cut.test,
        "units": units,
    }


def write_json(
    cut: VerifiedCut,
    out: TextIO,
    *,
    election: ElectionIndex | None = None,
    extra_units: Iterable[results_pb2.UnitResults] = (),
) -> None:
    """Write the JSON export of ``cut`` to ``out`` (arguments as :func:`to_json`).

    Raises:
        ValueError: if ``election`` is not the cut's definition.
    """
    json.dump(to_json(cut, election=election, extra_units=extra_units), out, indent=2)
    out.write("\n")
