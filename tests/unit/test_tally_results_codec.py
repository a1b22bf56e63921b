"""The vectorised results program writes the bytes the kept protobuf messages write.

``Tally.results_bytes`` is signed by aggregation and hashed by every recount, so its fast
path (``veritally_client._results_codec``) must be byte-identical to the reference path
(the tally's kept ``UnitResults`` messages, serialized by protobuf) for any tally: random
streams of the federal-shaped test election with figures at every varint boundary, the
generated federal night, and totals too large for exact int64 arithmetic, which must take
the reference path instead of wrapping.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.races_support import federal_pb
from tests.unit.test_tally_races import _record as race_record
from veritally.election.generate import generate
from veritally.election.loader import load_actas, load_election
from veritally_client._election import ElectionIndex, acta_id
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._tally import Tally

ELECTION = ElectionIndex.from_pb(federal_pb())
KEYS = list(ELECTION.acta_ids())
R = acta_pb2
REASONS = (
    0,
    0,
    0,
    R.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST,
    R.NOT_COUNTED_REASON_ALL_BLANK,
    R.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
)

# Figures around every varint size boundary up to four bytes, and 0, which proto3 omits;
# 40 actas of at most 14 figures of 2^22 keep every lane below 2^32 (the fast path's).
BOUNDARIES = [0, 1, 127, 128, 16_383, 16_384, 2**21 - 1, 2**21, 2**22]
VOTES = st.one_of(st.integers(0, 400), st.sampled_from(BOUNDARIES))


def _record(
    key: str, *, revision: int, sequence: int, votes: list[int], reason: int
) -> acta_pb2.ActaRecord:
    """A record of the races' tests, ``votes`` repeated over the acta's figures."""
    return race_record(
        key,
        revision=revision,
        sequence=sequence,
        votes=[votes[i % len(votes)] for i in range(32)][:-2] + votes[-2:],
        reason=reason,
        marks=[0],
        written=None,
    )


def _reference_bytes(tally: Tally, *, final: bool) -> bytes:
    """The results as the reference path writes them: fresh messages, protobuf."""
    return tally.results(final=final).SerializeToString(deterministic=True)


def _fast_path_taken(tally: Tally, *, final: bool) -> bool:
    return tally._fast_units(final) is not None


@st.composite
def streams(draw: st.DrawFn) -> list[acta_pb2.ActaRecord]:
    revisions: dict[str, int] = {}
    records = []
    for sequence in range(draw(st.integers(0, 40))):
        key = draw(st.sampled_from(KEYS))
        revisions[key] = revisions.get(key, 0) + 1
        votes = draw(st.lists(VOTES, min_size=4, max_size=12))
        reason = draw(st.sampled_from(REASONS))
        records.append(
            _record(key, revision=revisions[key], sequence=sequence, votes=votes, reason=reason)
        )
    return records


@settings(max_examples=150, deadline=None)
@given(records=streams(), final=st.booleans(), every=st.integers(1, 7))
def test_fast_results_equal_the_reference_serialization(
    records: list[acta_pb2.ActaRecord], final: bool, every: int
) -> None:
    tally = Tally(ELECTION)
    for i, record in enumerate(records):
        tally.apply(record)
        if i % every == 0:
            assert tally.results_bytes(final=final) == _reference_bytes(tally, final=final)
    assert _fast_path_taken(tally, final=final)
    assert tally.results_bytes(final=final) == _reference_bytes(tally, final=final)
    assert tally._reference_units(final) == tally._fast_units(final)


def test_empty_tally_shows_every_unit_with_zero_figures() -> None:
    tally = Tally(ELECTION)
    assert _fast_path_taken(tally, final=False)
    results = results_pb2.Results.FromString(tally.results_bytes())
    assert len(results.units) == 1 + len(ELECTION.state_ids) + len(ELECTION.district_ids)
    assert tally.results_bytes() == _reference_bytes(tally, final=False)


def test_fast_results_write_five_byte_varints() -> None:
    """One acta of 2^28 votes per figure: its units' totals need five-byte varints."""
    key = next(k for k in KEYS if k.endswith("/PRES"))
    tally = Tally(ELECTION)
    tally.apply(_record(key, revision=1, sequence=0, votes=[2**28] * 4, reason=0))
    assert _fast_path_taken(tally, final=False)
    assert tally.results_bytes() == _reference_bytes(tally, final=False)


def _huge_stream(votes: int) -> list[acta_pb2.ActaRecord]:
    keys = [k for k in KEYS if k.endswith("/PRES")][:3]
    return [
        _record(key, revision=1, sequence=seq, votes=[votes] * 4, reason=0)
        for seq, key in enumerate(keys)
    ]


@pytest.mark.parametrize("votes", [2**32, 2**40])
def test_forged_log_with_figures_past_exact_int64_takes_the_reference_path(votes: int) -> None:
    """Figures whose shares (votes x 10^6) would wrap in int64 are not computed by the
    vectorised program: the tally writes them with protobuf, exactly."""
    tally = Tally(ELECTION)
    for record in _huge_stream(votes):
        tally.apply(record)
    assert not _fast_path_taken(tally, final=False)
    data = tally.results_bytes()
    assert data == _reference_bytes(tally, final=False)
    national = results_pb2.Results.FromString(data).units[0].contests[0]
    assert national.options[0].votes == 3 * votes


@pytest.fixture(scope="module")
def federal_night(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ElectionIndex, list[acta_pb2.Acta]]:
    """The generated federal election (333 races), 1,200 casillas, with their actas."""
    directory: Path = tmp_path_factory.mktemp("federal")
    generate(seed=11, casillas=1_200, out_dir=directory)
    files = load_election(directory / "election.yaml")
    return files.index, list(load_actas(files))


def test_fast_results_equal_the_reference_over_the_generated_federal_night(
    federal_night: tuple[ElectionIndex, list[acta_pb2.Acta]],
) -> None:
    """Every 250 records of the generated night (333 races, all three contests, the
    nation, 32 states and 300 districts), and at the end final and not final."""
    index, actas = federal_night
    tally = Tally(index)
    for sequence, acta in enumerate(actas):
        key = acta_id(acta.casilla_id, acta.contest_id)
        tally.apply(
            acta_pb2.ActaRecord(acta_id=key, revision=1, acta=acta, counted=True, sequence=sequence)
        )
        if sequence % 250 == 0:
            assert tally.results_bytes() == _reference_bytes(tally, final=False)
    for final in (False, True):
        assert _fast_path_taken(tally, final=final)
        assert tally.results_bytes(final=final) == _reference_bytes(tally, final=final)
