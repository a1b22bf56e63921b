"""Races and candidates: which ballot an acta carries, and whose votes its figures are.

A contest is held in races, each bound to one unit at the contest's scope level (the
nation, a state, a district). A casilla votes in the race of each contest its type
receives whose unit contains it; an acta carries exactly the options of that race. A
contest without races has one national race, whose id is the contest id, with every
option of the contest and no candidates: a definition written before races existed means
what it meant then.

Validation of the races of a definition (``MalformedDataError`` naming the field):

1. coalitions: a non-empty id distinct from every party id and unique, two or more
   member parties, each a party of the election and listed once;
2. races: a non-empty id without ``/``, unique among races and distinct from the id of
   every contest that has no races; a known contest; a unit at the contest's scope level
   (``""`` for national, a state or district id), one race per contest and unit; options
   of the contest, each once and in the contest's order (empty: every option);
3. a contest scoped to states or districts has races; scopes are national, state or
   district (municipal races are not supported yet);
4. candidates: a non-empty id unique within the race; nominated by a party, a coalition
   or as an independent; a party candidate's party has an option of its own in the race,
   a coalition candidate's coalition has at least one option in the race whose parties
   are all its members, an independent's option is in the race and stands for no party;
5. when a race has candidates, every option of the race belongs to exactly one of them;
   an option standing for no party is always some independent's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import election_pb2, results_pb2

__all__ = ["ACTA_ID_SEPARATOR", "CandidateInfo", "CoalitionInfo", "RaceInfo", "index_races"]

Level: TypeAlias = results_pb2.Level.ValueType
Nomination: TypeAlias = Literal["party", "coalition", "independent"]

# An acta id is "<casilla_id>/<contest_id>"; contest and race ids may not contain it.
ACTA_ID_SEPARATOR: Final = "/"

NATIONAL: Final = results_pb2.LEVEL_NATIONAL
STATE: Final = results_pb2.LEVEL_STATE
DISTRICT: Final = results_pb2.LEVEL_DISTRICT
# Levels a contest may be scoped to, from the widest.
SCOPES: Final = (NATIONAL, STATE, DISTRICT)
_SCOPE_NAMES: Final = {NATIONAL: "national", STATE: "state", DISTRICT: "district"}


@dataclass(frozen=True, slots=True)
class CoalitionInfo:
    """Parties that nominate common candidates."""

    id: str
    name: str
    party_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class CandidateInfo:
    """One candidate of a race and the race's options whose votes are the candidate's."""

    id: str
    name: str
    nominated_by: Nomination
    nominator_id: str  # the party id, the coalition id, or the independent's option id
    option_ids: tuple[str, ...]  # in the race's ballot order


@dataclass(frozen=True, slots=True)
class RaceInfo:
    """One race: a contest in one unit, its ballot and its candidates."""

    id: str
    index: int  # position among every race of the election, contests in order
    contest_id: str
    contest_index: int
    level: Level  # the contest's scope
    unit_id: str  # "" for the nation
    name: str
    option_ids: tuple[str, ...]  # the ballot, in the contest's order
    positions: tuple[int, ...]  # each option's position on the contest's ballot
    option_index: Mapping[str, int]  # option id -> position on the race's ballot
    candidates: tuple[CandidateInfo, ...]
    implicit: bool  # the one national race of a contest defined without races

    def candidate(self, candidate_id: str) -> CandidateInfo:
        """The candidate ``candidate_id`` of this race.

        Raises:
            LookupError: if the race has no such candidate (the message lists its ids).
        """
        for candidate in self.candidates:
            if candidate.id == candidate_id:
                return candidate
        valid = ", ".join(c.id for c in self.candidates) or "none"
        raise LookupError(f"race {self.id!r} has no candidate {candidate_id!r} (ids: {valid})")


@dataclass(frozen=True, slots=True)
class ContestBallot:
    """What :func:`index_races` needs of one contest, already validated."""

    id: str
    index: int
    scope: Level
    option_ids: tuple[str, ...]
    option_parties: Mapping[str, tuple[str, ...]]  # option id -> its party ids


def index_coalitions(
    pb: election_pb2.ElectionDefinition, party_ids: frozenset[str]
) -> Mapping[str, CoalitionInfo]:
    """Validate and index the coalitions (rule 1 of the module docstring)."""
    coalitions: dict[str, CoalitionInfo] = {}
    for i, coalition in enumerate(pb.coalitions):
        where = f"coalitions[{i}]"
        if not coalition.id:
            raise MalformedDataError(f"{where}: field 'id' of coalition is empty")
        if coalition.id in party_ids or coalition.id in coalitions:
            raise MalformedDataError(
                f"{where}: field 'id' {coalition.id!r} is already a party or coalition id"
            )
        members = list(coalition.party_ids)
        if len(members) < 2 or len(set(members)) != len(members):
            raise MalformedDataError(
                f"{where}: field 'party_ids' must list two or more distinct parties"
            )
        for pid in members:
            if pid not in party_ids:
                raise MalformedDataError(f"{where}: field 'party_ids' names unknown party {pid!r}")
        coalitions[coalition.id] = CoalitionInfo(coalition.id, coalition.name, frozenset(members))
    return MappingProxyType(coalitions)


def index_races(
    pb: election_pb2.ElectionDefinition,
    contests: Sequence[ContestBallot],
    coalitions: Mapping[str, CoalitionInfo],
    units: Mapping[Level, frozenset[str]],
) -> dict[str, tuple[RaceInfo, ...]]:
    """Validate the races of ``pb`` (rules 2-5) and return each contest's, in order.

    ``units`` holds the state ids at ``STATE`` and the district ids at ``DISTRICT``.
    """
    by_id = {c.id: c for c in contests}
    listed: dict[str, list[tuple[int, election_pb2.Race]]] = {c.id: [] for c in contests}
    for i, race in enumerate(pb.races):
        where = f"races[{i}]"
        if race.contest_id not in by_id:
            raise MalformedDataError(
                f"{where}: field 'contest_id' names unknown contest {race.contest_id!r}"
            )
        listed[race.contest_id].append((i, race))
    seen_ids: set[str] = set()
    result: dict[str, tuple[RaceInfo, ...]] = {}
    index = 0
    for contest in contests:
        if contest.scope not in SCOPES:
            raise MalformedDataError(
                f"contests[{contest.index}]: field 'scope' is {contest.scope} (national, "
                "state or district)"
            )
        races: list[RaceInfo] = []
        if not listed[contest.id]:
            if contest.scope != NATIONAL:
                raise MalformedDataError(
                    f"contests[{contest.index}]: contest {contest.id!r} is scoped to "
                    f"{_SCOPE_NAMES[contest.scope]} units but has no races"
                )
            races.append(_implicit_race(contest, index))
        units_seen: set[str] = set()
        for i, race in listed[contest.id]:
            info = _race(f"races[{i}]", race, index + len(races), contest, coalitions, units)
            if info.unit_id in units_seen:
                raise MalformedDataError(
                    f"races[{i}]: field 'unit_id': contest {contest.id!r} already has a race "
                    f"for unit {info.unit_id!r}"
                )
            units_seen.add(info.unit_id)
            races.append(info)
        for race_info in races:
            if race_info.id in seen_ids:
                raise MalformedDataError(f"race id {race_info.id!r} is used twice")
            seen_ids.add(race_info.id)
        index += len(races)
        result[contest.id] = tuple(races)
    return result


def _implicit_race(contest: ContestBallot, index: int) -> RaceInfo:
    return RaceInfo(
        id=contest.id,
        index=index,
        contest_id=contest.id,
        contest_index=contest.index,
        level=NATIONAL,
        unit_id="",
        name="",
        option_ids=contest.option_ids,
        positions=tuple(range(len(contest.option_ids))),
        option_index=MappingProxyType({o: i for i, o in enumerate(contest.option_ids)}),
        candidates=(),
        implicit=True,
    )


def _race(
    where: str,
    race: election_pb2.Race,
    index: int,
    contest: ContestBallot,
    coalitions: Mapping[str, CoalitionInfo],
    units: Mapping[Level, frozenset[str]],
) -> RaceInfo:
    if not race.id:
        raise MalformedDataError(f"{where}: field 'id' of race is empty")
    if ACTA_ID_SEPARATOR in race.id:
        raise MalformedDataError(f"{where}: field 'id' {race.id!r} contains {ACTA_ID_SEPARATOR!r}")
    if contest.scope == NATIONAL:
        if race.unit_id:
            raise MalformedDataError(
                f"{where}: field 'unit_id' must be empty for national contest {contest.id!r}"
            )
    elif race.unit_id not in units[contest.scope]:
        raise MalformedDataError(
            f"{where}: field 'unit_id' names no {_SCOPE_NAMES[contest.scope]} "
            f"({race.unit_id!r}) for contest {contest.id!r}"
        )
    contest_position = {o: i for i, o in enumerate(contest.option_ids)}
    option_ids = tuple(race.option_ids) or contest.option_ids
    positions: list[int] = []
    for oi, oid in enumerate(option_ids):
        position = contest_position.get(oid)
        if position is None:
            raise MalformedDataError(
                f"{where}.option_ids[{oi}]: {oid!r} is not an option of contest {contest.id!r}"
            )
        if positions and position <= positions[-1]:
            raise MalformedDataError(
                f"{where}.option_ids[{oi}]: {oid!r} is repeated or out of the contest's order"
            )
        positions.append(position)
    candidates = _candidates(where, race, option_ids, contest, coalitions)
    return RaceInfo(
        id=race.id,
        index=index,
        contest_id=contest.id,
        contest_index=contest.index,
        level=contest.scope,
        unit_id=race.unit_id,
        name=race.name,
        option_ids=option_ids,
        positions=tuple(positions),
        option_index=MappingProxyType({o: i for i, o in enumerate(option_ids)}),
        candidates=candidates,
        implicit=False,
    )


def _candidates(
    where: str,
    race: election_pb2.Race,
    option_ids: tuple[str, ...],
    contest: ContestBallot,
    coalitions: Mapping[str, CoalitionInfo],
) -> tuple[CandidateInfo, ...]:
    parties = contest.option_parties
    # The option of each party alone, among the race's options.
    own_option = {parties[o][0]: o for o in option_ids if len(parties[o]) == 1}
    owner: dict[str, str] = {}
    result: list[CandidateInfo] = []
    for ci, candidate in enumerate(race.candidates):
        cwhere = f"{where}.candidates[{ci}]"
        if not candidate.id:
            raise MalformedDataError(f"{cwhere}: field 'id' of candidate is empty")
        if any(c.id == candidate.id for c in result):
            raise MalformedDataError(f"{cwhere}: duplicate candidate id {candidate.id!r}")
        kind = candidate.WhichOneof("nominated_by")
        mine: tuple[str, ...]
        if kind == "party_id":
            nominated_by: Nomination = "party"
            nominator = candidate.party_id
            own = own_option.get(nominator)
            if own is None:
                raise MalformedDataError(
                    f"{cwhere}: field 'party_id': party {nominator!r} has no option of its own "
                    f"in race {race.id!r}"
                )
            mine = (own,)
        elif kind == "coalition_id":
            nominated_by = "coalition"
            nominator = candidate.coalition_id
            coalition = coalitions.get(nominator)
            if coalition is None:
                raise MalformedDataError(
                    f"{cwhere}: field 'coalition_id' names unknown coalition {nominator!r}"
                )
            mine = tuple(
                o for o in option_ids if parties[o] and set(parties[o]) <= coalition.party_ids
            )
            if not mine:
                raise MalformedDataError(
                    f"{cwhere}: field 'coalition_id': no option of race {race.id!r} stands "
                    f"for coalition {nominator!r}"
                )
        elif kind == "independent_option_id":
            nominated_by = "independent"
            nominator = candidate.independent_option_id
            if nominator not in option_ids or parties[nominator]:
                raise MalformedDataError(
                    f"{cwhere}: field 'independent_option_id': {nominator!r} is not an option "
                    f"of race {race.id!r} standing for no party"
                )
            mine = (nominator,)
        else:
            raise MalformedDataError(
                f"{cwhere}: candidate {candidate.id!r} is nominated by nobody (set party_id, "
                "coalition_id or independent_option_id)"
            )
        for option in mine:
            if option in owner:
                raise MalformedDataError(
                    f"{cwhere}: option {option!r} of race {race.id!r} is already candidate "
                    f"{owner[option]!r}'s"
                )
            owner[option] = candidate.id
        result.append(CandidateInfo(candidate.id, candidate.name, nominated_by, nominator, mine))
    for option in option_ids:
        if option in owner:
            continue
        if not parties[option]:
            raise MalformedDataError(
                f"{where}: option {option!r} stands for no party and no independent candidate "
                f"of race {race.id!r} names it"
            )
        if result:
            raise MalformedDataError(
                f"{where}: option {option!r} of race {race.id!r} belongs to no candidate"
            )
    return tuple(result)
