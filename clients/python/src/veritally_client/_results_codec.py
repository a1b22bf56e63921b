"""The units of a results blob, computed and serialized with numpy (the tally's fast path).

``Tally.results_bytes`` is what aggregation signs and what a recount hashes, once per cut
over ~1,000 contest entries of ~80 figures each; setting those figures on protobuf
messages costs ~100 ns a field, which made the per-cut results most of a recount. This
module computes every figure of every unit at once from the units' totals and writes
``Results.units`` byte for byte as protobuf's deterministic serialization does:

1. a *program*, built once per tally from the units' layouts, lists the figures (each a
   slot of one int64 array: a lane of the totals, a sum of lanes, a share, a percentage,
   a difference) and the serialization as a sequence of tokens: constant bytes (tags,
   ids), a field (its tag and the varint of one slot; absent when the slot is 0, proto3's
   default), or a nested message (its tag and the varint of its length). A
   ``NotCountedTotal`` entry is present only when its count is not 0, as the reference
   adds one only then;
2. each call gathers the totals into the slots and evaluates the figures in the order of
   their dependencies (lanes and sums, then differences and numerators, then ratios);
3. it sizes every token (a field: tag + varint length of its value; a message: tag +
   varint of its content's size), innermost messages first, one cumulative sum per
   nesting depth;
4. it scatters the constant bytes and each varint's bytes at their offsets.

Fields are written in field-number order and repeated entries in list order, which is
what deterministic serialization does for messages without unknown fields; tests hold
the output equal to the reference path (``Tally``'s kept messages and ``SerializeToString``)
for random tallies and for the federal night.

The program only takes totals for which int64 arithmetic is exact: every lane below
2^32, so that a share's ``votes * 10^6`` stays below 2^63 (a national total of a real
election is below 2^27); :meth:`ResultsProgram.encode` answers ``None`` for anything else
and the tally takes its reference path.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from google.protobuf.descriptor import Descriptor

from veritally_client._gen.veritally.v1 import results_pb2
from veritally_client._leaf import field_tag, varint

__all__ = ["ContestEntry", "ResultsProgram", "UnitEntry"]

I64 = npt.NDArray[np.int64]

_UNIT = results_pb2.UnitResults.DESCRIPTOR
_CONTEST = results_pb2.ContestTotals.DESCRIPTOR
_OPTION = results_pb2.OptionTotal.DESCRIPTOR
_CANDIDATE = results_pb2.CandidateTotal.DESCRIPTOR
_PARTY = results_pb2.PartyTotal.DESCRIPTOR
_COMPLETENESS = results_pb2.Completeness.DESCRIPTOR
_NOT_COUNTED = results_pb2.NotCountedTotal.DESCRIPTOR
_RESULTS = results_pb2.Results.DESCRIPTOR


@functools.cache
def _tag(message: Descriptor, name: str) -> bytes:
    """:func:`field_tag`, remembered: a program writes ~100 tags per contest entry."""
    return field_tag(message, name)


# Lanes below 2^32: sums of up to 2^11 lanes stay below 2^43, times 10^6 (< 2^20) below
# 2^63, so every figure is exact in int64.
_LANE_LIMIT: Final = 1 << 32
_MAX_WIDTH: Final = 1 << 11
_SCALE: Final = 1_000_000  # percent x 10^4, as _tally.percent_e4
# Varint sizes: a value needs k + 1 bytes when it is at least 2^(7k).
_VARINT_STEPS: Final = tuple(1 << (7 * k) for k in range(1, 9))

_CONST: Final = 0
_FIELD: Final = 1
_OPEN: Final = 2


@dataclass(frozen=True)
class ContestEntry:
    """What one contest shows in one unit (a ``ContestTotals`` entry).

    Attributes:
        contest_index: the contest's position, which selects its totals.
        contest_id: its id.
        race_id: the race shown ("" when the unit holds several).
        option_ids: the option id of each option shown.
        option_positions: each option's position in the contest's ballot.
        candidates: (candidate id, ballot positions of its options) in race order.
        parties: (party id, ballot position of its own option) in party order.
        options_in_contest: options of the contest's whole ballot (unregistered and null
            votes follow them).
        expected: actas expected.
        national: whether the unit is the nation (which counts out-of-catalogue actas).
    """

    contest_index: int
    contest_id: str
    race_id: str
    option_ids: tuple[str, ...]
    option_positions: tuple[int, ...]
    candidates: tuple[tuple[str, tuple[int, ...]], ...]
    parties: tuple[tuple[str, int], ...]
    options_in_contest: int
    expected: int
    national: bool


@dataclass(frozen=True)
class UnitEntry:
    """One ``UnitResults`` entry: its level, id and contest entries in order."""

    level: int
    unit_id: str
    contests: tuple[ContestEntry, ...]


@dataclass
class _Builder:
    """Collects the slots and tokens of a program (see the module docstring)."""

    lanes: int  # lanes per unit row of the totals (the widest contest's)
    units: int
    slots: int = 0
    # Figures, by how they are computed: (slot, source...) per kind.
    lane_slot: list[int] = field(default_factory=list)
    lane_src: list[int] = field(default_factory=list)
    sum_slot: list[int] = field(default_factory=list)
    sum_bounds: list[int] = field(default_factory=list)  # into sum_src, start of each
    sum_src: list[int] = field(default_factory=list)
    const_slot: list[int] = field(default_factory=list)
    const_value: list[int] = field(default_factory=list)
    outside_slot: list[int] = field(default_factory=list)
    outside_contest: list[int] = field(default_factory=list)
    add_slot: list[int] = field(default_factory=list)
    add_a: list[int] = field(default_factory=list)
    add_b: list[int] = field(default_factory=list)
    sub_slot: list[int] = field(default_factory=list)
    sub_a: list[int] = field(default_factory=list)
    sub_b: list[int] = field(default_factory=list)
    final_slot: list[int] = field(default_factory=list)  # a + b when final, else a
    final_a: list[int] = field(default_factory=list)
    final_b: list[int] = field(default_factory=list)
    ratio_slot: list[int] = field(default_factory=list)
    ratio_num: list[int] = field(default_factory=list)
    ratio_den: list[int] = field(default_factory=list)
    # Tokens.
    kind: list[int] = field(default_factory=list)
    prefix: list[bytes] = field(default_factory=list)
    value: list[int] = field(default_factory=list)  # FIELD: its slot; OPEN: its span's end
    cond: list[int] = field(default_factory=list)  # present only if this slot is not 0
    depth: list[int] = field(default_factory=list)

    def slot(self) -> int:
        self.slots += 1
        return self.slots - 1

    def lane(self, contest: int, unit: int, lane: int) -> int:
        s = self.slot()
        self.lane_slot.append(s)
        self.lane_src.append((contest * self.units + unit) * self.lanes + lane)
        return s

    def lane_sum(self, contest: int, unit: int, lanes: Sequence[int]) -> int:
        s = self.slot()
        self.sum_slot.append(s)
        self.sum_bounds.append(len(self.sum_src))
        row = (contest * self.units + unit) * self.lanes
        self.sum_src.extend(row + lane for lane in lanes)
        return s

    def const(self, value: int) -> int:
        s = self.slot()
        self.const_slot.append(s)
        self.const_value.append(value)
        return s

    def pair(self, kind: str, a: int, b: int) -> int:
        s = self.slot()
        slots, first, second = {
            "add": (self.add_slot, self.add_a, self.add_b),
            "sub": (self.sub_slot, self.sub_a, self.sub_b),
            "final": (self.final_slot, self.final_a, self.final_b),
            "ratio": (self.ratio_slot, self.ratio_num, self.ratio_den),
        }[kind]
        slots.append(s)
        first.append(a)
        second.append(b)
        return s

    def emit(self, data: bytes, cond: int = -1) -> None:
        """Constant bytes, merged into the previous constant when they share its cond."""
        if not data:
            return
        if self.kind and self.kind[-1] == _CONST and self.cond[-1] == cond:
            self.prefix[-1] += data
            return
        self._token(_CONST, data, 0, cond, 0)

    def string(self, tag: bytes, text: str, cond: int = -1) -> None:
        """A string field (absent when empty, proto3's default)."""
        if text:
            data = text.encode()
            self.emit(tag + varint(len(data)) + data, cond)

    def field(self, tag: bytes, slot: int, cond: int = -1) -> None:
        """A uint64 or enum field holding a slot's value (absent when 0)."""
        self._token(_FIELD, tag, slot, cond, 0)

    def open(self, tag: bytes, depth: int, cond: int = -1) -> int:
        """A nested message; :meth:`close` it with the returned token."""
        self._token(_OPEN, tag, 0, cond, depth)
        return len(self.kind) - 1

    def close(self, token: int) -> None:
        self.value[token] = len(self.kind)

    def _token(self, kind: int, prefix: bytes, value: int, cond: int, depth: int) -> None:
        self.kind.append(kind)
        self.prefix.append(prefix)
        self.value.append(value)
        self.cond.append(cond)
        self.depth.append(depth)


def _arr(values: Sequence[int]) -> I64:
    return np.array(values, dtype=np.int64)


def _varint_sizes(values: I64) -> I64:
    """Bytes of the varint of each (non-negative) value."""
    sizes = np.ones(values.shape, dtype=np.int64)
    top = int(values.max(initial=0))
    for step in _VARINT_STEPS:
        if step > top:
            break
        sizes += values >= step
    return sizes


class ResultsProgram:
    """``Results.units`` of one election's units as a function of their totals."""

    def __init__(
        self,
        *,
        units: Sequence[UnitEntry],
        lanes: Sequence[int],
        votes_lane: int,
        lane_of: dict[str, int],
        reasons: Sequence[int],
        not_counted_lane: int,
    ) -> None:
        """Build the program.

        Args:
            units: the units of the blob, in order.
            lanes: lanes per contest (the layout of ``_tally``'s totals).
            votes_lane: the lane of the first option's votes (options in ballot order,
                then unregistered, then null).
            lane_of: the lane of each completeness counter, by the name of its
                ``_tally`` constant: registered, captured, counted, inconsistent,
                nominal, nonspecial_votes, special_votes.
            reasons: the not-counted reasons, in the order of their lanes.
            not_counted_lane: the lane of the first reason.

        Raises:
            ValueError: if a contest is too wide for exact int64 figures (no election
                is; the tally then keeps its reference path).
        """
        self._contests = len(lanes)
        self._units = len(units)
        self._lanes = max(lanes, default=0)
        if self._lanes > _MAX_WIDTH:
            raise ValueError(f"a contest of {self._lanes} lanes is wider than {_MAX_WIDTH}")
        self._lanes_of = tuple(lanes)
        b = _Builder(lanes=self._lanes, units=self._units)
        units_tag = _tag(_RESULTS, "units")
        for pos, unit in enumerate(units):
            u = b.open(units_tag, 0)
            b.emit(_tag(_UNIT, "level") + varint(unit.level))
            b.string(_tag(_UNIT, "unit_id"), unit.unit_id)
            for entry in unit.contests:
                self._contest(b, pos, entry, votes_lane, lane_of, reasons, not_counted_lane)
            b.close(u)
        self._build(b)

    @staticmethod
    def _contest(
        b: _Builder,
        pos: int,
        entry: ContestEntry,
        votes_lane: int,
        lane_of: dict[str, int],
        reasons: Sequence[int],
        not_counted_lane: int,
    ) -> None:
        c = entry.contest_index
        n = entry.options_in_contest

        def lane(i: int) -> int:
            return b.lane(c, pos, i)

        token = b.open(_tag(_UNIT, "contests"), 1)
        b.string(_tag(_CONTEST, "contest_id"), entry.contest_id)
        total = b.lane_sum(c, pos, range(votes_lane, votes_lane + n + 2))
        for option_id, position in zip(entry.option_ids, entry.option_positions, strict=True):
            votes = lane(votes_lane + position)
            option = b.open(_tag(_CONTEST, "options"), 2)
            b.string(_tag(_OPTION, "option_id"), option_id)
            b.field(_tag(_OPTION, "votes"), votes)
            b.field(_tag(_OPTION, "share_percent_e4"), b.pair("ratio", votes, total))
            b.close(option)
        unregistered = lane(votes_lane + n)
        null = lane(votes_lane + n + 1)
        b.field(_tag(_CONTEST, "unregistered_votes"), unregistered)
        b.field(_tag(_CONTEST, "null_votes"), null)
        b.field(_tag(_CONTEST, "total_votes"), total)
        # Completeness (always present, as the reference sets it in parent).
        expected = b.const(entry.expected)
        registered = lane(lane_of["registered"])
        captured = lane(lane_of["captured"])
        counted = lane(lane_of["counted"])
        inconsistent = lane(lane_of["inconsistent"])
        nominal = lane(lane_of["nominal"])
        nonspecial = lane(lane_of["nonspecial_votes"])
        special = lane(lane_of["special_votes"])
        completeness = b.open(_tag(_CONTEST, "completeness"), 2)
        b.field(_tag(_COMPLETENESS, "actas_expected"), expected)
        b.field(_tag(_COMPLETENESS, "actas_captured"), captured)
        b.field(_tag(_COMPLETENESS, "actas_counted"), counted)
        for slot, reason in enumerate(reasons):
            actas = lane(not_counted_lane + slot)
            entry_token = b.open(_tag(_COMPLETENESS, "not_counted"), 3, cond=actas)
            b.emit(_tag(_NOT_COUNTED, "reason") + varint(reason), cond=actas)
            b.field(_tag(_NOT_COUNTED, "actas"), actas, cond=actas)
            b.close(entry_token)
        b.field(_tag(_COMPLETENESS, "captured_percent_e4"), b.pair("ratio", captured, expected))
        b.field(_tag(_COMPLETENESS, "counted_percent_e4"), b.pair("ratio", counted, expected))
        b.field(_tag(_COMPLETENESS, "nominal_list_counted"), nominal)
        numerator = b.pair("final", nonspecial, special)
        b.field(_tag(_COMPLETENESS, "turnout_percent_e4"), b.pair("ratio", numerator, nominal))
        b.field(_tag(_COMPLETENESS, "actas_registered"), registered)
        if entry.national:
            outside = b.slot()
            b.outside_slot.append(outside)
            b.outside_contest.append(c)
            b.field(_tag(_COMPLETENESS, "actas_out_of_catalogue"), outside)
        b.field(_tag(_COMPLETENESS, "actas_not_counted"), b.pair("sub", registered, counted))
        b.field(_tag(_COMPLETENESS, "actas_inconsistent"), inconsistent)
        b.field(
            _tag(_COMPLETENESS, "inconsistent_percent_e4"),
            b.pair("ratio", inconsistent, expected),
        )
        b.field(
            _tag(_COMPLETENESS, "total_votes_with_special"),
            b.pair("add", nonspecial, special),
        )
        b.field(_tag(_COMPLETENESS, "total_votes_without_special"), nonspecial)
        b.close(completeness)
        b.string(_tag(_CONTEST, "race_id"), entry.race_id)
        for candidate_id, positions in entry.candidates:
            votes = b.lane_sum(c, pos, [votes_lane + p for p in positions])
            candidate = b.open(_tag(_CONTEST, "candidates"), 2)
            b.string(_tag(_CANDIDATE, "candidate_id"), candidate_id)
            b.field(_tag(_CANDIDATE, "votes"), votes)
            b.field(_tag(_CANDIDATE, "share_percent_e4"), b.pair("ratio", votes, total))
            b.close(candidate)
        for party_id, position in entry.parties:
            votes = lane(votes_lane + position)
            party = b.open(_tag(_CONTEST, "parties"), 2)
            b.string(_tag(_PARTY, "party_id"), party_id)
            b.field(_tag(_PARTY, "votes"), votes)
            b.field(_tag(_PARTY, "share_percent_e4"), b.pair("ratio", votes, total))
            b.close(party)
        b.field(
            _tag(_CONTEST, "unregistered_share_percent_e4"),
            b.pair("ratio", unregistered, total),
        )
        b.field(_tag(_CONTEST, "null_share_percent_e4"), b.pair("ratio", null, total))
        b.close(token)

    def _build(self, b: _Builder) -> None:
        """Freeze the builder's lists into the arrays :meth:`encode` runs on."""
        self._slots = b.slots
        self._lane_slot, self._lane_src = _arr(b.lane_slot), _arr(b.lane_src)
        self._sum_slot = _arr(b.sum_slot)
        self._sum_src = _arr(b.sum_src)
        self._sum_start = _arr(b.sum_bounds)
        self._sum_end = _arr([*b.sum_bounds[1:], len(b.sum_src)])
        self._const_slot, self._const_value = _arr(b.const_slot), _arr(b.const_value)
        self._outside_slot, self._outside_contest = _arr(b.outside_slot), _arr(b.outside_contest)
        self._add = (_arr(b.add_slot), _arr(b.add_a), _arr(b.add_b))
        self._sub = (_arr(b.sub_slot), _arr(b.sub_a), _arr(b.sub_b))
        self._final = (_arr(b.final_slot), _arr(b.final_a), _arr(b.final_b))
        self._ratio = (_arr(b.ratio_slot), _arr(b.ratio_num), _arr(b.ratio_den))
        kind = _arr(b.kind)
        self._tokens = len(b.kind)
        self._prefix_len = _arr([len(p) for p in b.prefix])
        self._cond_tokens = np.flatnonzero(_arr(b.cond) >= 0)
        self._field_tokens = np.flatnonzero(kind == _FIELD)
        self._field_slots = _arr(b.value)[self._field_tokens]
        # Nested messages by depth, innermost first: (tokens, their spans' ends).
        value = _arr(b.value)
        depth = _arr(b.depth)
        cond = _arr(b.cond)
        self._opens: list[tuple[I64, I64, I64, I64, I64]] = []
        for d in sorted({int(x) for x in depth[kind == _OPEN]}, reverse=True):
            tokens = np.flatnonzero((kind == _OPEN) & (depth == d))
            conditional = np.flatnonzero(cond[tokens] >= 0)
            self._opens.append(
                (
                    tokens,
                    value[tokens],
                    self._prefix_len[tokens],
                    conditional,
                    cond[tokens][conditional],
                )
            )
        # Constant tokens' sizes, those present only on a condition apart; fields' tags.
        self._const_size = np.where(kind == _CONST, self._prefix_len, 0)
        self._cond_consts = np.flatnonzero((kind == _CONST) & (cond >= 0))
        self._cond_const_slots = cond[self._cond_consts]
        self._field_prefix = self._prefix_len[self._field_tokens]
        # A field present on a condition is present on its own value (a not-counted
        # entry's count), so a field is written exactly when its value is not 0.
        field_cond = cond[self._field_tokens]
        assert np.array_equal(field_cond[field_cond >= 0], self._field_slots[field_cond >= 0])
        self._varint_tokens = np.flatnonzero(kind != _CONST)
        # Every prefix byte: its token, its place in the token, its value; apart, those
        # of tokens always present (written without a test).
        always = np.zeros(self._tokens, dtype=bool)
        always[kind != _FIELD] = True
        always[self._cond_tokens] = False
        self._prefixes = tuple(
            self._prefix_bytes_of(b.prefix, np.flatnonzero(group)) for group in (always, ~always)
        )

    @staticmethod
    def _prefix_bytes_of(prefixes: Sequence[bytes], tokens: I64) -> tuple[I64, I64, I64]:
        """(token, offset in its prefix, byte) of every prefix byte of ``tokens``."""
        sizes = np.array([len(prefixes[t]) for t in tokens], dtype=np.int64)
        starts = np.cumsum(sizes) - sizes
        offset = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(starts, sizes)
        data = b"".join(prefixes[t] for t in tokens)
        return np.repeat(tokens, sizes), offset, np.frombuffer(data, dtype=np.uint8)

    def figures(self, totals: I64, outside: Sequence[int], *, final: bool) -> I64 | None:
        """Every slot's value, or None if the totals are outside what int64 computes exactly.

        Args:
            totals: shape (contests, units, lanes), each contest's lanes from 0 (a
                narrower contest's last lanes are 0).
            outside: out-of-catalogue actas per contest.
            final: whether the results are final (turnout counts special casillas).
        """
        if totals.size and (int(totals.max()) >= _LANE_LIMIT or int(totals.min()) < 0):
            return None
        flat = totals.reshape(-1)
        v = np.zeros(self._slots, dtype=np.int64)
        v[self._lane_slot] = flat[self._lane_src]
        sums = np.concatenate(([0], np.cumsum(flat[self._sum_src])))
        v[self._sum_slot] = sums[self._sum_end] - sums[self._sum_start]
        v[self._const_slot] = self._const_value
        v[self._outside_slot] = np.asarray(outside, dtype=np.int64)[self._outside_contest]
        slot, a, b = self._add
        v[slot] = v[a] + v[b]
        slot, a, b = self._sub
        v[slot] = v[a] - v[b]
        slot, a, b = self._final
        v[slot] = v[a] + v[b] if final else v[a]
        slot, num, den = self._ratio
        dens = v[den]
        v[slot] = np.where(dens > 0, v[num] * _SCALE // np.maximum(dens, 1), 0)
        if int(v.min(initial=0)) < 0:
            return None
        return v

    def encode(self, totals: I64, outside: Sequence[int], *, final: bool) -> bytes | None:
        """The serialized ``Results.units`` entries, or None (see :meth:`figures`).

        Args:
            totals: as :meth:`figures`.
            outside: as :meth:`figures`.
            final: as :meth:`figures`.
        """
        v = self.figures(totals, outside, final=final)
        if v is None:
            return None
        # (3) the size of every token, innermost messages first; the varint's own size
        # apart (vsize) and the value it holds (payload).
        size = self._const_size.copy()
        vsize = np.zeros(self._tokens, dtype=np.int64)
        payload = np.zeros(self._tokens, dtype=np.int64)
        fields = v[self._field_slots]
        sizes = _varint_sizes(fields)
        payload[self._field_tokens] = fields
        vsize[self._field_tokens] = sizes
        size[self._field_tokens] = (self._field_prefix + sizes) * (fields != 0)
        size[self._cond_consts] *= v[self._cond_const_slots] != 0
        sums = np.zeros(self._tokens + 1, dtype=np.int64)
        for tokens, ends, prefix, conditional, cond_slots in self._opens:
            np.cumsum(size, out=sums[1:])
            content = sums[ends] - sums[tokens + 1]
            sizes = _varint_sizes(content)
            payload[tokens] = content
            vsize[tokens] = sizes
            opened = prefix + sizes
            opened[conditional] *= v[cond_slots] != 0
            size[tokens] = opened
        # (4) the bytes: each token's prefix, then its varint.
        start = np.cumsum(size) - size
        out = np.empty(int(size.sum()), dtype=np.uint8)
        (token, offset, data), (maybe, maybe_offset, maybe_data) = self._prefixes
        out[start[token] + offset] = data
        written = size[maybe] > 0
        out[start[maybe[written]] + maybe_offset[written]] = maybe_data[written]
        tokens = self._varint_tokens[size[self._varint_tokens] > 0]
        values = payload[tokens]
        lengths = vsize[tokens]
        at = start[tokens] + self._prefix_len[tokens]
        for k in range(int(lengths.max(initial=0))):
            more = lengths > k
            byte = (values[more] >> (7 * k)) & 0x7F
            byte |= np.where(lengths[more] > k + 1, 0x80, 0)
            out[at[more] + k] = byte
        return out.tobytes()
