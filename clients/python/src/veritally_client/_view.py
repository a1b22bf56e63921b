"""Verified results with names: the objects ``VerifiedCut.race``, ``.state``, ``.district``
and ``.nation`` return.

Every figure is read from the signed results blob, never recomputed: votes as signed, and
shares and percentages as exact decimals of the signed percent x 10^4 integers
(``123456`` is ``Decimal("12.3456")``, four decimals, truncated as PREP truncates). Names
come from the election definition whose SHA-256 the signed results carry: the client
fetches it once and checks that digest (or the caller attaches an index it checked with
``VerifiedCut.with_election``).

Lookups:

* a state by id, or by name compared without accents, case or extra spaces ("jalisco",
  "Estado de Mexico"); a name that two states share is ambiguous and refused;
* a district by id, or by name as for states (within the state, when one is given);
* a race by contest id and unit (the nation when no unit is given), or by race id alone.

A lookup that matches nothing raises :class:`UnknownIdError` (a ``LookupError``) listing
the valid ids. All result objects are frozen dataclasses.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal, TypeVar

from veritally_client._election import ElectionIndex
from veritally_client._errors import DigestMismatchError
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2
from veritally_client._navigate import find_unit, level_name, unknown_id
from veritally_client._races import CandidateInfo

__all__ = [
    "CandidateResult",
    "Completeness",
    "ElectionSource",
    "OptionResult",
    "PartyResult",
    "RaceResult",
    "Unit",
    "UnitResult",
    "check_definition",
    "race_document",
    "read_race",
    "read_unit",
    "share",
]

Nomination = Literal["party", "coalition", "independent"]
T = TypeVar("T")

#: The name of the nation as a unit.
NATION_NAME: Final = "National"
_STATE: Final = results_pb2.LEVEL_STATE
_REASON_PREFIX: Final = "NOT_COUNTED_REASON_"


def share(value_e4: int) -> Decimal:
    """A signed percent x 10^4 integer as an exact decimal: 123456 -> Decimal("12.3456")."""
    return Decimal(value_e4).scaleb(-4)


def _reason_name(value: acta_pb2.NotCountedReason.ValueType) -> str:
    try:
        name = acta_pb2.NotCountedReason.Name(value)
    except ValueError:
        return f"reason_{value}"
    return name.removeprefix(_REASON_PREFIX).lower()


# -- the result objects ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """A geographic unit: ``level`` is ``"national"``, ``"state"`` or ``"district"``;
    ``id`` is ``""`` for the nation."""

    level: str
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class OptionResult:
    """One option of the ballot (a party, a coalition combination, an independent)."""

    id: str
    name: str
    party_ids: tuple[str, ...]  # the parties it stands for; () for an independent
    votes: int
    share: Decimal  # percent of the total votes, four decimals, as signed


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """One candidate of a race: the votes of all the candidate's options ("votos por
    candidatura")."""

    id: str
    name: str
    nominated_by: Nomination
    nominator_id: str  # the party id, the coalition id, or the independent's option id
    nominator_name: str  # the party's or the coalition's name; "" for an independent
    affiliation: str  # for display: "MC", "PAN-PRI" (a coalition's parties), "independent"
    party_ids: tuple[str, ...]  # the nominating parties; () for an independent
    option_ids: tuple[str, ...]  # the options whose votes are the candidate's
    votes: int
    share: Decimal


@dataclass(frozen=True, slots=True)
class PartyResult:
    """One party: the votes of its own option (combinations are not divided)."""

    id: str
    name: str
    abbreviation: str
    votes: int
    share: Decimal


@dataclass(frozen=True, slots=True)
class Completeness:
    """PREP's header figures for one contest in one unit. Percentages are of the actas
    expected (participation: of the nominal list of counted actas), as signed."""

    expected: int  # ACTAS_ESPERADAS
    registered: int  # ACTAS_REGISTRADAS: captured, or recorded missing
    out_of_catalogue: int  # ACTAS_FUERA_DE_CATALOGO (the nation's figure only)
    captured: int  # ACTAS_CAPTURADAS
    captured_percent: Decimal
    counted: int  # ACTAS_CONTABILIZADAS
    counted_percent: Decimal
    not_counted: int  # ACTAS_NO_CONTABILIZADAS
    not_counted_by_reason: tuple[tuple[str, int], ...]  # ("exceeds_nominal_list", 2), ...
    inconsistent: int
    inconsistent_percent: Decimal  # PORCENTAJE_ACTAS_CON_INCONSISTENCIAS
    nominal_list_counted: int  # LISTA_NOMINAL_ACTAS_CONTABILIZADAS
    total_votes_with_special: int  # TOTAL_VOTOS_C_CS
    total_votes_without_special: int  # TOTAL_VOTOS_S_CS
    participation: Decimal  # PORCENTAJE_PARTICIPACION_CIUDADANA


@dataclass(frozen=True, slots=True)
class RaceResult:
    """One contest in one unit, with names.

    A unit inside one race (the race's own unit or one within it: the presidency in a
    state) shows that race: ``race_id`` is set and the candidates are listed. A unit
    holding several races (the senate nationally, deputies in a state) shows their sum:
    ``race_id`` is ``""``, ``race_ids`` lists them, and there are no candidates.
    """

    contest_id: str
    contest_name: str
    race_id: str
    race_name: str
    race_unit: Unit | None  # the race's own unit; None when several races are summed
    race_ids: tuple[str, ...]  # the races whose votes these are
    unit: Unit
    options: tuple[OptionResult, ...]  # in ballot order
    candidates: tuple[CandidateResult, ...]  # in the race's order
    parties: tuple[PartyResult, ...]  # in the definition's party order
    unregistered_votes: int
    unregistered_share: Decimal
    null_votes: int
    null_share: Decimal
    total_votes: int
    completeness: Completeness
    cut_number: int
    final: bool  # the night's last cut
    test: bool  # a rehearsal's figures, never the election's

    def candidate(self, key: str) -> CandidateResult:
        """A candidate by id or by name (compared as state names are).

        Raises:
            UnknownIdError: if none matches (it lists the candidates' ids).
        """
        return _pick("candidate", key, self.candidates, lambda c: c.id, lambda c: c.name)

    def party(self, key: str) -> PartyResult:
        """A party by id or abbreviation.

        Raises:
            UnknownIdError: if none matches (it lists the parties' ids).
        """
        return _pick("party", key, self.parties, lambda p: p.id, lambda p: p.abbreviation)

    def option(self, option_id: str) -> OptionResult:
        """An option by id.

        Raises:
            UnknownIdError: if the ballot has no such option (it lists the options' ids).
        """
        return _pick("option", option_id, self.options, lambda o: o.id, None)


@dataclass(frozen=True, slots=True)
class UnitResult:
    """Every contest held in one unit, with names."""

    unit: Unit
    races: tuple[RaceResult, ...]  # one per contest held in the unit, definition order
    cut_number: int
    final: bool
    test: bool

    def race(self, contest_id: str) -> RaceResult:
        """The results of one contest in this unit.

        Raises:
            UnknownIdError: if the contest is not held here (it lists those that are).
        """
        for race in self.races:
            if race.contest_id == contest_id:
                return race
        raise unknown_id(
            "contest",
            contest_id,
            (r.contest_id for r in self.races),
            why=f"no contest {contest_id!r} held in {_where(self.unit)}",
        )


# -- names ---------------------------------------------------------------------------


def _fold(text: str) -> str:
    """A name for matching: no accents, no case, single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def _pick(
    kind: str,
    key: str,
    items: Iterable[T],
    id_of: Callable[[T], str],
    name_of: Callable[[T], str] | None,
) -> T:
    listed = tuple(items)
    for item in listed:
        if id_of(item) == key:
            return item
    if name_of is not None:
        found = [item for item in listed if _fold(name_of(item)) == _fold(key)]
        if len(found) == 1:
            return found[0]
        if found:
            ids = ", ".join(repr(id_of(i)) for i in found)
            raise unknown_id(
                kind,
                key,
                (id_of(i) for i in found),
                why=f"{kind} name {key!r} is ambiguous ({ids}); give the id",
            )
    raise unknown_id(kind, key, (id_of(i) for i in listed))


def _where(unit: Unit) -> str:
    if unit.level == "national":
        return "the nation"
    return f"{unit.level} {unit.id!r}"


class _Names:
    """What names and lookups need of an election, indexed once per cut."""

    __slots__ = (
        "coalitions",
        "district_names",
        "district_state",
        "election",
        "option_names",
        "parties",
        "state_names",
    )

    def __init__(self, election: ElectionIndex) -> None:
        pb = election.pb
        self.election = election
        self.state_names: Mapping[str, str] = {s.id: s.name for s in pb.states}
        self.district_names: Mapping[str, str] = {d.id: d.name for d in pb.districts}
        self.district_state: Mapping[str, str] = {d.id: d.state_id for d in pb.districts}
        self.parties: Mapping[str, election_pb2.Party] = {p.id: p for p in pb.parties}
        self.option_names: Mapping[str, Mapping[str, str]] = {
            c.id: {o.id: o.name for o in c.options} for c in pb.contests
        }
        self.coalitions: Mapping[str, election_pb2.Coalition] = {c.id: c for c in pb.coalitions}

    def abbreviation(self, party_id: str) -> str:
        party = self.parties.get(party_id)
        return (party.abbreviation or party.id) if party is not None else party_id

    def unit(self, level: str, unit_id: str) -> Unit:
        if level == "national":
            return Unit("national", "", NATION_NAME)
        names = self.state_names if level == "state" else self.district_names
        return Unit(level, unit_id, names.get(unit_id, ""))

    def state_id(self, key: str) -> str:
        pairs = tuple(self.state_names.items())
        return _pick("state", key, pairs, lambda p: p[0], lambda p: p[1])[0]

    def district_id(self, key: str, state_id: str | None) -> str:
        pairs = tuple(
            (d, name)
            for d, name in self.district_names.items()
            if state_id is None or self.district_state[d] == state_id
        )
        if state_id is not None and key in self.district_names and key not in dict(pairs):
            raise unknown_id(
                "district",
                key,
                (d for d, _ in pairs),
                why=f"district {key!r} is not in state {state_id!r}",
            )
        return _pick("district", key, pairs, lambda p: p[0], lambda p: p[1])[0]


class ElectionSource:
    """Where a cut finds its names: an election index given, or a loader called once.

    The index is checked against the digest bound into the cut's signed results.
    """

    __slots__ = ("_index", "_loader", "_names")

    def __init__(
        self,
        *,
        index: ElectionIndex | None = None,
        loader: Callable[[], ElectionIndex] | None = None,
    ) -> None:
        if (index is None) == (loader is None):
            raise ValueError("give exactly one of index and loader")
        self._index = index
        self._loader = loader
        self._names: _Names | None = None

    def index(self, definition_sha256: bytes) -> ElectionIndex:
        """The election index, loaded on first use and checked against the digest.

        Raises:
            DigestMismatchError: if the index is of another definition.
        """
        return self.names(definition_sha256).election

    def names(self, definition_sha256: bytes) -> _Names:
        if self._names is None:
            index = self._index
            if index is None:
                assert self._loader is not None
                index = self._loader()
            check_definition(index, definition_sha256)
            self._names = _Names(index)
        return self._names


def check_definition(election: ElectionIndex, definition_sha256: bytes) -> None:
    """Raise DigestMismatchError if ``election`` is not the definition signed for."""
    if election.definition_sha256 != definition_sha256:
        raise DigestMismatchError(
            f"election definition hashes to {election.definition_sha256.hex()}, the "
            f"signed results are for {definition_sha256.hex()}"
        )


# -- reading the signed blob ---------------------------------------------------------


def _resolve_unit(names: _Names, state: str | None, district: str | None) -> tuple[str, str]:
    """``(level, unit id)`` of the unit named by ``state`` and ``district``."""
    state_id = None if state is None else names.state_id(state)
    if district is not None:
        return "district", names.district_id(district, state_id)
    if state_id is not None:
        return "state", state_id
    return "national", ""


def read_unit(
    results: results_pb2.Results,
    names: _Names,
    cut_number: int,
    *,
    state: str | None = None,
    district: str | None = None,
) -> UnitResult:
    """Every contest of one unit (the nation when neither is given)."""
    level, unit_id = _resolve_unit(names, state, district)
    pb = find_unit(results, level, unit_id)
    unit = names.unit(level, unit_id)
    races = tuple(_race(names, unit, ct, results, cut_number) for ct in pb.contests)
    return UnitResult(
        unit=unit, races=races, cut_number=cut_number, final=results.final, test=results.test
    )


def read_race(
    results: results_pb2.Results,
    names: _Names,
    cut_number: int,
    key: str,
    *,
    state: str | None = None,
    district: str | None = None,
) -> RaceResult:
    """One contest in one unit; ``key`` is a contest id, or a race id given alone."""
    election = names.election
    contest_ids = election.contest_ids
    if key in contest_ids:
        contest_id = key
        level, unit_id = _resolve_unit(names, state, district)
    else:
        race_ids = tuple(r.id for r in election.races if not r.implicit)
        if key not in race_ids:
            raise unknown_id(
                "contest",
                key,
                contest_ids,
                why=f"no contest or race {key!r}",
            )
        if state is not None or district is not None:
            raise ValueError(f"race {key!r} names its unit; give a contest id with a unit")
        race = election.race(key)
        contest_id = race.contest_id
        level, unit_id = level_name(race.level), race.unit_id
    pb = find_unit(results, level, unit_id)
    unit = names.unit(level, unit_id)
    for ct in pb.contests:
        if ct.contest_id == contest_id:
            return _race(names, unit, ct, results, cut_number)
    raise unknown_id(
        "contest",
        contest_id,
        (ct.contest_id for ct in pb.contests),
        why=f"contest {contest_id!r} has no race in {_where(unit)}",
    )


def _race(
    names: _Names,
    unit: Unit,
    ct: results_pb2.ContestTotals,
    results: results_pb2.Results,
    cut_number: int,
) -> RaceResult:
    election = names.election
    contest = election.contest(ct.contest_id)
    option_names = names.option_names[contest.id]
    options = tuple(
        OptionResult(
            id=o.option_id,
            name=option_names.get(o.option_id, ""),
            party_ids=contest.option_parties.get(o.option_id, ()),
            votes=o.votes,
            share=share(o.share_percent_e4),
        )
        for o in ct.options
    )
    race_name = ""
    race_unit: Unit | None = None
    candidates: tuple[CandidateResult, ...] = ()
    if ct.race_id:
        race = election.race(ct.race_id)
        race_ids: tuple[str, ...] = (race.id,)
        race_name = race.name
        race_unit = names.unit(level_name(race.level), race.unit_id)
        candidates = tuple(
            _candidate(names, race.candidate(c.candidate_id), c) for c in ct.candidates
        )
    else:
        race_ids = tuple(r.id for r in contest.races if _within(names, r.level, r.unit_id, unit))
    parties = tuple(
        PartyResult(
            id=p.party_id,
            name=names.parties[p.party_id].name if p.party_id in names.parties else "",
            abbreviation=names.abbreviation(p.party_id),
            votes=p.votes,
            share=share(p.share_percent_e4),
        )
        for p in ct.parties
    )
    return RaceResult(
        contest_id=contest.id,
        contest_name=contest.name,
        race_id=ct.race_id,
        race_name=race_name,
        race_unit=race_unit,
        race_ids=race_ids,
        unit=unit,
        options=options,
        candidates=candidates,
        parties=parties,
        unregistered_votes=ct.unregistered_votes,
        unregistered_share=share(ct.unregistered_share_percent_e4),
        null_votes=ct.null_votes,
        null_share=share(ct.null_share_percent_e4),
        total_votes=ct.total_votes,
        completeness=_completeness(ct.completeness),
        cut_number=cut_number,
        final=results.final,
        test=results.test,
    )


def _within(names: _Names, level: results_pb2.Level.ValueType, unit_id: str, unit: Unit) -> bool:
    """Whether the race unit ``(level, unit_id)`` lies within ``unit``."""
    if unit.level == "national":
        return True
    state = unit_id if level == _STATE else names.district_state.get(unit_id, "")
    if unit.level == "state":
        return state == unit.id
    return unit_id == unit.id


def _candidate(
    names: _Names, info: CandidateInfo, total: results_pb2.CandidateTotal
) -> CandidateResult:
    if info.nominated_by == "party":
        party_ids: tuple[str, ...] = (info.nominator_id,)
        party = names.parties.get(info.nominator_id)
        nominator_name = party.name if party is not None else ""
        affiliation = names.abbreviation(info.nominator_id)
    elif info.nominated_by == "coalition":
        coalition = names.coalitions.get(info.nominator_id)
        members = set(coalition.party_ids) if coalition is not None else set()
        party_ids = tuple(p for p in names.parties if p in members)
        nominator_name = coalition.name if coalition is not None else ""
        affiliation = "-".join(names.abbreviation(p) for p in party_ids)
    else:
        party_ids = ()
        nominator_name = ""
        affiliation = "independent"
    return CandidateResult(
        id=info.id,
        name=info.name,
        nominated_by=info.nominated_by,
        nominator_id=info.nominator_id,
        nominator_name=nominator_name,
        affiliation=affiliation,
        party_ids=party_ids,
        option_ids=info.option_ids,
        votes=total.votes,
        share=share(total.share_percent_e4),
    )


def _completeness(c: results_pb2.Completeness) -> Completeness:
    return Completeness(
        expected=c.actas_expected,
        registered=c.actas_registered,
        out_of_catalogue=c.actas_out_of_catalogue,
        captured=c.actas_captured,
        captured_percent=share(c.captured_percent_e4),
        counted=c.actas_counted,
        counted_percent=share(c.counted_percent_e4),
        not_counted=c.actas_not_counted,
        not_counted_by_reason=tuple((_reason_name(n.reason), n.actas) for n in c.not_counted),
        inconsistent=c.actas_inconsistent,
        inconsistent_percent=share(c.inconsistent_percent_e4),
        nominal_list_counted=c.nominal_list_counted,
        total_votes_with_special=c.total_votes_with_special,
        total_votes_without_special=c.total_votes_without_special,
        participation=share(c.turnout_percent_e4),
    )


# -- a plain document of a race (the CLI's JSON lines) --------------------------------


def race_document(race: RaceResult) -> dict[str, Any]:
    """A JSON-ready dict of ``race``: names, votes, shares as exact decimal strings."""
    c = race.completeness
    return {
        "cut_number": race.cut_number,
        "final": race.final,
        "test": race.test,
        "contest_id": race.contest_id,
        "contest_name": race.contest_name,
        "race_id": race.race_id,
        "race_ids": list(race.race_ids),
        "unit": {"level": race.unit.level, "id": race.unit.id, "name": race.unit.name},
        "candidates": [
            {
                "id": x.id,
                "name": x.name,
                "nominated_by": x.nominated_by,
                "affiliation": x.affiliation,
                "votes": x.votes,
                "share": str(x.share),
            }
            for x in race.candidates
        ],
        "parties": [
            {
                "id": p.id,
                "name": p.name,
                "abbreviation": p.abbreviation,
                "votes": p.votes,
                "share": str(p.share),
            }
            for p in race.parties
        ],
        "options": [
            {"id": o.id, "name": o.name, "votes": o.votes, "share": str(o.share)}
            for o in race.options
        ],
        "unregistered_votes": race.unregistered_votes,
        "unregistered_share": str(race.unregistered_share),
        "null_votes": race.null_votes,
        "null_share": str(race.null_share),
        "total_votes": race.total_votes,
        "completeness": {
            "expected": c.expected,
            "registered": c.registered,
            "out_of_catalogue": c.out_of_catalogue,
            "captured": c.captured,
            "captured_percent": str(c.captured_percent),
            "counted": c.counted,
            "counted_percent": str(c.counted_percent),
            "not_counted": c.not_counted,
            "inconsistent": c.inconsistent,
            "inconsistent_percent": str(c.inconsistent_percent),
            "nominal_list_counted": c.nominal_list_counted,
            "total_votes_with_special": c.total_votes_with_special,
            "total_votes_without_special": c.total_votes_without_special,
            "participation": str(c.participation),
        },
    }
