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
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Final, TypeAlias

from google.protobuf.message import DecodeError

from veritally_client._election import (
    ACTA_ID_SEPARATOR,
    CasillaInfo,
    ContestInfo,
    ElectionIndex,
)
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2

__all__ = ["Tally", "percent_e4"]

ActaRecordPb = acta_pb2.ActaRecord
LogLeafPb = acta_pb2.LogLeaf
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


# Tag of Results.units (field 5, wire type 2 = length-delimited), the last field of
# Results, so unit entries can be appended after the other fields.
_UNITS_FIELD: Final = ResultsPb.DESCRIPTOR.fields_by_name["units"]
assert _UNITS_FIELD.number == max(f.number for f in ResultsPb.DESCRIPTOR.fields)
_UNITS_TAG: Final = bytes([(_UNITS_FIELD.number << 3) | 2])


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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


@dataclass(frozen=True, slots=True)
class _ActaState:
    """What one revision of an acta contributes to the totals."""

    revision: int
    counted: bool
    reason_slot: int  # index into _REASONS; -1 when counted
    votes: tuple[int, ...]  # options in ballot order, then unregistered, then null
    total: int  # sum of votes (0 when not counted)
    special: bool
    nominal_list: int


class _Acc:
    """Running totals of one contest in one unit."""

    __slots__ = (
        "captured",
        "counted",
        "nominal",
        "nonspecial_votes",
        "not_counted",
        "special_votes",
        "votes",
    )

    def __init__(self, width: int) -> None:
        self.votes = [0] * width
        self.captured = 0
        self.counted = 0
        self.not_counted = [0] * len(_REASONS)
        self.nominal = 0
        self.nonspecial_votes = 0
        self.special_votes = 0

    def add(self, st: _ActaState) -> None:
        self.captured += 1
        if st.counted:
            self.counted += 1
            # map() adds element-wise at C speed; this runs three times per record.
            self.votes = list(map(operator.add, self.votes, st.votes))
            if st.special:
                self.special_votes += st.total
            else:
                self.nonspecial_votes += st.total
                self.nominal += st.nominal_list
        else:
            self.not_counted[st.reason_slot] += 1

    def remove(self, st: _ActaState) -> None:
        self.captured -= 1
        if st.counted:
            self.counted -= 1
            self.votes = list(map(operator.sub, self.votes, st.votes))
            if st.special:
                self.special_votes -= st.total
            else:
                self.nonspecial_votes -= st.total
                self.nominal -= st.nominal_list
        else:
            self.not_counted[st.reason_slot] -= 1


class Tally:
    """Totals at every level, maintained incrementally from acta records in log order."""

    def __init__(self, election: ElectionIndex) -> None:
        """Start an empty tally of ``election``."""
        self._election = election
        self._contests: tuple[ContestInfo, ...] = election.contests
        self._contest_by_id = {c.id: c for c in self._contests}
        self._casillas = election.casilla_map()
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
        # For each casilla (by index): positions of its state and district units.
        state_pos = {s: self._unit_pos[(_STATE, s)] for s in states}
        district_pos = {d: self._unit_pos[(_DISTRICT, d)] for d in districts}
        self._casilla_units: list[tuple[int, int, int]] = [
            (0, state_pos[c.state_id], district_pos[c.district_id]) for c in election.casillas
        ]
        # Running totals: [contest index][unit position].
        self._acc: list[list[_Acc]] = [
            [_Acc(len(c.option_ids) + 2) for _ in self._unit_keys] for c in self._contests
        ]
        self._actas: dict[str, _ActaState] = {}
        self._records = 0
        # results_bytes() per final flag, and each unit's length-delimited field 5 entry,
        # so that a new cut re-serializes only the units touched since the last one.
        self._cache: dict[bool, bytes] = {}
        self._unit_entries: dict[bool, list[bytes | None]] = {
            flag: [None] * len(self._unit_keys) for flag in (False, True)
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
        # (1) log order
        if record.sequence != self._records:
            raise ValueError(
                f"record sequence {record.sequence} applied at position {self._records}"
            )
        # (2)(3) decode and validate
        casilla, contest, state = self._decode(record)
        # (4) revision chain
        key = record.acta_id
        prev = self._actas.get(key)
        expected = 1 if prev is None else prev.revision + 1
        if state.revision != expected:
            raise MalformedDataError(
                f"acta {key!r}: revision {state.revision} does not follow "
                f"{'nothing' if prev is None else prev.revision} (expected {expected})"
            )
        # (5) replace the superseded contribution
        accs = self._acc[contest.index]
        stale_false = self._unit_entries[False]
        stale_true = self._unit_entries[True]
        for pos in self._casilla_units[casilla.position]:
            acc = accs[pos]
            if prev is not None:
                acc.remove(prev)
            acc.add(state)
            stale_false[pos] = stale_true[pos] = None
        self._actas[key] = state
        self._records += 1
        self._cache.clear()

    def apply_leaf(self, leaf: bytes) -> acta_pb2.ActaRecord:
        """Parse a serialized ``LogLeaf`` holding an acta record and apply it.

        Returns:
            The acta record that was applied.

        Raises:
            MalformedDataError: if the bytes do not parse, the leaf does not hold an acta
                record, or the record is rejected by :meth:`apply`.
            ValueError: if the record is out of log order (see :meth:`apply`).
        """
        pb = LogLeafPb()
        try:
            pb.ParseFromString(leaf)
        except DecodeError as e:
            raise MalformedDataError(f"log leaf does not parse: {e}") from e
        if pb.WhichOneof("kind") != "acta_record":
            raise MalformedDataError(
                f"log leaf holds {pb.WhichOneof('kind')!r}, expected an acta record"
            )
        record = pb.acta_record
        self.apply(record)
        return record

    def _decode(self, record: acta_pb2.ActaRecord) -> tuple[CasillaInfo, ContestInfo, _ActaState]:
        key = record.acta_id
        casilla_id, sep, contest_id = key.rpartition(ACTA_ID_SEPARATOR)
        casilla = self._casillas.get(casilla_id) if sep else None
        if casilla is None:
            raise MalformedDataError(f"acta {key!r}: unknown casilla {casilla_id!r}")
        contest = self._contest_by_id.get(contest_id)
        if contest is None:
            raise MalformedDataError(f"acta {key!r}: unknown contest {contest_id!r}")
        acta = record.acta
        if acta.casilla_id != casilla_id or acta.contest_id != contest_id:
            raise MalformedDataError(
                f"acta {key!r}: the acta inside is for {acta.casilla_id!r}/{acta.contest_id!r}"
            )
        if record.revision < 1:
            raise MalformedDataError(f"acta {key!r}: revision {record.revision} is below 1")
        option_ids = contest.option_ids
        by_option = {ov.option_id: ov.votes for ov in acta.option_votes}
        if (
            len(by_option) != len(acta.option_votes)
            or by_option.keys() != contest.option_index.keys()
        ):
            unknown = sorted(by_option.keys() - contest.option_index.keys())
            missing = sorted(contest.option_index.keys() - by_option.keys())
            raise MalformedDataError(
                f"acta {key!r}: options must be each of {list(option_ids)} exactly once; "
                f"unknown {unknown}, missing {missing}, {len(acta.option_votes)} given"
            )
        votes = [by_option[o] for o in option_ids]
        votes.append(acta.unregistered_votes)
        votes.append(acta.null_votes)
        reason = record.not_counted_reason
        if record.counted:
            if reason != acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED:
                raise MalformedDataError(f"acta {key!r}: counted but with a not-counted reason")
            slot = -1
            vote_tuple = tuple(votes)
            total = sum(vote_tuple)
        else:
            found = _REASON_SLOT.get(reason)
            if found is None:
                raise MalformedDataError(
                    f"acta {key!r}: not counted without a known reason (found {reason})"
                )
            slot = found
            vote_tuple = ()
            total = 0
        return (
            casilla,
            contest,
            _ActaState(
                record.revision,
                record.counted,
                slot,
                vote_tuple,
                total,
                casilla.is_special,
                casilla.nominal_list,
            ),
        )

    # -- results ------------------------------------------------------------------------

    def results(self, *, final: bool = False) -> results_pb2.Results:
        """The results blob over the records applied so far.

        National first, then states, then districts in definition order; every contest in
        definition order, options in ballot order.
        """
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
        entries, so only the units changed since the last call are serialized again.
        """
        cached = self._cache.get(final)
        if cached is not None:
            return cached
        entries = self._unit_entries[final]
        for pos, (level, unit_id) in enumerate(self._unit_keys):
            if entries[pos] is None:
                unit = self._unit(level, unit_id, self._unit_expected[pos], pos, final)
                data = unit.SerializeToString(deterministic=True)
                entries[pos] = _UNITS_TAG + _varint(len(data)) + data
        header = ResultsPb(
            election_id=self._election.election_id,
            definition_sha256=self._election.definition_sha256,
            acta_records=self._records,
            final=final,
        ).SerializeToString(deterministic=True)
        cached = header + b"".join(e for e in entries if e is not None)
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
            return self._unit(level, unit_id, self._unit_expected[pos], pos, final)
        if level == _SECTION:
            casilla_ids = self._election.casillas_in_section(unit_id)
        elif level == _CASILLA:
            casilla_ids = (self._election.casilla(unit_id).id,)
        else:
            raise LookupError(f"unknown unit {unit_id!r} at level {level}")
        contests = []
        for contest in self._contests:
            acc = _Acc(len(contest.option_ids) + 2)
            for cid in casilla_ids:
                st = self._actas.get(f"{cid}{ACTA_ID_SEPARATOR}{contest.id}")
                if st is not None:
                    acc.add(st)
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
        contest: ContestInfo, acc: _Acc, expected: int, final: bool
    ) -> results_pb2.ContestTotals:
        n = len(contest.option_ids)
        votes = acc.votes
        numerator = acc.nonspecial_votes + (acc.special_votes if final else 0)
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
                actas_captured=acc.captured,
                actas_counted=acc.counted,
                not_counted=[
                    NotCountedTotalPb(reason=_REASONS[slot], actas=count)
                    for slot, count in enumerate(acc.not_counted)
                    if count > 0
                ],
                captured_percent_e4=percent_e4(acc.captured, expected),
                counted_percent_e4=percent_e4(acc.counted, expected),
                nominal_list_counted=acc.nominal,
                turnout_percent_e4=percent_e4(numerator, acc.nominal),
            ),
        )
