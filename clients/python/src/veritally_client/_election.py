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
   other casillas have a nominal list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple

from google.protobuf.message import DecodeError

from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import election_pb2

__all__ = [
    "ACTA_ID_SEPARATOR",
    "CasillaInfo",
    "ContestInfo",
    "ElectionIndex",
    "acta_id",
    "parse_acta_id",
]

ElectionDefinitionPb = election_pb2.ElectionDefinition

# An acta id is "<casilla_id>/<contest_id>"; contest ids may not contain it, so the last
# separator always splits an acta id unambiguously even if casilla ids contain one.
ACTA_ID_SEPARATOR: Final = "/"

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
    """One contest and its options in ballot order."""

    id: str
    index: int
    name: str
    option_ids: tuple[str, ...]
    option_index: Mapping[str, int]  # option id -> position in ballot order


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
        "_contest_list",
        "_contests",
        "_district_state",
        "_districts",
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
        # (1) parties
        party_ids: set[str] = set()
        for i, party in enumerate(pb.parties):
            _check_id(party.id, "party", f"parties[{i}]")
            if party.id in party_ids:
                raise MalformedDataError(f"parties[{i}]: duplicate party id {party.id!r}")
            party_ids.add(party.id)

        # (1)(2)(3) contests and their options
        contests: dict[str, ContestInfo] = {}
        for ci, contest in enumerate(pb.contests):
            where = f"contests[{ci}]"
            _check_id(contest.id, "contest", where)
            if ACTA_ID_SEPARATOR in contest.id:
                raise MalformedDataError(
                    f"{where}: field 'id' {contest.id!r} contains {ACTA_ID_SEPARATOR!r}"
                )
            if contest.id in contests:
                raise MalformedDataError(f"{where}: duplicate contest id {contest.id!r}")
            if not contest.options:
                raise MalformedDataError(f"{where}: contest {contest.id!r} has no options")
            option_index: dict[str, int] = {}
            for oi, option in enumerate(contest.options):
                owhere = f"{where}.options[{oi}]"
                _check_id(option.id, "vote option", owhere)
                if option.id in option_index:
                    raise MalformedDataError(f"{owhere}: duplicate option id {option.id!r}")
                if not option.party_ids:
                    raise MalformedDataError(
                        f"{owhere}: field 'party_ids' of option {option.id!r} is empty"
                    )
                for pid in option.party_ids:
                    if pid not in party_ids:
                        raise MalformedDataError(
                            f"{owhere}: field 'party_ids' names unknown party {pid!r}"
                        )
                option_index[option.id] = oi
            contests[contest.id] = ContestInfo(
                id=contest.id,
                index=ci,
                name=contest.name,
                option_ids=tuple(o.id for o in contest.options),
                option_index=MappingProxyType(option_index),
            )
        self._contests: Mapping[str, ContestInfo] = MappingProxyType(contests)
        self._contest_list: tuple[ContestInfo, ...] = tuple(contests.values())

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

        # (1)(2)(4) casillas
        casillas: dict[str, CasillaInfo] = {}
        by_section: dict[str, list[str]] = {s: [] for s in section_district}
        by_district: dict[str, list[str]] = {d: [] for d in district_state}
        by_state: dict[str, list[str]] = {s: [] for s in states}
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
                        f"casillas[{i}] {cid!r}: field 'ballot_limit' must be > 0 for a "
                        "special casilla"
                    )
            elif casilla.nominal_list == 0:
                raise MalformedDataError(
                    f"casillas[{i}] {cid!r}: field 'nominal_list' must be > 0 for a "
                    "non-special casilla"
                )
            state_id = district_state[did]
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

    def actas_expected(self) -> int:
        """Actas expected per contest nationally: one per casilla."""
        return len(self._casilla_list)

    # -- actas --------------------------------------------------------------------------

    def acta_ids(self) -> Iterable[str]:
        """Every acta id expected, casilla by casilla, contests in definition order."""
        for casilla in self._casilla_list:
            for contest in self._contest_list:
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
