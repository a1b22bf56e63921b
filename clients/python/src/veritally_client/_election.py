"""A validated, indexed, immutable view of an election definition.

The same :class:`ElectionIndex` is used by ingest (validation), aggregation and the tally
(totals per unit), the publisher (its SHA-256 is bound into every results blob) and media
clients (navigation and recount). It is built from the exact definition bytes, hashes
those bytes, and validates every reference when it is constructed: an index that exists
is a valid election.

Validation at construction:

1. every id is non-empty and unique at its level (parties, contests, options within a
   contest, states, districts, sections, casillas);
2. references resolve: district -> state, section -> district, casilla -> section, option
   party ids -> parties;
3. every contest has at least one option, and contest ids contain no ``/`` (the acta id
   separator);
4. every casilla has a type; special casillas have no nominal list and a ballot limit,
   other casillas have a nominal list;
5. races, candidates and coalitions as :mod:`veritally_client._races` says; an option
   standing for no party appears only in races that name its independent candidate;
6. ``ballots`` names each casilla type at most once, with known contests each at most
   once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple, TypeAlias

from google.protobuf.message import DecodeError

from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import election_pb2, results_pb2
from veritally_client._races import (
    ACTA_ID_SEPARATOR,
    DISTRICT,
    NATIONAL,
    STATE,
    CandidateInfo,
    CoalitionInfo,
    ContestBallot,
    RaceInfo,
    index_coalitions,
    index_races,
)

__all__ = [
    "ACTA_ID_SEPARATOR",
    "CandidateInfo",
    "CasillaInfo",
    "CoalitionInfo",
    "ContestInfo",
    "ElectionIndex",
    "RaceInfo",
    "acta_id",
    "parse_acta_id",
]

ElectionDefinitionPb = election_pb2.ElectionDefinition
Level: TypeAlias = results_pb2.Level.ValueType

# An acta id is "<casilla_id>/<contest_id>" (ACTA_ID_SEPARATOR); contest ids may not
# contain the separator, so the last one always splits an acta id unambiguously even if
# casilla ids contain one.

_ESPECIAL: Final = election_pb2.CASILLA_TYPE_ESPECIAL
_KNOWN_TYPES: Final = frozenset(
    {
        election_pb2.CASILLA_TYPE_BASICA,
        election_pb2.CASILLA_TYPE_CONTIGUA,
        election_pb2.CASILLA_TYPE_EXTRAORDINARIA,
        election_pb2.CASILLA_TYPE_ESPECIAL,
    }
)


def acta_id(casilla_id: str, contest_id: str) -> str:
    """The acta id of the acta of ``contest_id`` at ``casilla_id``.

    Raises:
        ValueError: if either part is empty or the contest id contains the separator.
    """
    if not casilla_id or not contest_id or ACTA_ID_SEPARATOR in contest_id:
        raise ValueError(f"cannot form an acta id from {casilla_id!r} and {contest_id!r}")
    return f"{casilla_id}{ACTA_ID_SEPARATOR}{contest_id}"


def parse_acta_id(value: str) -> tuple[str, str]:
    """Split an acta id into ``(casilla_id, contest_id)``.

    Raises:
        MalformedDataError: if the value is not of the form ``<casilla>/<contest>``.
    """
    casilla_id, sep, contest_id = value.rpartition(ACTA_ID_SEPARATOR)
    if not sep or not casilla_id or not contest_id:
        raise MalformedDataError(f"acta id {value!r} is not of the form <casilla>/<contest>")
    return casilla_id, contest_id


class CasillaInfo(NamedTuple):
    """One casilla of the catalogue with the units it belongs to.

    A named tuple because a national catalogue builds 160,000 of them: a frozen
    dataclass costs about 40 times more to construct, seconds instead of milliseconds.
    """

    id: str
    position: int  # position in the definition's casilla list
    section_id: str
    district_id: str
    state_id: str
    type: election_pb2.CasillaType.ValueType
    nominal_list: int
    party_representatives: int
    ballot_limit: int
    # The race the casilla votes in for each contest, by contest index; None where its
    # type receives no acta of the contest or no race of the contest contains it. One
    # tuple is shared by every casilla of a district and type.
    races: tuple[RaceInfo | None, ...]

    @property
    def is_special(self) -> bool:
        """Whether this is a special casilla (no nominal list, a ballot limit)."""
        return self.type == _ESPECIAL

    @property
    def vote_limit(self) -> int:
        """The most votes an acta of this casilla may hold under PREP's rule.

        Nominal list plus party representatives, or the ballot limit of a special casilla.
        """
        if self.type == _ESPECIAL:
            return self.ballot_limit
        return self.nominal_list + self.party_representatives


@dataclass(frozen=True, slots=True)
class ContestInfo:
    """One contest, its options in ballot order and its races."""

    id: str
    index: int
    name: str
    option_ids: tuple[str, ...]
    option_index: Mapping[str, int]  # option id -> position in ballot order
    option_parties: Mapping[str, tuple[str, ...]]  # option id -> the parties it stands for
    scope: Level  # the level of its races' units
    races: tuple[RaceInfo, ...]  # in definition order
    race_by_unit: Mapping[str, RaceInfo]  # unit id ("" for the nation) -> its race

    def race_containing(self, state_id: str, district_id: str) -> RaceInfo | None:
        """The race of this contest whose unit contains a district (None if none does)."""
        if self.scope == NATIONAL:
            return self.race_by_unit.get("")
        if self.scope == STATE:
            return self.race_by_unit.get(state_id)
        return self.race_by_unit.get(district_id)


def _check_id(value: str, entity: str, where: str) -> None:
    if not value:
        raise MalformedDataError(f"{where}: field 'id' of {entity} is empty")


class ElectionIndex:
    """A validated, indexed, immutable view of an ``ElectionDefinition``.

    Build it with :meth:`from_bytes` (the bytes as received, hashed exactly) or
    :meth:`from_pb` (serialized deterministically once, then hashed).
    """

    __slots__ = (
        "_casilla_list",
        "_casillas",
        "_casillas_by_district",
        "_casillas_by_section",
        "_casillas_by_state",
        "_coalitions",
        "_contest_list",
        "_contests",
        "_district_state",
        "_districts",
        "_race_list",
        "_races",
        "_receives",
        "_section_district",
        "_sections",
        "_states",
        "definition_bytes",
        "definition_sha256",
        "pb",
    )

    definition_bytes: bytes
    definition_sha256: bytes
    pb: election_pb2.ElectionDefinition

    def __init__(self, *, pb: election_pb2.ElectionDefinition, definition_bytes: bytes) -> None:
        """Index ``pb``, whose serialized form is ``definition_bytes``.

        Prefer :meth:`from_bytes` or :meth:`from_pb`, which guarantee the two agree.

        Raises:
            MalformedDataError: if the definition is not valid (see the module docstring).
        """
        self.pb = pb
        self.definition_bytes = definition_bytes
        self.definition_sha256 = hashlib.sha256(definition_bytes).digest()
        self._index(pb)

    @classmethod
    def from_bytes(cls, data: bytes) -> ElectionIndex:
        """Parse and index a serialized ``ElectionDefinition``; hash exactly ``data``.

        Raises:
            MalformedDataError: if the bytes do not parse or the definition is not valid.
        """
        pb = ElectionDefinitionPb()
        try:
            pb.ParseFromString(data)
        except DecodeError as e:
            raise MalformedDataError(f"election definition does not parse: {e}") from e
        return cls(pb=pb, definition_bytes=bytes(data))

    @classmethod
    def from_pb(cls, pb: election_pb2.ElectionDefinition) -> ElectionIndex:
        """Index a definition message, serialized deterministically once and hashed.

        The message is copied, so later changes to ``pb`` do not affect the index.

        Raises:
            MalformedDataError: if the definition is not valid.
        """
        data = pb.SerializeToString(deterministic=True)
        return cls.from_bytes(data)

    # -- construction -------------------------------------------------------------------

    def _index(self, pb: election_pb2.ElectionDefinition) -> None:
        if not pb.id:
            raise MalformedDataError("election: field 'id' is empty")
        party_ids = self._index_parties(pb)
        ballots = self._index_contest_options(pb, party_ids)
        self._coalitions = index_coalitions(pb, party_ids)
        self._index_geography(pb)
        races = index_races(
            pb,
            ballots,
            self._coalitions,
            {STATE: frozenset(self._states), DISTRICT: frozenset(self._districts)},
        )
        contests: dict[str, ContestInfo] = {}
        for ballot, contest in zip(ballots, pb.contests, strict=True):
            contest_races = races[ballot.id]
            _check_independent_options(ballot, contest_races)
            contests[ballot.id] = ContestInfo(
                id=ballot.id,
                index=ballot.index,
                name=contest.name,
                option_ids=ballot.option_ids,
                option_index=MappingProxyType({o: i for i, o in enumerate(ballot.option_ids)}),
                option_parties=ballot.option_parties,
                scope=ballot.scope,
                races=contest_races,
                race_by_unit=MappingProxyType({r.unit_id: r for r in contest_races}),
            )
        self._contests: Mapping[str, ContestInfo] = MappingProxyType(contests)
        self._contest_list: tuple[ContestInfo, ...] = tuple(contests.values())
        self._race_list: tuple[RaceInfo, ...] = tuple(r for c in races.values() for r in c)
        self._races: Mapping[str, RaceInfo] = MappingProxyType({r.id: r for r in self._race_list})
        self._receives = self._index_ballots(pb)
        self._index_casillas(pb)

    @staticmethod
    def _index_parties(pb: election_pb2.ElectionDefinition) -> frozenset[str]:
        # (1) parties
        party_ids: set[str] = set()
        for i, party in enumerate(pb.parties):
            _check_id(party.id, "party", f"parties[{i}]")
            if party.id in party_ids:
                raise MalformedDataError(f"parties[{i}]: duplicate party id {party.id!r}")
            party_ids.add(party.id)
        return frozenset(party_ids)

    @staticmethod
    def _index_contest_options(
        pb: election_pb2.ElectionDefinition, party_ids: frozenset[str]
    ) -> list[ContestBallot]:
        # (1)(2)(3) contests and their options
        ballots: list[ContestBallot] = []
        seen: set[str] = set()
        for ci, contest in enumerate(pb.contests):
            where = f"contests[{ci}]"
            _check_id(contest.id, "contest", where)
            if ACTA_ID_SEPARATOR in contest.id:
                raise MalformedDataError(
                    f"{where}: field 'id' {contest.id!r} contains {ACTA_ID_SEPARATOR!r}"
                )
            if contest.id in seen:
                raise MalformedDataError(f"{where}: duplicate contest id {contest.id!r}")
            seen.add(contest.id)
            if not contest.options:
                raise MalformedDataError(f"{where}: contest {contest.id!r} has no options")
            option_parties: dict[str, tuple[str, ...]] = {}
            for oi, option in enumerate(contest.options):
                owhere = f"{where}.options[{oi}]"
                _check_id(option.id, "vote option", owhere)
                if option.id in option_parties:
                    raise MalformedDataError(f"{owhere}: duplicate option id {option.id!r}")
                for pid in option.party_ids:
                    if pid not in party_ids:
                        raise MalformedDataError(
                            f"{owhere}: field 'party_ids' names unknown party {pid!r}"
                        )
                option_parties[option.id] = tuple(option.party_ids)
            scope = contest.scope or NATIONAL
            ballots.append(
                ContestBallot(
                    id=contest.id,
                    index=ci,
                    scope=scope,
                    option_ids=tuple(option_parties),
                    option_parties=MappingProxyType(option_parties),
                )
            )
        return ballots

    def _index_geography(self, pb: election_pb2.ElectionDefinition) -> None:
        # (1) states
        states: dict[str, int] = {}
        for i, state in enumerate(pb.states):
            _check_id(state.id, "state", f"states[{i}]")
            if state.id in states:
                raise MalformedDataError(f"states[{i}]: duplicate state id {state.id!r}")
            states[state.id] = i
        self._states: tuple[str, ...] = tuple(states)

        # (1)(2) districts
        district_state: dict[str, str] = {}
        for i, district in enumerate(pb.districts):
            _check_id(district.id, "district", f"districts[{i}]")
            if district.id in district_state:
                raise MalformedDataError(f"districts[{i}]: duplicate district id {district.id!r}")
            if district.state_id not in states:
                raise MalformedDataError(
                    f"districts[{i}]: field 'state_id' names unknown state {district.state_id!r}"
                )
            district_state[district.id] = district.state_id
        self._district_state: Mapping[str, str] = MappingProxyType(district_state)
        self._districts: tuple[str, ...] = tuple(district_state)

        # (1)(2) sections
        section_district: dict[str, str] = {}
        for i, section in enumerate(pb.sections):
            _check_id(section.id, "section", f"sections[{i}]")
            if section.id in section_district:
                raise MalformedDataError(f"sections[{i}]: duplicate section id {section.id!r}")
            if section.district_id not in district_state:
                raise MalformedDataError(
                    f"sections[{i}]: field 'district_id' names unknown district "
                    f"{section.district_id!r}"
                )
            section_district[section.id] = section.district_id
        self._section_district: Mapping[str, str] = MappingProxyType(section_district)
        self._sections: tuple[str, ...] = tuple(section_district)

    def _index_ballots(self, pb: election_pb2.ElectionDefinition) -> Mapping[int, frozenset[str]]:
        # (6) which contests each casilla type receives
        receives: dict[int, frozenset[str]] = {}
        for i, entry in enumerate(pb.ballots):
            where = f"ballots[{i}]"
            if entry.type not in _KNOWN_TYPES:
                raise MalformedDataError(f"{where}: field 'type' is {entry.type} (unknown)")
            if entry.type in receives:
                raise MalformedDataError(f"{where}: casilla type {entry.type} is listed twice")
            ids = list(entry.contest_ids)
            for cid in ids:
                if cid not in self._contests:
                    raise MalformedDataError(
                        f"{where}: field 'contest_ids' names unknown contest {cid!r}"
                    )
            if len(set(ids)) != len(ids):
                raise MalformedDataError(f"{where}: field 'contest_ids' repeats a contest")
            receives[entry.type] = frozenset(ids)
        every = frozenset(self._contests)
        return MappingProxyType({t: receives.get(t, every) for t in _KNOWN_TYPES})

    def _index_casillas(self, pb: election_pb2.ElectionDefinition) -> None:
        # (1)(2)(4) casillas
        section_district = self._section_district
        district_state = self._district_state
        casillas: dict[str, CasillaInfo] = {}
        by_section: dict[str, list[str]] = {s: [] for s in section_district}
        by_district: dict[str, list[str]] = {d: [] for d in district_state}
        by_state: dict[str, list[str]] = {s: [] for s in self._states}
        # One races tuple per (district, type), shared by its casillas.
        races_of: dict[tuple[str, int], tuple[RaceInfo | None, ...]] = {}
        for i, casilla in enumerate(pb.casillas):
            cid = casilla.id
            if not cid:
                raise MalformedDataError(f"casillas[{i}]: field 'id' of casilla is empty")
            if cid in casillas:
                raise MalformedDataError(f"casillas[{i}]: duplicate casilla id {cid!r}")
            sid = casilla.section_id
            did = section_district.get(sid)
            if did is None:
                raise MalformedDataError(
                    f"casillas[{i}] {cid!r}: field 'section_id' names unknown section {sid!r}"
                )
            ctype = casilla.type
            _check_casilla_counts(i, casilla)
            state_id = district_state[did]
            races = races_of.get((did, ctype))
            if races is None:
                receives = self._receives[ctype]
                races = tuple(
                    c.race_containing(state_id, did) if c.id in receives else None
                    for c in self._contest_list
                )
                races_of[(did, ctype)] = races
            casillas[cid] = CasillaInfo(
                cid,
                i,
                sid,
                did,
                state_id,
                ctype,
                casilla.nominal_list,
                casilla.party_representatives,
                casilla.ballot_limit,
                races,
            )
            by_section[sid].append(cid)
            by_district[did].append(cid)
            by_state[state_id].append(cid)
        self._casillas: Mapping[str, CasillaInfo] = MappingProxyType(casillas)
        self._casilla_list: tuple[CasillaInfo, ...] = tuple(casillas.values())
        self._casillas_by_section: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {k: tuple(v) for k, v in by_section.items()}
        )
        self._casillas_by_district: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {k: tuple(v) for k, v in by_district.items()}
        )
        self._casillas_by_state: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {k: tuple(v) for k, v in by_state.items()}
        )

    # -- identity -----------------------------------------------------------------------

    @property
    def election_id(self) -> str:
        """The election's id."""
        return self.pb.id

    @property
    def name(self) -> str:
        """The election's display name."""
        return self.pb.name

    def __repr__(self) -> str:
        return (
            f"ElectionIndex(id={self.pb.id!r}, casillas={len(self._casilla_list)}, "
            f"sha256={self.definition_sha256.hex()[:16]}...)"
        )

    # -- parties and contests -----------------------------------------------------------

    @property
    def party_ids(self) -> tuple[str, ...]:
        """Party ids in definition order."""
        return tuple(p.id for p in self.pb.parties)

    @property
    def contests(self) -> tuple[ContestInfo, ...]:
        """Contests in definition order."""
        return self._contest_list

    @property
    def contest_ids(self) -> tuple[str, ...]:
        """Contest ids in definition order."""
        return tuple(c.id for c in self._contest_list)

    def contest(self, contest_id: str) -> ContestInfo:
        """The contest ``contest_id``.

        Raises:
            LookupError: if there is no such contest.
        """
        try:
            return self._contests[contest_id]
        except KeyError:
            raise LookupError(f"unknown contest {contest_id!r}") from None

    def option_ids(self, contest_id: str) -> tuple[str, ...]:
        """Option ids of ``contest_id`` in ballot order.

        Raises:
            LookupError: if there is no such contest.
        """
        return self.contest(contest_id).option_ids

    def party(self, party_id: str) -> election_pb2.Party:
        """The party ``party_id`` as defined.

        Raises:
            LookupError: if there is no such party (the message lists the valid ids).
        """
        for party in self.pb.parties:
            if party.id == party_id:
                return party
        raise LookupError(f"unknown party {party_id!r} (ids: {', '.join(self.party_ids)})")

    @property
    def coalitions(self) -> tuple[CoalitionInfo, ...]:
        """Coalitions in definition order."""
        return tuple(self._coalitions.values())

    # -- races --------------------------------------------------------------------------

    @property
    def races(self) -> tuple[RaceInfo, ...]:
        """Every race, contests in definition order (a contest without races has one)."""
        return self._race_list

    def race(self, race_id: str) -> RaceInfo:
        """The race ``race_id``.

        Raises:
            LookupError: if there is no such race.
        """
        try:
            return self._races[race_id]
        except KeyError:
            raise LookupError(f"unknown race {race_id!r}") from None

    def race_of(self, casilla_id: str, contest_id: str) -> RaceInfo | None:
        """The race a casilla votes in for a contest; None if it has no acta of it.

        Raises:
            LookupError: if there is no such casilla or contest.
        """
        return self.casilla(casilla_id).races[self.contest(contest_id).index]

    def receives(self, casilla_type: election_pb2.CasillaType.ValueType) -> frozenset[str]:
        """Ids of the contests a casilla type receives an acta of."""
        return self._receives.get(casilla_type, frozenset())

    # -- the night ----------------------------------------------------------------------

    @property
    def is_test(self) -> bool:
        """Whether the definition is of a rehearsal (its results are test data)."""
        return self.pb.test

    @property
    def close_time(self) -> dt.datetime | None:
        """When the night closes, if the definition says (UTC)."""
        if not self.pb.HasField("close_time"):
            return None
        return self.pb.close_time.ToDatetime(tzinfo=dt.UTC)

    # -- geography ----------------------------------------------------------------------

    @property
    def state_ids(self) -> tuple[str, ...]:
        """State ids in definition order."""
        return self._states

    @property
    def district_ids(self) -> tuple[str, ...]:
        """District ids in definition order."""
        return self._districts

    @property
    def section_ids(self) -> tuple[str, ...]:
        """Section ids in definition order."""
        return self._sections

    def district_state(self, district_id: str) -> str:
        """The state of a district.

        Raises:
            LookupError: if there is no such district.
        """
        try:
            return self._district_state[district_id]
        except KeyError:
            raise LookupError(f"unknown district {district_id!r}") from None

    def section_district(self, section_id: str) -> str:
        """The district of a section.

        Raises:
            LookupError: if there is no such section.
        """
        try:
            return self._section_district[section_id]
        except KeyError:
            raise LookupError(f"unknown section {section_id!r}") from None

    # -- casillas -----------------------------------------------------------------------

    @property
    def casillas(self) -> tuple[CasillaInfo, ...]:
        """Every casilla, in definition order."""
        return self._casilla_list

    def __len__(self) -> int:
        return len(self._casilla_list)

    def casilla(self, casilla_id: str) -> CasillaInfo:
        """The casilla ``casilla_id``.

        Raises:
            LookupError: if there is no such casilla.
        """
        try:
            return self._casillas[casilla_id]
        except KeyError:
            raise LookupError(f"unknown casilla {casilla_id!r}") from None

    def has_casilla(self, casilla_id: str) -> bool:
        """Whether the catalogue has a casilla ``casilla_id``."""
        return casilla_id in self._casillas

    def casilla_map(self) -> Mapping[str, CasillaInfo]:
        """A read-only mapping casilla id -> :class:`CasillaInfo` (for fast lookups)."""
        return self._casillas

    def casillas_in_state(self, state_id: str) -> tuple[str, ...]:
        """Casilla ids of a state, in definition order.

        Raises:
            LookupError: if there is no such state.
        """
        return _lookup(self._casillas_by_state, state_id, "state")

    def casillas_in_district(self, district_id: str) -> tuple[str, ...]:
        """Casilla ids of a district, in definition order.

        Raises:
            LookupError: if there is no such district.
        """
        return _lookup(self._casillas_by_district, district_id, "district")

    def casillas_in_section(self, section_id: str) -> tuple[str, ...]:
        """Casilla ids of a section, in definition order.

        Raises:
            LookupError: if there is no such section.
        """
        return _lookup(self._casillas_by_section, section_id, "section")

    def actas_expected(self, contest_id: str | None = None) -> int:
        """Actas expected nationally, of one contest or of all.

        One per casilla and contest its type receives that has a race containing it.

        Raises:
            LookupError: if there is no such contest.
        """
        if contest_id is None:
            return sum(
                sum(race is not None for race in casilla.races) for casilla in self._casilla_list
            )
        index = self.contest(contest_id).index
        return sum(casilla.races[index] is not None for casilla in self._casilla_list)

    # -- actas --------------------------------------------------------------------------

    def acta_ids(self) -> Iterable[str]:
        """Every acta id expected, casilla by casilla, contests in definition order."""
        contests = self._contest_list
        for casilla in self._casilla_list:
            for contest, race in zip(contests, casilla.races, strict=True):
                if race is not None:
                    yield f"{casilla.id}{ACTA_ID_SEPARATOR}{contest.id}"

    def resolve_acta_id(self, value: str) -> tuple[CasillaInfo, ContestInfo]:
        """The casilla and contest an acta id names.

        Raises:
            MalformedDataError: if the id is malformed or names an unknown casilla or
                contest.
        """
        casilla_id, contest_id = parse_acta_id(value)
        casilla = self._casillas.get(casilla_id)
        if casilla is None:
            raise MalformedDataError(f"acta id {value!r} names unknown casilla {casilla_id!r}")
        contest = self._contests.get(contest_id)
        if contest is None:
            raise MalformedDataError(f"acta id {value!r} names unknown contest {contest_id!r}")
        return casilla, contest


def _lookup(table: Mapping[str, tuple[str, ...]], key: str, what: str) -> tuple[str, ...]:
    try:
        return table[key]
    except KeyError:
        raise LookupError(f"unknown {what} {key!r}") from None


def _check_casilla_counts(i: int, casilla: election_pb2.Casilla) -> None:
    cid = casilla.id
    ctype = casilla.type
    if ctype not in _KNOWN_TYPES:
        raise MalformedDataError(
            f"casillas[{i}] {cid!r}: field 'type' is {ctype} (unspecified or unknown)"
        )
    if ctype == _ESPECIAL:
        if casilla.nominal_list != 0:
            raise MalformedDataError(
                f"casillas[{i}] {cid!r}: field 'nominal_list' must be 0 for a special "
                f"casilla, found {casilla.nominal_list}"
            )
        if casilla.ballot_limit == 0:
            raise MalformedDataError(
                f"casillas[{i}] {cid!r}: field 'ballot_limit' must be > 0 for a special casilla"
            )
    elif casilla.nominal_list == 0:
        raise MalformedDataError(
            f"casillas[{i}] {cid!r}: field 'nominal_list' must be > 0 for a non-special casilla"
        )


def _check_independent_options(contest: ContestBallot, races: tuple[RaceInfo, ...]) -> None:
    """An option standing for no party is an independent candidacy: every race listing it
    must name it as a candidate's (rule 5; checked per race by ``_races`` for races with
    candidates, here for the rest)."""
    for race in races:
        if race.candidates:
            continue
        for option in race.option_ids:
            if not contest.option_parties[option]:
                raise MalformedDataError(
                    f"contests[{contest.index}]: option {option!r} stands for no party, but "
                    f"race {race.id!r} names no independent candidate for it"
                )
