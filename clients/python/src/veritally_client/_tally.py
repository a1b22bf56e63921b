"""The tally: results as a pure function of the election and of the logged acta records.

Aggregation runs it over the live log and media clients run it to recount a cut; both
must reach byte-identical results, so everything here is exact integer arithmetic in a
fixed order, and serialization is deterministic.

Applying a record (in log order):

1. its ``sequence`` must equal the number of records applied so far (a caller bug
   otherwise: ``ValueError``);
2. its acta id must name a known contest and agree with the acta inside; its casilla
   must be in the catalogue and vote in a race of the contest, or, for a record not
   counted as ``OUT_OF_CATALOGUE``, must not be in the catalogue; every option of the
   casilla's race appears exactly once and no other (a record recorded as missing, "sin
   acta", carries no option at all);
3. its ``counted`` flag and ``not_counted_reason`` must agree (counted <=> no reason);
4. its revision must be 1 for a new acta id, or exactly one more than the last revision
   applied for that acta id;
5. the contribution of the superseded revision (if any) is subtracted from the running
   totals of its district, and the new one is added. A record that is not counted
   contributes a registered acta, its reason and no votes (and a captured acta unless it
   records a missing one); an out-of-catalogue record counts only in the nation's
   ``actas_out_of_catalogue``.

Totals are kept per contest over the contest's whole ballot: a district lies in exactly
one race of each contest, so a district's totals are its race's, and a state's or the
nation's are the sum of their districts' whatever races they span. Each unit then shows,
per contest, either the one race that contains it (race id, the race's options, its
candidates) or, when it holds several races, their sum over the options of any of them.

Rules of the published figures (see docs/adr/0012-results-levels-and-turnout.md and
docs/adr/0080-races-candidates-and-prep-figures.md):

* percentages and shares are percent x 10^4, truncated with integer division
  (:func:`percent_e4`); shares are over the unit's total votes (options, unregistered and
  null);
* candidate votes are the sum of the candidate's options; party votes are those of the
  party's own option;
* ``nominal_list_counted`` sums the nominal lists of casillas whose acta is counted;
  special casillas have none and their ballot limit is never added;
* turnout = votes of counted actas of non-special casillas / nominal_list_counted; on the
  final cut (``final=True``) the votes of counted special casillas are added to the
  numerator, the denominator is unchanged (as PREP does in its final figures);
* an acta has an inconsistency when it is not counted for one (over the list or the
  ballots, all illegible, all blank), or is counted with a figure marked illegible or
  blank, or carries a written total that differs from the sum of its figures.

Speed (a national log is ~500,000 records; a recount must stay within seconds):

* only the district of a record is updated when it is applied; states and the nation
  are summed from their districts when results are read (``_rollup``), and only those
  whose districts changed since the last read;
* a unit's totals of a contest and an acta's contribution are one packed int (a lane of
  128 bits per counter, see ``_Lanes``), so applying a record adds one int and a
  correction subtracts one, whatever the ballot's width; the common record is applied in
  one frame (:meth:`Tally.apply_view`);
* a serialized leaf is parsed with a *view* of ``LogLeaf`` (``_leaf.parse_leaf_view``,
  the leaf format's own reader) in which ``Acta.option_votes`` is ``repeated bytes``:
  protobuf then hands over each option's encoded bytes without building a message per
  option (building them was most of the per-record time). Each distinct unmarked option
  encoding is decoded once, by protobuf itself, and remembered per race ballot position
  (``_RacePlan.votes_at``); an acta whose every option encoding is remembered at its
  position is, by construction, valid in its options and decodes to the same votes.
  Anything else (marked figures included) takes the reference path: the real
  ``LogLeaf`` type (``_leaf.parse_leaf``) and :meth:`Tally.apply`;
* ``results_bytes`` computes every unit's figures at once with numpy and writes
  ``Results.units`` from them (``_results_codec``: a program built once per tally from
  the units' layouts; ~7 ms for a national cut where setting ~80,000 fields on protobuf
  messages took ~30 ms). Totals outside what int64 computes exactly (a lane of 2^32 or
  more, only in a forged log) take the reference path: each unit's kept ``UnitResults``
  message, its fields set again in place for the units changed since the last call, then
  serialized by protobuf. :meth:`Tally.results` builds fresh messages the same way, and
  tests hold the three equal byte for byte.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from veritally_client._election import (
    ACTA_ID_SEPARATOR,
    ContestInfo,
    ElectionIndex,
    RaceInfo,
)
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._leaf import (
    ActaRecordView,
    ActaView,
    field_tag,
    parse_leaf,
    parse_leaf_view,
    varint,
)
from veritally_client._results_codec import ContestEntry, ResultsProgram, UnitEntry

__all__ = ["Tally", "percent_e4"]

OptionVotesPb = acta_pb2.OptionVotes
ActaPb = acta_pb2.Acta
ResultsPb = results_pb2.Results
UnitResultsPb = results_pb2.UnitResults
ContestTotalsPb = results_pb2.ContestTotals
Level: TypeAlias = results_pb2.Level.ValueType
Reason: TypeAlias = acta_pb2.NotCountedReason.ValueType

# Percent x 10^4: 100 (percent) * 10_000 (four decimals).
_PERCENT_E4_SCALE: Final = 1_000_000

_OUT_OF_CATALOGUE: Final = acta_pb2.NOT_COUNTED_REASON_OUT_OF_CATALOGUE
# Reasons of a record that holds no acta ("sin acta"): no figures, not captured.
_MISSING: Final = frozenset(
    {
        acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
        acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
        acta_pb2.NOT_COUNTED_REASON_NO_ENVELOPE,
        acta_pb2.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
    }
)
# The not-counted reasons of catalogue actas, in enum order (UNSPECIFIED = counted and
# OUT_OF_CATALOGUE, which counts in no unit's not_counted, are excluded).
_REASONS: Final = tuple(
    sorted(
        v
        for v in acta_pb2.NotCountedReason.values()
        if v not in (acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED, _OUT_OF_CATALOGUE)
    )
)
_REASON_SLOT: Final = {reason: slot for slot, reason in enumerate(_REASONS)}
_UNMARKED: Final = acta_pb2.FIELD_MARK_UNSPECIFIED

_NATIONAL: Final = results_pb2.LEVEL_NATIONAL
_STATE: Final = results_pb2.LEVEL_STATE
_DISTRICT: Final = results_pb2.LEVEL_DISTRICT
_SECTION: Final = results_pb2.LEVEL_SECTION
_CASILLA: Final = results_pb2.LEVEL_CASILLA

# Distinct option encodings remembered by one tally (see _RacePlan.votes_at). A
# national election needs about 60,000 (18 options x ~1,000 vote counts x 3 contests,
# a few more with marks); the limit bounds memory (~100 bytes each, so ~40 MB) against
# a log crafted to hold only distinct encodings, which then simply takes the slower path.
_OPTION_ENCODINGS_LIMIT: Final = 400_000


# Results.units is written after the fields before it and before Results.test, so that
# unit entries can be put between the two in deterministic (field-number) order.
_UNITS_TAG: Final = field_tag(ResultsPb.DESCRIPTOR, "units")
assert [f.name for f in ResultsPb.DESCRIPTOR.fields if f.number > 5] == ["test"]


# -- the tally ----------------------------------------------------------------------------


def percent_e4(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` as percent x 10^4, truncated; 0 if the denominator is 0.

    93.12345% is 931234. Integer arithmetic only, so every party computes the same digits.

    Raises:
        ValueError: if either argument is negative.
    """
    if numerator < 0 or denominator < 0:
        raise ValueError(f"percent_e4 of negative values {numerator}/{denominator}")
    if denominator == 0:
        return 0
    return numerator * _PERCENT_E4_SCALE // denominator


# Running totals of one contest in one unit, and the contribution of one acta, share one
# flat layout of counters ("lanes"), packed into one Python int of 128 bits per lane
# (lane i at bits 128i..128i+127): adding or removing a contribution is then one integer
# addition, whatever the width, instead of a dozen attribute updates or an element-wise
# map() per record. No lane can carry into the next: a contribution's lanes are below
# 2^64 (struct's "Q" refuses more), so 2^64 records cannot fill 128 bits, and a unit's
# totals are always the sum of the contributions applied, so a removed contribution never
# exceeds what its lanes hold. A total of 2^64 or more, which no uint64 field of the
# results can hold, is found when the totals are unpacked (_Lanes.totals).
_REGISTERED: Final = 0  # actas with a record (captured or recorded missing)
_CAPTURED: Final = 1  # actas captured (with figures)
_COUNTED: Final = 2  # actas counted
_INCONSISTENT: Final = 3  # actas with an inconsistency
_NOMINAL: Final = 4  # nominal lists of counted non-special casillas
_NONSPECIAL_VOTES: Final = 5  # votes of counted non-special casillas
_SPECIAL_VOTES: Final = 6  # votes of counted special casillas
_NOT_COUNTED: Final = 7  # actas not counted, one slot per reason in _REASONS
_VOTES: Final = _NOT_COUNTED + len(_REASONS)  # options in ballot order, unregistered, null
# The counters' lanes by name, for the vectorised results (_results_codec).
_COUNTER_LANES: Final = {
    "registered": _REGISTERED,
    "captured": _CAPTURED,
    "counted": _COUNTED,
    "inconsistent": _INCONSISTENT,
    "nominal": _NOMINAL,
    "nonspecial_votes": _NONSPECIAL_VOTES,
    "special_votes": _SPECIAL_VOTES,
}
_LANE: Final = 16  # bytes per lane
_VALUE: Final = "Q8x"  # a lane of struct: its value in the low 8 bytes, 8 zero bytes
_EMPTY: Final = f"{_LANE}x"  # a lane of zeros

Totals: TypeAlias = tuple[int, ...]  # the lanes of a packed int, unpacked
Packed: TypeAlias = int


class _Lanes:
    """The packed totals of a contest with ``width`` vote lanes: unpacking."""

    __slots__ = ("_high", "_size", "_unpack", "pack")

    def __init__(self, width: int) -> None:
        lanes = _VOTES + width
        self._size = lanes * _LANE
        layout = struct.Struct("<" + _VALUE * lanes)
        self.pack = layout.pack
        self._unpack = layout.unpack
        self._high = int.from_bytes((b"\0" * 8 + b"\xff" * 8) * lanes, "little")

    def totals(self, packed: Packed) -> Totals:
        """The lanes of ``packed``, each a uint64.

        Raises:
            MalformedDataError: if a lane holds 2^64 or more.
        """
        if packed & self._high:
            raise MalformedDataError("a total of the log's actas exceeds 2^64 - 1")
        return self._unpack(packed.to_bytes(self._size, "little"))


def _not_counted_contribution(reason: Reason, width: int) -> Packed:
    """What a not-counted acta contributes: a registered acta (captured unless missing),
    its reason (an inconsistency unless missing), no votes."""
    reasons = [0] * len(_REASONS)
    reasons[_REASON_SLOT[reason]] = 1
    captured = 0 if reason in _MISSING else 1
    lanes = (1, captured, 0, captured, 0, 0, 0, *reasons) + (0,) * width
    return int.from_bytes(_Lanes(width).pack(*lanes), "little")


# Per-acta and per-casilla records are plain tuples of ints, not named tuples: the
# garbage collector stops tracking an exact tuple of ints, and a national tally holds
# ~500,000 actas and 160,000 casillas, which otherwise every full collection walks
# (about a sixth of a recount's time).

# The last revision applied of an acta, kept small (a national tally holds ~500,000):
# for a counted acta the bytes of _RacePlan.state (its revision, then its lanes up to the
# reasons and its race's votes, 8 bytes each: ~230 bytes, where its packed contribution
# in 128-bit lanes of the contest's whole ballot takes ~570), rebuilt into a contribution
# only when it is superseded; for an acta not counted, (reason, revision).
_ActaState: TypeAlias = bytes | tuple[Reason, int]


class _RacePlan:
    """Per-race tables for decoding an acta's options into its contest's totals."""

    __slots__ = ("_state", "contest", "not_counted", "pack", "race", "votes_at", "width")

    def __init__(
        self, race: RaceInfo, contest: ContestInfo, known: dict[str, dict[bytes, int]]
    ) -> None:
        self.race = race
        self.contest = contest
        self.width = len(contest.option_ids) + 2  # the contest's options, unregistered, null
        self.not_counted = {
            reason: _not_counted_contribution(reason, self.width) for reason in _REASONS
        }
        # Packs a counted acta: the lanes up to the reasons (registered, captured, counted,
        # inconsistent, nominal list, non-special votes, special votes), the reasons as
        # zero bytes, then the race's votes (its options, unregistered, null) at their
        # lanes of the contest's layout, the contest's options outside the race as zero
        # bytes (the race's ballot is in the contest's order).
        race_positions = frozenset(race.positions)
        options = "".join(
            _VALUE if p in race_positions else _EMPTY for p in range(len(contest.option_ids))
        )
        self.pack = struct.Struct(
            "<" + _VALUE * _NOT_COUNTED + _EMPTY * len(_REASONS) + options + _VALUE * 2
        ).pack
        self._state = struct.Struct(f"<{1 + _NOT_COUNTED + len(race.option_ids) + 2}Q")
        # votes_at[i]: encoded OptionVotes -> votes, for unmarked encodings that protobuf
        # decoded to option i of the race's ballot. Lookups at each position by map() at
        # C speed check the option order and decode the votes in one pass. An encoding
        # holds its option id, so the races of a contest share one table per option
        # (``known``, by option id): 300 district races learn as fast as one.
        self.votes_at: tuple[dict[bytes, int], ...] = tuple(
            known.setdefault(option_id, {}) for option_id in race.option_ids
        )

    def counted(
        self,
        key: str,
        revision: int,
        inconsistent: int,
        nominal_list: int | None,
        votes: list[int],
    ) -> tuple[Packed, bytes]:
        """The contribution of a counted acta of a non-special casilla with that nominal
        list, or of a special casilla (``nominal_list`` None), and the state to keep of
        it; ``votes`` in the race's order (options, unregistered, null).

        Raises:
            MalformedDataError: if the acta's total is 2^64 or more.
        """
        total = sum(votes)
        if nominal_list is None:
            lanes = (1, 1, 1, inconsistent, 0, 0, total, *votes)
        else:
            lanes = (1, 1, 1, inconsistent, nominal_list, total, 0, *votes)
        try:
            data = self.pack(*lanes)
        except struct.error:
            raise MalformedDataError(f"acta {key!r}: its total exceeds 2^64 - 1") from None
        return int.from_bytes(data, "little"), self._state.pack(revision, *lanes)

    def contribution(self, state: _ActaState) -> Packed:
        """The packed contribution of an acta of this race from its kept state."""
        if isinstance(state, bytes):
            lanes = self._state.unpack(state)[1:]
            return int.from_bytes(self.pack(*lanes), "little")
        return self.not_counted[state[0]]


def _revision(state: _ActaState) -> int:
    """The revision an acta's kept state records."""
    if isinstance(state, bytes):
        return int.from_bytes(state[:8], "little")
    return state[1]


# What applying needs of a casilla: (unit position of its district, special, nominal
# list, its race plan per contest index or None).
_CasillaSlot: TypeAlias = tuple[int, bool, int, tuple[_RacePlan | None, ...]]


class _Layout:
    """What one contest shows in one unit: its race (if one), options, candidates, parties."""

    __slots__ = ("candidates", "contest", "expected", "parties", "positions", "race")

    def __init__(
        self,
        contest: ContestInfo,
        race: RaceInfo | None,
        positions: tuple[int, ...],
        party_order: Sequence[str],
    ) -> None:
        self.contest = contest
        self.race = race
        self.positions = positions
        self.expected = 0
        candidates = race.candidates if race is not None else ()
        index = contest.option_index
        self.candidates = tuple((c.id, tuple(index[o] for o in c.option_ids)) for c in candidates)
        own = {
            contest.option_parties[contest.option_ids[p]][0]: p
            for p in positions
            if len(contest.option_parties[contest.option_ids[p]]) == 1
        }
        self.parties = tuple((pid, own[pid]) for pid in party_order if pid in own)


class _ContestMessage:
    """The ContestTotals message of one contest in one unit, and its parts."""

    __slots__ = (
        "candidates",
        "completeness",
        "layout",
        "message",
        "not_counted",
        "options",
        "parties",
    )

    def __init__(self, message: results_pb2.ContestTotals, layout: _Layout) -> None:
        self.message = message
        self.layout = layout
        contest = layout.contest
        message.contest_id = contest.id
        if layout.race is not None:
            message.race_id = layout.race.id
        self.options = [
            message.options.add(option_id=contest.option_ids[p]) for p in layout.positions
        ]
        self.candidates = [message.candidates.add(candidate_id=c) for c, _ in layout.candidates]
        self.parties = [message.parties.add(party_id=p) for p, _ in layout.parties]
        # Present even when every count is zero, as in a freshly built message.
        message.completeness.SetInParent()
        self.completeness = message.completeness
        # (reason, actas) of completeness.not_counted, compared as a list: it rarely
        # changes, and reading it back from the message costs more than the compare.
        self.not_counted: list[tuple[Reason, int]] = []

    def update(self, acc: Totals, final: bool, outside: int) -> None:
        """Set every field from ``acc`` (``outside``: out-of-catalogue actas).

        Raises:
            MalformedDataError: if a figure does not fit its uint64 field: a forged log's
                share or turnout can pass 2^64 - 1 (a total far above the nominal list)
                although every lane fits; protobuf's setter would raise a bare ValueError.
        """
        try:
            self._set(acc, final, outside)
        except ValueError as e:
            raise MalformedDataError(
                f"a figure of contest {self.layout.contest.id} exceeds 2^64 - 1"
            ) from e

    def _set(self, acc: Totals, final: bool, outside: int) -> None:
        layout = self.layout
        votes = acc[_VOTES:]
        message = self.message
        total = sum(votes)
        message.total_votes = total
        # Shares as percent_e4 computes them, inlined: this runs for every entry of every
        # changed unit at every cut. Counts and totals are never negative.
        scale = _PERCENT_E4_SCALE
        for option, count in zip(
            self.options, map(votes.__getitem__, layout.positions), strict=True
        ):
            option.votes = count
            option.share_percent_e4 = count * scale // total if total else 0
        for candidate, (_, positions) in zip(self.candidates, layout.candidates, strict=True):
            count = sum(map(votes.__getitem__, positions))
            candidate.votes = count
            candidate.share_percent_e4 = count * scale // total if total else 0
        for party, (_, position) in zip(self.parties, layout.parties, strict=True):
            count = votes[position]
            party.votes = count
            party.share_percent_e4 = count * scale // total if total else 0
        n = len(layout.contest.option_ids)
        message.unregistered_votes = votes[n]
        message.null_votes = votes[n + 1]
        message.unregistered_share_percent_e4 = votes[n] * scale // total if total else 0
        message.null_share_percent_e4 = votes[n + 1] * scale // total if total else 0
        expected = layout.expected
        registered = acc[_REGISTERED]
        counted = acc[_COUNTED]
        nominal = acc[_NOMINAL]
        numerator = acc[_NONSPECIAL_VOTES] + (acc[_SPECIAL_VOTES] if final else 0)
        completeness = self.completeness
        completeness.actas_expected = expected
        completeness.actas_registered = registered
        completeness.actas_captured = acc[_CAPTURED]
        completeness.actas_counted = counted
        completeness.actas_not_counted = registered - counted
        completeness.actas_out_of_catalogue = outside
        not_counted = [
            (_REASONS[slot], count) for slot, count in enumerate(acc[_NOT_COUNTED:_VOTES]) if count
        ]
        if not_counted != self.not_counted:
            entries = completeness.not_counted
            del entries[:]
            for reason, count in not_counted:
                entries.add(reason=reason, actas=count)
            self.not_counted = not_counted
        completeness.captured_percent_e4 = percent_e4(acc[_CAPTURED], expected)
        completeness.counted_percent_e4 = percent_e4(counted, expected)
        completeness.actas_inconsistent = acc[_INCONSISTENT]
        completeness.inconsistent_percent_e4 = percent_e4(acc[_INCONSISTENT], expected)
        completeness.nominal_list_counted = nominal
        completeness.turnout_percent_e4 = percent_e4(numerator, nominal)
        completeness.total_votes_with_special = acc[_NONSPECIAL_VOTES] + acc[_SPECIAL_VOTES]
        completeness.total_votes_without_special = acc[_NONSPECIAL_VOTES]


def _inconsistent(acta: ActaPb | ActaView, total: int) -> int:
    """1 if a counted acta has an inconsistency besides its options' marks (a marked
    unregistered or null figure, or a written total that is not the sum), else 0."""
    if acta.unregistered_mark != _UNMARKED or acta.null_mark != _UNMARKED:
        return 1
    if acta.HasField("counts"):
        counts = acta.counts
        if counts.HasField("total_votes_written") and counts.total_votes_written != total:
            return 1
    return 0


class Tally:
    """Totals at every level, maintained incrementally from acta records in log order."""

    def __init__(self, election: ElectionIndex) -> None:
        """Start an empty tally of ``election``."""
        self._election = election
        self._contests: tuple[ContestInfo, ...] = election.contests
        self._contest_pos = {c.id: c.index for c in self._contests}
        self._widths = [len(c.option_ids) + 2 for c in self._contests]
        # Option encodings learnt, per contest and option id (see _RacePlan.votes_at).
        known: list[dict[str, dict[bytes, int]]] = [{} for _ in self._contests]
        self._plans = {
            race.id: _RacePlan(race, self._contests[race.contest_index], known[race.contest_index])
            for race in election.races
        }
        self._option_encodings = 0
        # Units of the results blob: nation, states, districts (definition order).
        states = election.state_ids
        districts = election.district_ids
        self._unit_keys: list[tuple[Level, str]] = [(_NATIONAL, "")]
        self._unit_keys += [(_STATE, s) for s in states]
        self._unit_keys += [(_DISTRICT, d) for d in districts]
        self._unit_pos = {key: pos for pos, key in enumerate(self._unit_keys)}
        # Districts of each state (positions), for the roll-up.
        self._state_districts: list[tuple[int, list[int]]] = [
            (self._unit_pos[(_STATE, s)], []) for s in states
        ]
        state_slot = {s: i for i, s in enumerate(states)}
        for d in districts:
            state = election.district_state(d)
            self._state_districts[state_slot[state]][1].append(self._unit_pos[(_DISTRICT, d)])
        self._casillas: dict[str, _CasillaSlot] = {}
        plan_tuples: dict[int, tuple[_RacePlan | None, ...]] = {}
        for c in election.casillas:
            plans = plan_tuples.get(id(c.races))
            if plans is None:
                plans = tuple(None if r is None else self._plans[r.id] for r in c.races)
                plan_tuples[id(c.races)] = plans
            district_pos = self._unit_pos[(_DISTRICT, c.district_id)]
            self._casillas[c.id] = (district_pos, c.is_special, c.nominal_list, plans)
        # What each unit shows of each contest (None: the contest is not held there).
        self._layouts = self._unit_layouts()
        # Running totals: [contest index][unit position]. Only districts are updated by
        # apply(); states and the nation by _rollup().
        self._acc: list[list[Packed]] = [[0] * len(self._unit_keys) for _ in self._widths]
        self._lanes = [_Lanes(width) for width in self._widths]
        self._actas: dict[str, _ActaState] = {}
        # Out-of-catalogue actas: acta id -> last revision, and their count per contest.
        self._outside: dict[str, int] = {}
        self._outside_count = [0] * len(self._contests)
        self._records = 0
        # _version[pos]: the record count when the unit's totals last changed. Derived
        # units take the newest of their parts, at the roll-up of record count _rolled.
        self._version = [0] * len(self._unit_keys)
        self._rolled = 0
        # results_bytes() per final flag while no record is applied; each unit's
        # UnitResults message (its contests as _ContestMessage) with the (version,
        # final) its fields were last set for; and per final flag each unit's serialized
        # entry of Results.units with the version it holds (-1: none yet).
        self._cache: dict[bool, bytes] = {}
        # The vectorised results program, built at the first results_bytes().
        self._program: ResultsProgram | None = None
        self._units = [self._unit_message(pos) for pos in range(len(self._unit_keys))]
        self._unit_set_for: list[tuple[int, bool]] = [(-1, False)] * len(self._unit_keys)
        self._entries: dict[bool, list[bytes]] = {
            flag: [b""] * len(self._unit_keys) for flag in (False, True)
        }
        self._entry_version: dict[bool, list[int]] = {
            flag: [-1] * len(self._unit_keys) for flag in (False, True)
        }

    def _unit_layouts(self) -> list[list[_Layout | None]]:
        """Per unit position, per contest: the race that contains the unit, or the races
        within it, with the actas expected of the contest there."""
        election = self._election
        party_order = election.party_ids
        layouts: list[list[_Layout | None]] = []
        # Races per contest that each unit contains or is contained by.
        for level, unit_id in self._unit_keys:
            row: list[_Layout | None] = []
            for contest in self._contests:
                if level == _NATIONAL:
                    races = list(contest.races)
                elif level == _STATE:
                    races = [
                        r
                        for r in contest.races
                        if r.level == _NATIONAL
                        or (r.level == _STATE and r.unit_id == unit_id)
                        or (r.level == _DISTRICT and election.district_state(r.unit_id) == unit_id)
                    ]
                else:
                    found = contest.race_containing(election.district_state(unit_id), unit_id)
                    races = [] if found is None else [found]
                if not races:
                    row.append(None)
                    continue
                single = races[0] if len(races) == 1 and _contains(races[0], level) else None
                positions = tuple(sorted({p for r in races for p in r.positions}))
                row.append(_Layout(contest, single, positions, party_order))
            layouts.append(row)
        # Actas expected: per casilla, in its district, then summed upwards. Casillas of
        # one district share a few tuples of races (one per casilla type), so count the
        # casillas per (district, races) first.
        groups: Counter[tuple[str, str, int]] = Counter()
        races_of: dict[int, tuple[RaceInfo | None, ...]] = {}
        for casilla in election.casillas:
            races_of[id(casilla.races)] = casilla.races
            groups[(casilla.district_id, casilla.state_id, id(casilla.races))] += 1
        for (district_id, state_id, races_id), count in groups.items():
            district = self._unit_pos[(_DISTRICT, district_id)]
            state = self._unit_pos[(_STATE, state_id)]
            for index, race in enumerate(races_of[races_id]):
                if race is None:
                    continue
                for pos in (district, state, 0):
                    layout = layouts[pos][index]
                    assert layout is not None  # the unit holds the casilla's race
                    layout.expected += count
        return layouts

    def _unit_message(
        self, pos: int
    ) -> tuple[results_pb2.UnitResults, list[tuple[int, _ContestMessage]]]:
        level, unit_id = self._unit_keys[pos]
        unit = UnitResultsPb(level=level, unit_id=unit_id)
        contests = [
            (index, _ContestMessage(unit.contests.add(), layout))
            for index, layout in enumerate(self._layouts[pos])
            if layout is not None
        ]
        return unit, contests

    @property
    def election(self) -> ElectionIndex:
        """The election being tallied."""
        return self._election

    @property
    def acta_records(self) -> int:
        """Number of acta records applied so far."""
        return self._records

    # -- applying records ---------------------------------------------------------------

    def apply(self, record: acta_pb2.ActaRecord) -> None:
        """Apply the next acta record of the log.

        The tally is unchanged if this raises.

        Raises:
            ValueError: if ``record.sequence`` is not the number of records applied so far
                (records must be applied in log order, each exactly once).
            MalformedDataError: if the record names an unknown contest, a casilla that is
                not in the catalogue (unless recorded as out of it) or has no acta of the
                contest, an option not of its race, lacks an option, is inconsistent, or
                its revision does not follow the last one applied for its acta id.
        """
        acta = record.acta
        key = record.acta_id
        revision = record.revision
        reason = record.not_counted_reason
        # (1) log order, (2) names and revision range
        located = self._locate(
            record.sequence, key, acta.casilla_id, acta.contest_id, revision, reason
        )
        if located is None:
            self._commit_outside(key, revision, record.counted, acta.contest_id)
            return
        casilla, plan = located
        if reason in _MISSING:
            if acta.option_votes:
                raise MalformedDataError(f"acta {key!r}: recorded as missing but has figures")
            self._commit(key, revision, record.counted, reason, casilla, plan, None, 0)
            return
        # (2) every option of the race exactly once
        options = acta.option_votes
        race_options = plan.race.option_ids
        ids = [ov.option_id for ov in options]
        if ids == list(race_options):
            votes = [ov.votes for ov in options]
        else:
            by_option = {ov.option_id: ov.votes for ov in options}
            expected = plan.race.option_index.keys()
            if len(by_option) != len(ids) or by_option.keys() != expected:
                raise MalformedDataError(
                    f"acta {key!r}: options must be each of {list(race_options)} (race "
                    f"{plan.race.id!r}) exactly once; unknown "
                    f"{sorted(by_option.keys() - expected)}, missing "
                    f"{sorted(expected - by_option.keys())}, {len(ids)} given"
                )
            votes = [by_option[o] for o in race_options]
        marked = any(ov.mark != _UNMARKED for ov in options)
        votes.append(acta.unregistered_votes)
        votes.append(acta.null_votes)
        inconsistent = 1 if marked else _inconsistent(acta, sum(votes))
        # (3)-(5)
        self._commit(key, revision, record.counted, reason, casilla, plan, votes, inconsistent)

    def apply_leaf(self, leaf: bytes) -> None:
        """Parse a serialized ``LogLeaf`` holding an acta record and apply it.

        Raises:
            MalformedDataError: if the bytes do not parse, the leaf does not hold an acta
                record, or the record is rejected by :meth:`apply`.
            ValueError: if the record is out of log order (see :meth:`apply`).
        """
        view = parse_leaf_view(leaf)
        kind = view.WhichOneof("kind")
        if kind != "acta_record":
            raise MalformedDataError(f"log leaf holds {kind!r}, expected an acta record")
        self.apply_view(view.acta_record, leaf)

    def apply_leaves(self, leaves: Iterable[bytes]) -> None:
        """:meth:`apply_leaf` each of ``leaves`` in order (stops at the first error).

        Raises:
            MalformedDataError: as :meth:`apply_leaf`; the leaves before it are applied.
            ValueError: as :meth:`apply_leaf`.
        """
        apply_view = self.apply_view
        for leaf in leaves:
            view = parse_leaf_view(leaf)
            kind = view.WhichOneof("kind")
            if kind != "acta_record":
                raise MalformedDataError(f"log leaf holds {kind!r}, expected an acta record")
            apply_view(view.acta_record, leaf)

    def apply_view(self, record: ActaRecordView, leaf: bytes) -> None:
        """Apply the acta record of ``leaf``, parsed by :func:`parse_leaf_view`.

        The same checks and outcome as :meth:`apply` of the record ``leaf`` holds.

        Raises:
            ValueError: as :meth:`apply`.
            MalformedDataError: as :meth:`apply`, or if an option does not parse.
        """
        # The common case in one frame: a catalogue acta whose options are all known
        # encodings at their places, counted, or not counted for a known reason, at the
        # next revision. Anything else (unknown names, options missing, repeated, out of
        # order, marked or not parsing, a missing or out-of-catalogue record, a revision
        # out of turn, an acta total out of range) takes the reference path, which also
        # raises the reference error; nothing is changed before that choice.
        acta = record.acta
        casilla_id = acta.casilla_id
        contest_id = acta.contest_id
        found = self._known_votes(casilla_id, contest_id, acta.option_votes)
        key = record.acta_id
        if (
            found is None
            or record.sequence != self._records
            or key != casilla_id + ACTA_ID_SEPARATOR + contest_id
        ):
            self.apply(parse_leaf(leaf).acta_record)
            return
        casilla, plan, votes = found
        revision = record.revision
        prev = self._actas.get(key)
        if revision != (1 if prev is None else _revision(prev) + 1):
            self.apply(parse_leaf(leaf).acta_record)
            return
        district, special, nominal_list, _ = casilla
        if record.counted:
            votes.append(acta.unregistered_votes)
            votes.append(acta.null_votes)
            if record.not_counted_reason:
                self.apply(parse_leaf(leaf).acta_record)
                return
            inconsistent = _inconsistent(acta, sum(votes))
            state: _ActaState
            packed, state = plan.counted(
                key, revision, inconsistent, None if special else nominal_list, votes
            )
        else:
            reason = record.not_counted_reason
            contribution = plan.not_counted.get(reason)
            if contribution is None or reason in _MISSING:
                self.apply(parse_leaf(leaf).acta_record)
                return
            packed, state = contribution, (reason, revision)
        accs = self._acc[plan.race.contest_index]
        accs[district] += packed if prev is None else packed - plan.contribution(prev)
        self._actas[key] = state
        self._records += 1
        self._version[district] = self._records
        self._cache.clear()

    def _known_votes(
        self, casilla_id: str, contest_id: str, encodings: Sequence[bytes]
    ) -> tuple[_CasillaSlot, _RacePlan, list[int]] | None:
        """The casilla, its race and the option votes in the race's ballot order, if every
        option is the race's at its place.

        Returns:
            None if the casilla or contest is unknown, the casilla has no race of the
            contest, or an option is missing, extra, out of place, marked or does not parse.
        """
        casilla = self._casillas.get(casilla_id)
        index = self._contest_pos.get(contest_id)
        if casilla is None or index is None:
            return None
        plan = casilla[3][index]
        if plan is None:
            return None
        if len(encodings) != len(plan.votes_at):
            return None
        try:
            # Every encoding known at its position: valid options, in ballot order.
            votes = list(map(dict.__getitem__, plan.votes_at, encodings))
        except KeyError:
            learnt = self._learn(plan, encodings)
            if learnt is None:
                return None
            votes = learnt
        return casilla, plan, votes

    def _learn(self, plan: _RacePlan, encodings: Sequence[bytes]) -> list[int] | None:
        """Decode the options of one acta with protobuf and remember the encodings.

        Returns:
            The votes in ballot order, or None if an option does not parse, is marked or
            is not the option of the ballot at its position (then the reference path
            decides).
        """
        votes = []
        option_ids = plan.race.option_ids
        for position, (data, known) in enumerate(zip(encodings, plan.votes_at, strict=True)):
            found = known.get(data)
            if found is None:
                try:
                    option = OptionVotesPb.FromString(data)
                except DecodeError:
                    return None
                if option.option_id != option_ids[position] or option.mark != _UNMARKED:
                    return None
                found = option.votes
                if self._option_encodings < _OPTION_ENCODINGS_LIMIT:
                    known[data] = found
                    self._option_encodings += 1
            votes.append(found)
        return votes

    def _locate(
        self,
        sequence: int,
        key: str,
        casilla_id: str,
        contest_id: str,
        revision: int,
        reason: Reason,
    ) -> tuple[_CasillaSlot, _RacePlan] | None:
        """The casilla and race plan of a record; None for an out-of-catalogue record."""
        # (1) log order
        if sequence != self._records:
            raise ValueError(f"record sequence {sequence} applied at position {self._records}")
        # (2) names
        key_casilla, sep, key_contest = key.rpartition(ACTA_ID_SEPARATOR)
        index = self._contest_pos.get(key_contest) if sep and key_casilla else None
        if index is None:
            raise MalformedDataError(f"acta {key!r}: unknown contest {key_contest!r}")
        if casilla_id != key_casilla or contest_id != key_contest:
            raise MalformedDataError(
                f"acta {key!r}: the acta inside is for {casilla_id!r}/{contest_id!r}"
            )
        if revision < 1:
            raise MalformedDataError(f"acta {key!r}: revision {revision} is below 1")
        casilla = self._casillas.get(key_casilla)
        if reason == _OUT_OF_CATALOGUE:
            if casilla is not None:
                raise MalformedDataError(
                    f"acta {key!r}: recorded as out of the catalogue, but casilla "
                    f"{key_casilla!r} is in it"
                )
            return None
        if casilla is None:
            raise MalformedDataError(f"acta {key!r}: unknown casilla {key_casilla!r}")
        plan = casilla[3][index]
        if plan is None:
            raise MalformedDataError(
                f"acta {key!r}: casilla {key_casilla!r} has no acta of contest {key_contest!r}"
            )
        return casilla, plan

    def _commit(
        self,
        key: str,
        revision: int,
        counted: bool,
        reason: Reason,
        casilla: _CasillaSlot,
        plan: _RacePlan,
        votes: list[int] | None,
        inconsistent: int,
    ) -> None:
        """Steps (3)-(5) of a record; ``votes`` in the race's order, None for a record of a
        missing acta."""
        district, special, nominal_list, _ = casilla
        # (3) counted <=> no reason
        packed: Packed
        state: _ActaState
        if counted:
            if reason != acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED:
                raise MalformedDataError(f"acta {key!r}: counted but with a not-counted reason")
            if votes is None:
                raise MalformedDataError(f"acta {key!r}: counted but recorded as missing")
            packed, state = plan.counted(
                key, revision, inconsistent, None if special else nominal_list, votes
            )
        else:
            contribution = plan.not_counted.get(reason)
            if contribution is None:
                raise MalformedDataError(
                    f"acta {key!r}: not counted without a known reason (found {reason})"
                )
            packed, state = contribution, (reason, revision)
        # (4) revision chain
        prev = self._actas.get(key)
        self._check_revision(key, revision, None if prev is None else _revision(prev))
        # (5) replace the superseded contribution, in the district only
        accs = self._acc[plan.race.contest_index]
        accs[district] += packed if prev is None else packed - plan.contribution(prev)
        self._actas[key] = state
        self._records += 1
        self._version[district] = self._records
        self._cache.clear()

    def _commit_outside(self, key: str, revision: int, counted: bool, contest_id: str) -> None:
        if counted:
            raise MalformedDataError(f"acta {key!r}: counted but with a not-counted reason")
        prev = self._outside.get(key)
        self._check_revision(key, revision, prev)
        if prev is None:
            self._outside_count[self._contest_pos[contest_id]] += 1
        self._outside[key] = revision
        self._records += 1
        self._version[0] = self._records
        self._cache.clear()

    @staticmethod
    def _check_revision(key: str, revision: int, previous: int | None) -> None:
        expected = 1 if previous is None else previous + 1
        if revision != expected:
            raise MalformedDataError(
                f"acta {key!r}: revision {revision} does not follow "
                f"{'nothing' if previous is None else previous} (expected {expected})"
            )

    # -- results ------------------------------------------------------------------------

    def _rollup(self) -> None:
        """Bring the totals of states and the nation up to date with their districts."""
        if self._rolled == self._records:
            return
        version = self._version
        national_changed = False
        for state_pos, district_positions in self._state_districts:
            newest = max((version[d] for d in district_positions), default=0)
            if newest > version[state_pos]:
                for accs in self._acc:
                    accs[state_pos] = sum([accs[d] for d in district_positions])
                version[state_pos] = newest
                national_changed = True
        if national_changed:
            state_positions = [s for s, _ in self._state_districts]
            for accs in self._acc:
                accs[0] = sum([accs[s] for s in state_positions])
            version[0] = max(version[0], *(version[s] for s in state_positions))
        self._rolled = self._records

    def _header(self, final: bool) -> ResultsPb:
        return ResultsPb(
            election_id=self._election.election_id,
            definition_sha256=self._election.definition_sha256,
            acta_records=self._records,
            final=final,
        )

    def _trailer(self) -> bytes:
        """Results.test, serialized after the units."""
        return ResultsPb(test=self._election.is_test).SerializeToString(deterministic=True)

    def results(self, *, final: bool = False) -> results_pb2.Results:
        """The results blob over the records applied so far.

        National first, then states, then districts in definition order; every contest
        held in the unit in definition order, options in ballot order.
        """
        self._rollup()
        results = self._header(final)
        results.test = self._election.is_test
        for pos in range(len(self._unit_keys)):
            results.units.append(self._fresh_unit(pos, final))
        return results

    def _fresh_unit(self, pos: int, final: bool) -> results_pb2.UnitResults:
        unit, contests = self._unit_message(pos)
        for index, contest in contests:
            outside = self._outside_count[index] if pos == 0 else 0
            contest.update(self._lanes[index].totals(self._acc[index][pos]), final, outside)
        return unit

    def results_bytes(self, *, final: bool = False) -> bytes:
        """The deterministic serialization of :meth:`results`.

        Equal to ``results(final=final).SerializeToString(deterministic=True)``:
        deterministic serialization writes fields in field-number order, and a repeated
        message field is the concatenation of its tagged, length-prefixed entries, so the
        header, the units and the trailer are written apart; the units by the vectorised
        program, or by the reference path when the totals are outside its exact range.

        Raises:
            MalformedDataError: if a unit's total is 2^64 or more.
        """
        cached = self._cache.get(final)
        if cached is not None:
            return cached
        self._rollup()
        units = self._fast_units(final)
        if units is None:
            units = self._reference_units(final)
        header = self._header(final).SerializeToString(deterministic=True)
        cached = header + units + self._trailer()
        self._cache[final] = cached
        return cached

    def _fast_units(self, final: bool) -> bytes | None:
        """``Results.units`` serialized by the vectorised program, or None when the
        totals are outside what it computes exactly (see ``_results_codec``).

        Raises:
            MalformedDataError: if a unit's total is 2^64 or more.
        """
        if self._program is None:
            self._program = ResultsProgram(
                units=self._unit_entries(),
                lanes=[_VOTES + width for width in self._widths],
                votes_lane=_VOTES,
                lane_of=_COUNTER_LANES,
                reasons=_REASONS,
                not_counted_lane=_NOT_COUNTED,
            )
        return self._program.encode(self._totals_array(), self._outside_count, final=final)

    def _totals_array(self) -> npt.NDArray[np.int64]:
        """Every unit's totals: (contest, unit position, lane), each lane a uint64 value
        as int64 (a lane of 2^63 or more reads as negative, which the program refuses).

        Raises:
            MalformedDataError: if a lane holds 2^64 or more.
        """
        width = _VOTES + max(self._widths, default=0)
        out = np.zeros((len(self._acc), len(self._unit_keys), width), dtype=np.int64)
        for index, accs in enumerate(self._acc):
            lanes = _VOTES + self._widths[index]
            size = lanes * _LANE
            data = b"".join([packed.to_bytes(size, "little") for packed in accs])
            words = np.frombuffer(data, dtype="<i8").reshape(len(accs), lanes, 2)
            if words[:, :, 1].any():
                raise MalformedDataError("a total of the log's actas exceeds 2^64 - 1")
            out[index, :, :lanes] = words[:, :, 0]
        return out

    def _unit_entries(self) -> list[UnitEntry]:
        """The units of the blob as the vectorised program reads them."""
        units = []
        for pos, (level, unit_id) in enumerate(self._unit_keys):
            contests = []
            for index, layout in enumerate(self._layouts[pos]):
                if layout is None:
                    continue
                contest = layout.contest
                contests.append(
                    ContestEntry(
                        contest_index=index,
                        contest_id=contest.id,
                        race_id="" if layout.race is None else layout.race.id,
                        option_ids=tuple(contest.option_ids[p] for p in layout.positions),
                        option_positions=layout.positions,
                        candidates=layout.candidates,
                        parties=layout.parties,
                        options_in_contest=len(contest.option_ids),
                        expected=layout.expected,
                        national=pos == 0,
                    )
                )
            units.append(UnitEntry(level=level, unit_id=unit_id, contests=tuple(contests)))
        return units

    def _reference_units(self, final: bool) -> bytes:
        """``Results.units`` from the kept messages (the reference path)."""
        entries = self._entries[final]
        entry_version = self._entry_version[final]
        version = self._version
        set_for = self._unit_set_for
        for pos, (unit, contests) in enumerate(self._units):
            current = version[pos]
            if entry_version[pos] == current:
                continue
            if set_for[pos] != (current, final):
                for index, contest in contests:
                    outside = self._outside_count[index] if pos == 0 else 0
                    totals = self._lanes[index].totals(self._acc[index][pos])
                    contest.update(totals, final, outside)
                set_for[pos] = (current, final)
            data = unit.SerializeToString(deterministic=True)
            entries[pos] = _UNITS_TAG + varint(len(data)) + data
            entry_version[pos] = current
        return b"".join(entries)

    def unit_results(
        self, level: Level, unit_id: str, *, final: bool = False
    ) -> results_pb2.UnitResults:
        """Totals of one unit at any level (``unit_id`` is "" for the nation).

        Section and casilla totals are derived from the applied records on demand.

        Raises:
            LookupError: if the level is not set or there is no such unit.
        """
        pos = self._unit_pos.get((level, unit_id))
        if pos is not None:
            self._rollup()
            return self._fresh_unit(pos, final)
        if level == _SECTION:
            casilla_ids = self._election.casillas_in_section(unit_id)
            district = self._election.section_district(unit_id)
        elif level == _CASILLA:
            casilla = self._election.casilla(unit_id)
            casilla_ids = (casilla.id,)
            district = casilla.district_id
        else:
            raise LookupError(f"unknown unit {unit_id!r} at level {level}")
        district_layouts = self._layouts[self._unit_pos[(_DISTRICT, district)]]
        unit = UnitResultsPb(level=level, unit_id=unit_id)
        for contest in self._contests:
            district_layout = district_layouts[contest.index]
            if district_layout is None:
                continue
            layout = _Layout(
                contest,
                district_layout.race,
                district_layout.positions,
                self._election.party_ids,
            )
            layout.expected = sum(
                self._casillas[cid][3][contest.index] is not None for cid in casilla_ids
            )
            acc = 0
            for cid in casilla_ids:
                state = self._actas.get(f"{cid}{ACTA_ID_SEPARATOR}{contest.id}")
                plan = self._casillas[cid][3][contest.index]
                if state is not None and plan is not None:
                    acc += plan.contribution(state)
            totals = self._lanes[contest.index].totals(acc)
            _ContestMessage(unit.contests.add(), layout).update(totals, final, 0)
        return unit


def _contains(race: RaceInfo, level: Level) -> bool:
    """Whether a unit at ``level`` related to ``race`` lies within the race's unit."""
    order = {_NATIONAL: 0, _STATE: 1, _DISTRICT: 2}
    return order[level] >= order[race.level]
