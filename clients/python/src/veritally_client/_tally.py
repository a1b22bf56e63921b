"""The tally: results as a pure function of the election and of the logged acta records.

Aggregation runs it over the live log and media clients run it to recount a cut; both
must reach byte-identical results, so everything here is exact integer arithmetic in a
fixed order, and serialization is deterministic.

Applying a record (in log order):

1. its ``sequence`` must equal the number of records applied so far (a caller bug
   otherwise: ``ValueError``);
2. its acta id must name a known casilla and contest and agree with the acta inside;
   every option of the contest appears exactly once and no other;
3. its ``counted`` flag and ``not_counted_reason`` must agree (counted <=> no reason);
4. its revision must be 1 for a new acta id, or exactly one more than the last revision
   applied for that acta id;
5. the contribution of the superseded revision (if any) is subtracted from the running
   totals of the nation, its state and its district, and the new one is added. A record
   that is not counted contributes a captured acta and its reason, and no votes.

Rules of the published figures (see docs/adr/0012-results-levels-and-turnout.md):

* percentages are percent x 10^4, truncated with integer division (:func:`percent_e4`);
* ``nominal_list_counted`` sums the nominal lists of casillas whose acta is counted;
  special casillas have none and their ballot limit is never added;
* turnout = votes of counted actas of non-special casillas / nominal_list_counted; on the
  final cut (``final=True``) the votes of counted special casillas are added to the
  numerator, the denominator is unchanged (as PREP does in its final figures).

Speed (a national log is ~500,000 records; a recount must stay within seconds):

* only the district of a record is updated when it is applied; states and the nation
  are summed from their districts when results are read (``_rollup``), and only those
  whose districts changed since the last read;
* a serialized leaf is parsed with a *view* of ``LogLeaf`` (``_leaf.parse_leaf_view``,
  the leaf format's own reader) in which ``Acta.option_votes`` is ``repeated bytes``:
  protobuf then hands over each option's encoded bytes without building a message per
  option (building them was most of the per-record time). Each distinct option encoding
  is decoded once, by protobuf itself, and remembered per ballot position
  (``_ContestPlan.votes_at``); an acta whose every option encoding is remembered at its
  position is, by construction, valid in its options and decodes to the same votes.
  Anything else takes the reference path: the real ``LogLeaf`` type
  (``_leaf.parse_leaf``) and :meth:`Tally.apply`;
* ``results_bytes`` keeps each unit's ``UnitResults`` message and sets again, in place,
  the fields of the units changed since the last call, then serializes just those:
  setting the fields of existing messages costs a third of building new ones.
  :meth:`Tally.results` still builds fresh messages, and tests hold the two equal.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

from google.protobuf.message import DecodeError

from veritally_client._election import (
    ACTA_ID_SEPARATOR,
    ContestInfo,
    ElectionIndex,
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

__all__ = ["Tally", "percent_e4"]

OptionVotesPb = acta_pb2.OptionVotes
ResultsPb = results_pb2.Results
UnitResultsPb = results_pb2.UnitResults
ContestTotalsPb = results_pb2.ContestTotals
OptionTotalPb = results_pb2.OptionTotal
CompletenessPb = results_pb2.Completeness
NotCountedTotalPb = results_pb2.NotCountedTotal
Level: TypeAlias = results_pb2.Level.ValueType

# Percent x 10^4: 100 (percent) * 10_000 (four decimals).
_PERCENT_E4_SCALE: Final = 1_000_000

# The not-counted reasons, in enum order (UNSPECIFIED = counted is excluded).
_REASONS: Final = tuple(
    sorted(
        v
        for v in acta_pb2.NotCountedReason.values()
        if v != acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED
    )
)
_REASON_SLOT: Final = {reason: slot for slot, reason in enumerate(_REASONS)}

_NATIONAL: Final = results_pb2.LEVEL_NATIONAL
_STATE: Final = results_pb2.LEVEL_STATE
_DISTRICT: Final = results_pb2.LEVEL_DISTRICT
_SECTION: Final = results_pb2.LEVEL_SECTION
_CASILLA: Final = results_pb2.LEVEL_CASILLA

# Distinct option encodings remembered by one tally (see _ContestPlan.votes_at). A
# national election needs about 60,000 (18 options x ~1,000 vote counts x 3 contests,
# a few more with marks); the limit bounds memory (~100 bytes each, so ~40 MB) against
# a log crafted to hold only distinct encodings, which then simply takes the slower path.
_OPTION_ENCODINGS_LIMIT: Final = 400_000


# Tag of Results.units, the last field of Results, so unit entries can be appended after
# the other fields.
_UNITS_FIELD: Final = ResultsPb.DESCRIPTOR.fields_by_name["units"]
assert _UNITS_FIELD.number == max(f.number for f in ResultsPb.DESCRIPTOR.fields)
_UNITS_TAG: Final = field_tag(ResultsPb.DESCRIPTOR, "units")


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
# flat layout: a list (or tuple) of ints, so that adding or removing a contribution is
# one element-wise map() at C speed instead of a dozen attribute updates per record.
_CAPTURED: Final = 0  # actas captured
_COUNTED: Final = 1  # actas counted
_NOMINAL: Final = 2  # nominal lists of counted non-special casillas
_NONSPECIAL_VOTES: Final = 3  # votes of counted non-special casillas
_SPECIAL_VOTES: Final = 4  # votes of counted special casillas
_NOT_COUNTED: Final = 5  # actas not counted, one slot per reason in _REASONS
_VOTES: Final = _NOT_COUNTED + len(_REASONS)  # options in ballot order, unregistered, null
_NO_REASONS: Final = (0,) * len(_REASONS)

Totals: TypeAlias = list[int]
Contribution: TypeAlias = tuple[int, ...]


def _zero_totals(width: int) -> Totals:
    return [0] * (_VOTES + width)


def _sum_totals(width: int, parts: Iterable[Sequence[int]]) -> Totals:
    """Element-wise sum (a state of its districts, the nation of its states)."""
    columns = [sum(column) for column in zip(*parts, strict=True)]
    return columns or _zero_totals(width)


def _not_counted_contribution(slot: int, width: int) -> Contribution:
    """What a not-counted acta contributes: a captured acta and its reason, no votes."""
    reasons = [0] * len(_REASONS)
    reasons[slot] = 1
    return (1, 0, 0, 0, 0, *reasons) + (0,) * width


# Per-acta and per-casilla records are plain tuples of ints, not named tuples: the
# garbage collector stops tracking an exact tuple of ints, and a national tally holds
# ~500,000 actas and 160,000 casillas, which otherwise every full collection walks
# (about a sixth of a recount's time). One tuple per acta, not two, as each new tuple is
# walked once by a young collection before it is let go.

# The last revision applied of an acta: its contribution followed by the revision. map()
# over it and a totals list stops at the shorter, so the revision is never added.
_ActaState: TypeAlias = tuple[int, ...]
_REVISION: Final = -1  # index of the revision in an _ActaState
# What applying needs of a casilla: (unit position of its district, special, nominal list).
_CasillaSlot: TypeAlias = tuple[int, bool, int]


class _ContestPlan:
    """Per-contest tables for decoding option bytes."""

    __slots__ = ("contest", "not_counted", "votes_at", "width")

    def __init__(self, contest: ContestInfo) -> None:
        self.contest = contest
        self.width = len(contest.option_ids) + 2  # options, unregistered, null
        self.not_counted = tuple(
            _not_counted_contribution(slot, self.width) for slot in range(len(_REASONS))
        )
        # votes_at[i]: encoded OptionVotes -> votes, for encodings that protobuf decoded
        # to option i of the ballot. Lookups at each position by map() at C speed check
        # the option order and decode the votes in one pass.
        self.votes_at: tuple[dict[bytes, int], ...] = tuple({} for _ in contest.option_ids)


class _ContestMessage:
    """The ContestTotals message of one contest in one unit, and its parts."""

    __slots__ = ("completeness", "message", "not_counted", "options")

    def __init__(self, message: results_pb2.ContestTotals, contest: ContestInfo) -> None:
        self.message = message
        message.contest_id = contest.id
        self.options = [message.options.add(option_id=o) for o in contest.option_ids]
        # Present even when every count is zero, as in a freshly built message.
        message.completeness.SetInParent()
        self.completeness = message.completeness
        # (reason, actas) of completeness.not_counted, compared as a list: it rarely
        # changes, and reading it back from the message costs more than the compare.
        self.not_counted: list[tuple[acta_pb2.NotCountedReason.ValueType, int]] = []

    def update(self, acc: Totals, expected: int, final: bool) -> None:
        """Set every field from ``acc``: the message :meth:`Tally._contest_totals` builds."""
        votes = acc[_VOTES:]
        # votes ends with unregistered and null, which zip() leaves for below.
        for option, count in zip(self.options, votes, strict=False):
            option.votes = count
        n = len(self.options)
        message = self.message
        message.unregistered_votes = votes[n]
        message.null_votes = votes[n + 1]
        message.total_votes = sum(votes)
        captured = acc[_CAPTURED]
        counted = acc[_COUNTED]
        nominal = acc[_NOMINAL]
        numerator = acc[_NONSPECIAL_VOTES] + (acc[_SPECIAL_VOTES] if final else 0)
        completeness = self.completeness
        completeness.actas_expected = expected
        completeness.actas_captured = captured
        completeness.actas_counted = counted
        not_counted = [
            (_REASONS[slot], count) for slot, count in enumerate(acc[_NOT_COUNTED:_VOTES]) if count
        ]
        if not_counted != self.not_counted:
            entries = completeness.not_counted
            del entries[:]
            for reason, count in not_counted:
                entries.add(reason=reason, actas=count)
            self.not_counted = not_counted
        completeness.captured_percent_e4 = percent_e4(captured, expected)
        completeness.counted_percent_e4 = percent_e4(counted, expected)
        completeness.nominal_list_counted = nominal
        completeness.turnout_percent_e4 = percent_e4(numerator, nominal)


class Tally:
    """Totals at every level, maintained incrementally from acta records in log order."""

    def __init__(self, election: ElectionIndex) -> None:
        """Start an empty tally of ``election``."""
        self._election = election
        self._contests: tuple[ContestInfo, ...] = election.contests
        self._plans = {c.id: _ContestPlan(c) for c in self._contests}
        self._plan_list = [self._plans[c.id] for c in self._contests]
        self._option_encodings = 0
        # Units of the results blob: nation, states, districts (definition order).
        states = election.state_ids
        districts = election.district_ids
        self._unit_keys: list[tuple[Level, str]] = [(_NATIONAL, "")]
        self._unit_keys += [(_STATE, s) for s in states]
        self._unit_keys += [(_DISTRICT, d) for d in districts]
        self._unit_pos = {key: pos for pos, key in enumerate(self._unit_keys)}
        self._unit_expected = [len(election.casillas)]
        self._unit_expected += [len(election.casillas_in_state(s)) for s in states]
        self._unit_expected += [len(election.casillas_in_district(d)) for d in districts]
        # Districts of each state (positions), for the roll-up.
        self._state_districts: list[tuple[int, list[int]]] = [
            (self._unit_pos[(_STATE, s)], []) for s in states
        ]
        state_slot = {s: i for i, s in enumerate(states)}
        for d in districts:
            state = election.district_state(d)
            self._state_districts[state_slot[state]][1].append(self._unit_pos[(_DISTRICT, d)])
        self._casillas: dict[str, _CasillaSlot] = {
            c.id: (self._unit_pos[(_DISTRICT, c.district_id)], c.is_special, c.nominal_list)
            for c in election.casillas
        }
        # Running totals: [contest index][unit position]. Only districts are updated by
        # apply(); states and the nation by _rollup().
        self._acc: list[list[Totals]] = [
            [_zero_totals(plan.width) for _ in self._unit_keys] for plan in self._plan_list
        ]
        self._actas: dict[str, _ActaState] = {}
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
        self._units: list[tuple[results_pb2.UnitResults, list[_ContestMessage]]] = []
        for level, unit_id in self._unit_keys:
            unit = UnitResultsPb(level=level, unit_id=unit_id)
            self._units.append(
                (unit, [_ContestMessage(unit.contests.add(), c) for c in self._contests])
            )
        self._unit_set_for: list[tuple[int, bool]] = [(-1, False)] * len(self._unit_keys)
        self._entries: dict[bool, list[bytes]] = {
            flag: [b""] * len(self._unit_keys) for flag in (False, True)
        }
        self._entry_version: dict[bool, list[int]] = {
            flag: [-1] * len(self._unit_keys) for flag in (False, True)
        }

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
            MalformedDataError: if the record names an unknown casilla, contest or option,
                lacks an option, is inconsistent, or its revision does not follow the last
                one applied for its acta id.
        """
        acta = record.acta
        key = record.acta_id
        revision = record.revision
        # (1) log order, (2) names and revision range
        casilla, plan = self._locate(
            record.sequence, key, acta.casilla_id, acta.contest_id, revision
        )
        # (2) every option exactly once
        options = acta.option_votes
        ids = [ov.option_id for ov in options]
        if ids == list(plan.contest.option_ids):
            votes = [ov.votes for ov in options]
        else:
            by_option = {ov.option_id: ov.votes for ov in options}
            expected = plan.contest.option_index.keys()
            if len(by_option) != len(ids) or by_option.keys() != expected:
                raise MalformedDataError(
                    f"acta {key!r}: options must be each of {list(plan.contest.option_ids)} "
                    f"exactly once; unknown {sorted(by_option.keys() - expected)}, missing "
                    f"{sorted(expected - by_option.keys())}, {len(ids)} given"
                )
            votes = [by_option[o] for o in plan.contest.option_ids]
        votes.append(acta.unregistered_votes)
        votes.append(acta.null_votes)
        # (3)-(5)
        self._commit(key, revision, record.counted, record.not_counted_reason, casilla, plan, votes)

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
        acta = record.acta
        votes = self._known_votes(acta)
        if votes is None:
            # Anything unusual (unknown contest, options missing, repeated, out of order
            # or not parsing): the reference path, which also raises the reference error.
            self.apply(parse_leaf(leaf).acta_record)
            return
        votes.append(acta.unregistered_votes)
        votes.append(acta.null_votes)
        key = record.acta_id
        revision = record.revision
        casilla, plan = self._locate(
            record.sequence, key, acta.casilla_id, acta.contest_id, revision
        )
        self._commit(key, revision, record.counted, record.not_counted_reason, casilla, plan, votes)

    def _known_votes(self, acta: ActaView) -> list[int] | None:
        """The option votes in ballot order, if every option is the ballot's at its place.

        Returns:
            None if the contest is unknown, or an option is missing, extra, out of place
            or does not parse.
        """
        plan = self._plans.get(acta.contest_id)
        if plan is None:
            return None
        encodings = acta.option_votes
        if len(encodings) != len(plan.votes_at):
            return None
        try:
            # Every encoding known at its position: valid options, in ballot order.
            return list(map(dict.__getitem__, plan.votes_at, encodings))
        except KeyError:
            return self._learn(plan, encodings)

    def _learn(self, plan: _ContestPlan, encodings: Sequence[bytes]) -> list[int] | None:
        """Decode the options of one acta with protobuf and remember the encodings.

        Returns:
            The votes in ballot order, or None if an option does not parse or is not the
            option of the ballot at its position (then the reference path decides).
        """
        votes = []
        for position, (data, known) in enumerate(zip(encodings, plan.votes_at, strict=True)):
            found = known.get(data)
            if found is None:
                try:
                    option = OptionVotesPb.FromString(data)
                except DecodeError:
                    return None
                if option.option_id != plan.contest.option_ids[position]:
                    return None
                found = option.votes
                if self._option_encodings < _OPTION_ENCODINGS_LIMIT:
                    known[data] = found
                    self._option_encodings += 1
            votes.append(found)
        return votes

    def _locate(
        self, sequence: int, key: str, casilla_id: str, contest_id: str, revision: int
    ) -> tuple[_CasillaSlot, _ContestPlan]:
        # (1) log order
        if sequence != self._records:
            raise ValueError(f"record sequence {sequence} applied at position {self._records}")
        # (2) names
        key_casilla, sep, key_contest = key.rpartition(ACTA_ID_SEPARATOR)
        casilla = self._casillas.get(key_casilla) if sep else None
        if casilla is None:
            raise MalformedDataError(f"acta {key!r}: unknown casilla {key_casilla!r}")
        plan = self._plans.get(key_contest)
        if plan is None:
            raise MalformedDataError(f"acta {key!r}: unknown contest {key_contest!r}")
        if casilla_id != key_casilla or contest_id != key_contest:
            raise MalformedDataError(
                f"acta {key!r}: the acta inside is for {casilla_id!r}/{contest_id!r}"
            )
        if revision < 1:
            raise MalformedDataError(f"acta {key!r}: revision {revision} is below 1")
        return casilla, plan

    def _commit(
        self,
        key: str,
        revision: int,
        counted: bool,
        reason: acta_pb2.NotCountedReason.ValueType,
        casilla: _CasillaSlot,
        plan: _ContestPlan,
        votes: list[int],
    ) -> None:
        district, special, nominal_list = casilla
        # (3) counted <=> no reason
        state: _ActaState
        if counted:
            if reason != acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED:
                raise MalformedDataError(f"acta {key!r}: counted but with a not-counted reason")
            total = sum(votes)
            if special:
                state = (1, 1, 0, 0, total, *_NO_REASONS, *votes, revision)
            else:
                state = (1, 1, nominal_list, total, 0, *_NO_REASONS, *votes, revision)
        else:
            slot = _REASON_SLOT.get(reason)
            if slot is None:
                raise MalformedDataError(
                    f"acta {key!r}: not counted without a known reason (found {reason})"
                )
            state = (*plan.not_counted[slot], revision)
        # (4) revision chain
        prev = self._actas.get(key)
        expected = 1 if prev is None else prev[_REVISION] + 1
        if revision != expected:
            raise MalformedDataError(
                f"acta {key!r}: revision {revision} does not follow "
                f"{'nothing' if prev is None else prev[_REVISION]} (expected {expected})"
            )
        # (5) replace the superseded contribution, in the district only; map() stops at
        # the end of the totals, before the revision
        accs = self._acc[plan.contest.index]
        if prev is None:
            accs[district] = list(map(operator.add, accs[district], state))
        else:
            accs[district] = list(map(operator.add, map(operator.sub, accs[district], prev), state))
        self._actas[key] = state
        self._records += 1
        self._version[district] = self._records
        self._cache.clear()

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
                for plan, accs in zip(self._plan_list, self._acc, strict=True):
                    accs[state_pos] = _sum_totals(plan.width, [accs[d] for d in district_positions])
                version[state_pos] = newest
                national_changed = True
        if national_changed:
            state_positions = [s for s, _ in self._state_districts]
            for plan, accs in zip(self._plan_list, self._acc, strict=True):
                accs[0] = _sum_totals(plan.width, [accs[s] for s in state_positions])
            version[0] = max(version[s] for s in state_positions)
        self._rolled = self._records

    def results(self, *, final: bool = False) -> results_pb2.Results:
        """The results blob over the records applied so far.

        National first, then states, then districts in definition order; every contest in
        definition order, options in ballot order.
        """
        self._rollup()
        units = [
            self._unit(level, unit_id, self._unit_expected[pos], pos, final)
            for pos, (level, unit_id) in enumerate(self._unit_keys)
        ]
        return ResultsPb(
            election_id=self._election.election_id,
            definition_sha256=self._election.definition_sha256,
            acta_records=self._records,
            final=final,
            units=units,
        )

    def results_bytes(self, *, final: bool = False) -> bytes:
        """The deterministic serialization of :meth:`results`.

        Equal to ``results(final=final).SerializeToString(deterministic=True)``, built from
        per-unit pieces: deterministic serialization writes fields in field-number order,
        and a repeated message field is the concatenation of its tagged, length-prefixed
        entries, so only the units changed since the last call are serialized again, each
        from its kept message with only its fields set again.
        """
        cached = self._cache.get(final)
        if cached is not None:
            return cached
        self._rollup()
        entries = self._entries[final]
        entry_version = self._entry_version[final]
        version = self._version
        set_for = self._unit_set_for
        for pos, (unit, contests) in enumerate(self._units):
            current = version[pos]
            if entry_version[pos] == current:
                continue
            if set_for[pos] != (current, final):
                expected = self._unit_expected[pos]
                for contest, accs in zip(contests, self._acc, strict=True):
                    contest.update(accs[pos], expected, final)
                set_for[pos] = (current, final)
            data = unit.SerializeToString(deterministic=True)
            entries[pos] = _UNITS_TAG + varint(len(data)) + data
            entry_version[pos] = current
        header = ResultsPb(
            election_id=self._election.election_id,
            definition_sha256=self._election.definition_sha256,
            acta_records=self._records,
            final=final,
        ).SerializeToString(deterministic=True)
        cached = header + b"".join(entries)
        self._cache[final] = cached
        return cached

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
            return self._unit(level, unit_id, self._unit_expected[pos], pos, final)
        if level == _SECTION:
            casilla_ids = self._election.casillas_in_section(unit_id)
        elif level == _CASILLA:
            casilla_ids = (self._election.casilla(unit_id).id,)
        else:
            raise LookupError(f"unknown unit {unit_id!r} at level {level}")
        contests = []
        for contest in self._contests:
            width = len(contest.option_ids) + 2
            found = [
                self._actas.get(f"{cid}{ACTA_ID_SEPARATOR}{contest.id}") for cid in casilla_ids
            ]
            acc = _sum_totals(width, [st[:_REVISION] for st in found if st is not None])
            contests.append(self._contest_totals(contest, acc, len(casilla_ids), final))
        return UnitResultsPb(level=level, unit_id=unit_id, contests=contests)

    def _unit(
        self, level: Level, unit_id: str, expected: int, pos: int, final: bool
    ) -> results_pb2.UnitResults:
        contests = [
            self._contest_totals(contest, self._acc[contest.index][pos], expected, final)
            for contest in self._contests
        ]
        return UnitResultsPb(level=level, unit_id=unit_id, contests=contests)

    @staticmethod
    def _contest_totals(
        contest: ContestInfo, acc: Totals, expected: int, final: bool
    ) -> results_pb2.ContestTotals:
        votes = acc[_VOTES:]
        n = len(contest.option_ids)
        captured = acc[_CAPTURED]
        counted = acc[_COUNTED]
        nominal = acc[_NOMINAL]
        numerator = acc[_NONSPECIAL_VOTES] + (acc[_SPECIAL_VOTES] if final else 0)
        return ContestTotalsPb(
            contest_id=contest.id,
            options=[
                OptionTotalPb(option_id=oid, votes=votes[i])
                for i, oid in enumerate(contest.option_ids)
            ],
            unregistered_votes=votes[n],
            null_votes=votes[n + 1],
            total_votes=sum(votes),
            completeness=CompletenessPb(
                actas_expected=expected,
                actas_captured=captured,
                actas_counted=counted,
                not_counted=[
                    NotCountedTotalPb(reason=_REASONS[slot], actas=count)
                    for slot, count in enumerate(acc[_NOT_COUNTED:_VOTES])
                    if count > 0
                ],
                captured_percent_e4=percent_e4(captured, expected),
                counted_percent_e4=percent_e4(counted, expected),
                nominal_list_counted=nominal,
                turnout_percent_e4=percent_e4(numerator, nominal),
            ),
        )
