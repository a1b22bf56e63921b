"""Races scoped to states and districts: the tally equals an independent recount.

A small federal-shaped election: a presidency (one national race, a coalition candidate),
a senate held per state (a coalition in one state only), deputies per district (an
independent in one district), special casillas that receive no deputies' acta; records
with corrections, marks, written totals, missing actas and out-of-catalogue actas.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.races_support import federal_pb
from tests.recount import brute_force, brute_force_unit
from veritally_client._election import ElectionIndex, acta_id
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2
from veritally_client._leaf import leaf_bytes, serialize_acta
from veritally_client._tally import Tally

B = election_pb2.CASILLA_TYPE_BASICA
S = election_pb2.CASILLA_TYPE_ESPECIAL
STATE = results_pb2.LEVEL_STATE
DISTRICT = results_pb2.LEVEL_DISTRICT
R = acta_pb2
COUNTED_NOT = (
    R.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST,
    R.NOT_COUNTED_REASON_EXCEEDS_BALLOTS,
    R.NOT_COUNTED_REASON_ALL_ILLEGIBLE,
    R.NOT_COUNTED_REASON_ALL_BLANK,
)
MISSING = (
    R.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
    R.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
    R.NOT_COUNTED_REASON_NO_ENVELOPE,
    R.NOT_COUNTED_REASON_E_BALLOT_BOX_CONTINGENCY,
)


ELECTION = ElectionIndex.from_pb(federal_pb())
KEYS = list(ELECTION.acta_ids())


def _record(
    key: str,
    *,
    revision: int,
    sequence: int,
    votes: list[int],
    reason: int,
    marks: list[int],
    written: int | None,
) -> acta_pb2.ActaRecord:
    casilla_id, _, contest_id = key.rpartition("/")
    acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id, image_sha256=b"\1" * 32)
    if reason not in MISSING:
        if ELECTION.has_casilla(casilla_id):
            race = ELECTION.race_of(casilla_id, contest_id)
            assert race is not None
            option_ids = race.option_ids
        else:
            option_ids = ELECTION.option_ids(contest_id)
        for i, oid in enumerate(option_ids):
            mark = marks[i % len(marks)]
            acta.option_votes.add(option_id=oid, votes=0 if mark else votes[i], mark=mark)
        acta.unregistered_votes = votes[-2]
        acta.null_votes = votes[-1]
        if written is not None:
            acta.counts.total_votes_written = written
    return acta_pb2.ActaRecord(
        acta_id=key,
        revision=revision,
        acta=acta,
        counted=reason == 0,
        not_counted_reason=reason,  # type: ignore[arg-type]
        sequence=sequence,
    )


@st.composite
def streams(draw: st.DrawFn) -> list[acta_pb2.ActaRecord]:
    n = draw(st.integers(0, 30))
    revisions: dict[str, int] = {}
    records = []
    for seq in range(n):
        outside = draw(st.integers(0, 12)) == 0
        if outside:
            key = acta_id(f"99-{draw(st.integers(0, 2))}", draw(st.sampled_from(["PRES", "DIP"])))
            reason: int = R.NOT_COUNTED_REASON_OUT_OF_CATALOGUE
        else:
            key = draw(st.sampled_from(KEYS))
            reason = draw(
                st.one_of(
                    st.just(0),
                    st.just(0),
                    st.sampled_from(COUNTED_NOT),
                    st.sampled_from(MISSING),
                )
            )
        votes = draw(st.lists(st.integers(0, 300), min_size=10, max_size=10))
        marks = draw(
            st.one_of(
                st.just([0]),
                st.lists(
                    st.sampled_from([0, 0, 0, R.FIELD_MARK_ILLEGIBLE]), min_size=1, max_size=3
                ),
            )
        )
        written = draw(st.one_of(st.none(), st.integers(0, 3000)))
        revisions[key] = revisions.get(key, 0) + 1
        records.append(
            _record(
                key,
                revision=revisions[key],
                sequence=seq,
                votes=votes,
                reason=reason,
                marks=marks,
                written=written,
            )
        )
    return records


def _leaf(record: acta_pb2.ActaRecord) -> bytes:
    acta, _ = serialize_acta(record.acta)
    return leaf_bytes(
        acta_id=record.acta_id,
        revision=record.revision,
        acta=acta,
        received_time=b"",
        counted=record.counted,
        not_counted_reason=record.not_counted_reason,
        sequence=record.sequence,
    )


@settings(max_examples=120, deadline=None)
@given(records=streams(), final=st.booleans())
def test_race_tally_equals_independent_recount(
    records: list[acta_pb2.ActaRecord], final: bool
) -> None:
    by_record = Tally(ELECTION)
    by_leaf = Tally(ELECTION)
    for r in records:
        by_record.apply(r)
        by_leaf.apply_leaf(_leaf(r))
    expected = brute_force(ELECTION, records, final=final)
    assert by_record.results(final=final) == expected
    data = expected.SerializeToString(deterministic=True)
    assert by_record.results_bytes(final=final) == data
    assert by_leaf.results_bytes(final=final) == data
    for section in ELECTION.section_ids:
        assert by_leaf.unit_results(
            results_pb2.LEVEL_SECTION, section, final=final
        ) == brute_force_unit(
            ELECTION,
            records,
            ELECTION.casillas_in_section(section),
            results_pb2.LEVEL_SECTION,
            section,
            final=final,
        )


def _counted(key: str, sequence: int, votes: list[int]) -> acta_pb2.ActaRecord:
    return _record(
        key, revision=1, sequence=sequence, votes=votes, reason=0, marks=[0], written=None
    )


def test_units_show_their_race_or_the_sum_of_the_races_they_hold() -> None:
    tally = Tally(ELECTION)
    # DIP-01-01 ballot: PAN PRI MORENA PT MC PAN_PRI MORENA_PT CI_01, then unregistered, null
    tally.apply(_counted("01-0001-B/DIP", 0, [10, 20, 30, 40, 5, 6, 7, 80, 1, 1]))
    tally.apply(_counted("01-0002-B/DIP", 1, [1, 2, 3, 4, 5, 6, 7, 0, 0, 0]))
    results = tally.results()
    national, state01 = results.units[0], results.units[1]
    district = next(u for u in results.units if u.unit_id == "01-01")
    dip = next(c for c in district.contests if c.contest_id == "DIP")
    assert dip.race_id == "DIP-01-01"
    assert dip.total_votes == 200
    by_candidate = {c.candidate_id: (c.votes, c.share_percent_e4) for c in dip.candidates}
    # FCM: PAN + PRI + PAN_PRI; SHH: MORENA + PT + MORENA_PT; 36/200 = 18%
    assert by_candidate == {
        "d1": (36, 180_000),
        "d2": (77, 385_000),
        "d3": (5, 25_000),
        "d4": (80, 400_000),
    }
    assert [(p.party_id, p.votes) for p in dip.parties] == [
        ("PAN", 10),
        ("PRI", 20),
        ("MORENA", 30),
        ("PT", 40),
        ("MC", 5),
    ]
    for unit in (national, state01):
        summed = next(c for c in unit.contests if c.contest_id == "DIP")
        assert summed.race_id == ""
        assert not summed.candidates
        assert summed.total_votes == 228
        assert [o.option_id for o in summed.options][-1] == "CI_01"
    # The special casilla receives no deputies' acta; district 02-01 has no race.
    assert [c.contest_id for c in results.units[2].contests] == ["PRES", "SEN"]
    assert state01.contests[2].completeness.actas_expected == 3
    d3 = next(u for u in results.units if u.unit_id == "02-01")
    assert [c.race_id for c in d3.contests] == ["PRES", "SEN-02"]


def test_out_of_catalogue_and_missing_actas_are_counted_apart() -> None:
    tally = Tally(ELECTION)
    tally.apply(
        _record(
            "99-X/PRES",
            revision=1,
            sequence=0,
            votes=[1] * 10,
            reason=R.NOT_COUNTED_REASON_OUT_OF_CATALOGUE,
            marks=[0],
            written=None,
        )
    )
    tally.apply(
        _record(
            "01-0001-B/PRES",
            revision=1,
            sequence=1,
            votes=[0] * 10,
            reason=R.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED,
            marks=[0],
            written=None,
        )
    )
    pres = tally.results().units[0].contests[0].completeness
    assert (pres.actas_out_of_catalogue, pres.actas_registered, pres.actas_captured) == (1, 1, 0)
    assert pres.actas_not_counted == 1
    assert pres.actas_inconsistent == 0


def test_acta_of_a_casilla_outside_every_race_of_the_contest_is_malformed() -> None:
    record = _counted("01-0001-B/DIP", 0, [0] * 10)
    record.acta_id = "02-0001-B/DIP"
    record.acta.casilla_id = "02-0001-B"
    with pytest.raises(MalformedDataError, match="no acta of contest"):
        Tally(ELECTION).apply(record)


def test_acta_with_an_option_of_another_race_is_malformed() -> None:
    record = _counted("01-0002-B/DIP", 0, [0] * 10)
    record.acta.option_votes.add(option_id="CI_01", votes=1)  # DIP-01-01's independent
    tally = Tally(ELECTION)
    with pytest.raises(MalformedDataError, match="DIP-01-02"):
        tally.apply(record)
    with pytest.raises(MalformedDataError, match="DIP-01-02"):
        tally.apply_leaf(_leaf(record))
    assert tally.acta_records == 0


def test_out_of_catalogue_record_for_a_catalogue_casilla_is_malformed() -> None:
    record = _counted("01-0002-B/PRES", 0, [0] * 10)
    record.counted = False
    record.not_counted_reason = R.NOT_COUNTED_REASON_OUT_OF_CATALOGUE
    with pytest.raises(MalformedDataError, match="is in it"):
        Tally(ELECTION).apply(record)


def test_rehearsal_flag_is_in_the_results() -> None:
    pb = federal_pb()
    pb.test = True
    tally = Tally(ElectionIndex.from_pb(pb))
    assert tally.results().test
    assert results_pb2.Results.FromString(tally.results_bytes()).test
    assert tally.results_bytes() == tally.results().SerializeToString(deterministic=True)


def _huge(key: str, sequence: int, votes: int) -> bytes:
    race = ELECTION.race_of(key.rpartition("/")[0], key.rpartition("/")[2])
    assert race is not None
    n = len(race.option_ids) + 2
    record = _record(
        key, revision=1, sequence=sequence, votes=[votes] * n, reason=0, marks=[0], written=None
    )
    return acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)


@pytest.mark.parametrize("fast_path", [True, False])
def test_log_whose_acta_total_exceeds_uint64_is_malformed_not_wrapped(fast_path: bool) -> None:
    """A forged log with an acta whose figures sum past what a uint64 total can hold is a
    typed verification failure, on both paths, and leaves the tally as it was."""
    tally = Tally(ELECTION)
    before = tally.results_bytes()
    leaf = _huge(KEYS[0], 0, 2**63)
    record = acta_pb2.LogLeaf.FromString(leaf).acta_record

    def apply() -> None:
        if fast_path:
            tally.apply_leaf(leaf)
        else:
            tally.apply(record)

    with pytest.raises(MalformedDataError, match="exceeds 2\\^64 - 1"):
        apply()
    assert tally.acta_records == 0
    assert tally.results_bytes() == before


def test_log_whose_unit_totals_exceed_uint64_is_malformed_not_carried() -> None:
    """Actas each within range whose sum in a unit passes 2^64 - 1: the totals cannot be
    signed as uint64, and no figure silently carries into its neighbour."""
    tally = Tally(ELECTION)
    keys = [k for k in KEYS if k.endswith("/PRES")][:2]
    race = ELECTION.race_of(keys[0].rpartition("/")[0], "PRES")
    assert race is not None
    n = len(race.option_ids) + 2
    per_option = (2**64 - 1) // (2 * n) + 1  # two actas' totals pass 2^64 - 1 together
    for seq, key in enumerate(keys):
        tally.apply_leaf(_huge(key, seq, per_option))
    with pytest.raises(MalformedDataError, match="exceeds 2\\^64 - 1"):
        tally.results_bytes()


@pytest.mark.parametrize("serialized", [True, False])
def test_forged_log_whose_turnout_share_exceeds_uint64_is_malformed_not_value_error(
    serialized: bool,
) -> None:
    """Every lane fits in a uint64, but the turnout (votes over a nominal list of a few
    hundred) as percent x 10^4 does not: a typed verification failure on the reference
    path and on results(), never protobuf's bare ValueError."""
    tally = Tally(ELECTION)
    key = next(k for k in KEYS if k.endswith("/PRES"))
    race = ELECTION.race_of(key.rpartition("/")[0], "PRES")
    assert race is not None
    per_option = (2**64 - 1) // (len(race.option_ids) + 3)
    tally.apply_leaf(_huge(key, 0, per_option))
    compute = tally.results_bytes if serialized else tally.results
    with pytest.raises(MalformedDataError, match="exceeds 2\\^64 - 1"):
        compute()


def test_option_encoding_learnt_in_one_race_does_not_pass_for_another_races_option() -> None:
    """Races of a contest share what the tally learnt of option encodings (per option id):
    an acta of SEN-02 that carries SEN-01's coalition PAN_PRI, already seen and remembered
    in a SEN-01 acta, where SEN-02's ballot has MORENA_PT is malformed on the fast path,
    and the tally is unchanged."""
    sen01 = next(k for k in KEYS if k.startswith("01-") and k.endswith("/SEN"))
    sen02 = next(k for k in KEYS if k.startswith("02-") and k.endswith("/SEN"))
    tally = Tally(ELECTION)
    tally.apply_leaf(_leaf(_counted(sen01, 0, [1, 2, 3, 4, 5, 6, 7, 0, 0])))
    before = tally.results_bytes()
    forged = _counted(sen02, 1, [1, 2, 3, 4, 5, 7, 0, 0])
    del forged.acta.option_votes[5]
    forged.acta.option_votes.add(option_id="PAN_PRI", votes=6)  # the encoding SEN-01 used
    with pytest.raises(MalformedDataError, match="SEN-02"):
        tally.apply_leaf(_leaf(forged))
    assert tally.acta_records == 1
    assert tally.results_bytes() == before
    # The same options at their places are taken.
    tally.apply_leaf(_leaf(_counted(sen02, 1, [1, 2, 3, 4, 5, 7, 0, 0])))
    assert tally.acta_records == 2
