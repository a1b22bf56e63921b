"""The tally equals a brute-force recount, for any stream of records with corrections."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.recount import brute_force, brute_force_unit
from veritally_client._election import ElectionIndex, acta_id
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2
from veritally_client._tally import Tally, percent_e4

B = election_pb2.CASILLA_TYPE_BASICA
C = election_pb2.CASILLA_TYPE_CONTIGUA
S = election_pb2.CASILLA_TYPE_ESPECIAL
REASONS = (
    acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST,
    acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE,
    acta_pb2.NOT_COUNTED_REASON_ALL_BLANK,
)


def small_election() -> ElectionIndex:
    """2 states, 3 districts, 4 sections, 7 casillas (one special), 2 contests."""
    pb = election_pb2.ElectionDefinition(id="t-1", name="Test")
    for p in ("A", "B", "C"):
        pb.parties.add(id=p, name=p)
    pres = pb.contests.add(id="PRES", name="President")
    for o, parties in (("A", ["A"]), ("B", ["B"]), ("C", ["C"]), ("A_B", ["A", "B"])):
        pres.options.add(id=o, name=o, party_ids=parties)
    sen = pb.contests.add(id="SEN", name="Senate")
    for o in ("A", "C"):
        sen.options.add(id=o, name=o, party_ids=[o])
    pb.states.add(id="01", name="One")
    pb.states.add(id="02", name="Two")
    pb.districts.add(id="01-01", state_id="01", name="d1")
    pb.districts.add(id="01-02", state_id="01", name="d2")
    pb.districts.add(id="02-01", state_id="02", name="d3")
    pb.sections.add(id="01-0001", district_id="01-01")
    pb.sections.add(id="01-0002", district_id="01-02")
    pb.sections.add(id="02-0001", district_id="02-01")
    pb.sections.add(id="02-0002", district_id="02-01")
    casillas = [
        ("01-0001-B", "01-0001", B, 500, 4, 0),
        ("01-0001-C1", "01-0001", C, 480, 2, 0),
        ("01-0001-S1", "01-0001", S, 0, 3, 750),
        ("01-0002-B", "01-0002", B, 300, 0, 0),
        ("02-0001-B", "02-0001", B, 700, 9, 0),
        ("02-0002-B", "02-0002", B, 250, 1, 0),
        ("02-0002-C1", "02-0002", C, 250, 1, 0),
    ]
    for cid, sid, ctype, nominal, reps, limit in casillas:
        pb.casillas.add(
            id=cid,
            section_id=sid,
            type=ctype,
            nominal_list=nominal,
            party_representatives=reps,
            ballot_limit=limit,
        )
    return ElectionIndex.from_pb(pb)


ELECTION = small_election()
ACTA_KEYS = [(c.id, k.id) for c in ELECTION.casillas for k in ELECTION.contests]


def make_record(
    election: ElectionIndex,
    casilla_id: str,
    contest_id: str,
    *,
    revision: int,
    sequence: int,
    votes: Sequence[int],
    counted: bool = True,
    reason: acta_pb2.NotCountedReason.ValueType = acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
) -> acta_pb2.ActaRecord:
    """A record whose options get ``votes`` in ballot order, then unregistered, null."""
    options = election.option_ids(contest_id)
    acta = acta_pb2.Acta(casilla_id=casilla_id, contest_id=contest_id)
    for oid, v in zip(options, votes, strict=False):
        acta.option_votes.add(option_id=oid, votes=v)
    acta.unregistered_votes = votes[len(options)]
    acta.null_votes = votes[len(options) + 1]
    return acta_pb2.ActaRecord(
        acta_id=acta_id(casilla_id, contest_id),
        revision=revision,
        acta=acta,
        counted=counted,
        not_counted_reason=reason if not counted else acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
        sequence=sequence,
    )


# -- strategies ----------------------------------------------------------------------


@st.composite
def record_streams(draw: st.DrawFn) -> list[acta_pb2.ActaRecord]:
    """A log: first captures and corrections of random actas, some not counted."""
    n = draw(st.integers(min_value=0, max_value=40))
    revisions: dict[str, int] = {}
    records: list[acta_pb2.ActaRecord] = []
    for seq in range(n):
        casilla_id, contest_id = draw(st.sampled_from(ACTA_KEYS))
        width = len(ELECTION.option_ids(contest_id)) + 2
        votes = draw(st.lists(st.integers(0, 400), min_size=width, max_size=width))
        counted = draw(st.integers(0, 3)) != 0  # mostly counted
        reason = draw(st.sampled_from(REASONS))
        key = acta_id(casilla_id, contest_id)
        revisions[key] = revisions.get(key, 0) + 1
        records.append(
            make_record(
                ELECTION,
                casilla_id,
                contest_id,
                revision=revisions[key],
                sequence=seq,
                votes=votes,
                counted=counted,
                reason=reason,
            )
        )
    return records


@settings(max_examples=150, deadline=None)
@given(records=record_streams(), final=st.booleans())
def test_tally_equals_brute_force_recount(records: list[acta_pb2.ActaRecord], final: bool) -> None:
    tally = Tally(ELECTION)
    for r in records:
        tally.apply(r)
    expected = brute_force(ELECTION, records, final=final)
    assert tally.results(final=final) == expected
    assert tally.results_bytes(final=final) == expected.SerializeToString(deterministic=True)
    for section in ELECTION.section_ids:
        assert tally.unit_results(
            results_pb2.LEVEL_SECTION, section, final=final
        ) == brute_force_unit(
            ELECTION,
            records,
            ELECTION.casillas_in_section(section),
            results_pb2.LEVEL_SECTION,
            section,
            final=final,
        )
    for casilla in ELECTION.casillas:
        assert tally.unit_results(
            results_pb2.LEVEL_CASILLA, casilla.id, final=final
        ) == brute_force_unit(
            ELECTION, records, [casilla.id], results_pb2.LEVEL_CASILLA, casilla.id, final=final
        )


@settings(max_examples=50, deadline=None)
@given(records=record_streams())
def test_results_bytes_cache_follows_every_apply(records: list[acta_pb2.ActaRecord]) -> None:
    tally = Tally(ELECTION)
    for i, r in enumerate(records):
        tally.results_bytes()
        if i % 2:
            tally.results_bytes(final=True)
        tally.apply(r)
        for final in (False, True):
            expected = brute_force(ELECTION, records[: i + 1], final=final)
            assert tally.results_bytes(final=final) == expected.SerializeToString(
                deterministic=True
            )
            assert tally.results_bytes(final=final) == tally.results(final=final).SerializeToString(
                deterministic=True
            )


def test_correction_replaces_the_earlier_contribution() -> None:
    tally = Tally(ELECTION)
    tally.apply(
        make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[10, 20, 1, 2])
    )
    tally.apply(
        make_record(ELECTION, "01-0001-B", "SEN", revision=2, sequence=1, votes=[5, 7, 0, 1])
    )
    national = tally.unit_results(results_pb2.LEVEL_NATIONAL, "").contests[1]
    assert [o.votes for o in national.options] == [5, 7]
    assert national.total_votes == 13
    assert national.completeness.actas_captured == 1
    assert tally.acta_records == 2


def test_not_counted_record_is_captured_without_votes() -> None:
    tally = Tally(ELECTION)
    tally.apply(
        make_record(
            ELECTION,
            "01-0002-B",
            "SEN",
            revision=1,
            sequence=0,
            votes=[900, 20, 1, 2],
            counted=False,
            reason=acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST,
        )
    )
    sen = tally.unit_results(results_pb2.LEVEL_DISTRICT, "01-02").contests[1]
    assert sen.total_votes == 0
    assert sen.completeness.actas_captured == 1
    assert sen.completeness.actas_counted == 0
    assert list(sen.completeness.not_counted) == [
        results_pb2.NotCountedTotal(
            reason=acta_pb2.NOT_COUNTED_REASON_EXCEEDS_NOMINAL_LIST, actas=1
        )
    ]


def test_special_casilla_votes_count_towards_turnout_only_when_final() -> None:
    tally = Tally(ELECTION)
    tally.apply(
        make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[100, 100, 0, 0])
    )
    tally.apply(
        make_record(ELECTION, "01-0001-S1", "SEN", revision=1, sequence=1, votes=[100, 50, 0, 0])
    )
    prelim = tally.unit_results(results_pb2.LEVEL_NATIONAL, "").contests[1]
    final = tally.unit_results(results_pb2.LEVEL_NATIONAL, "", final=True).contests[1]
    assert prelim.total_votes == final.total_votes == 350
    assert (
        prelim.completeness.nominal_list_counted == final.completeness.nominal_list_counted == 500
    )
    assert prelim.completeness.turnout_percent_e4 == 400_000  # 200 / 500
    assert final.completeness.turnout_percent_e4 == 700_000  # 350 / 500


def test_rejects_out_of_order_sequence_as_caller_bug() -> None:
    tally = Tally(ELECTION)
    with pytest.raises(ValueError, match="sequence"):
        tally.apply(
            make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=1, votes=[1, 1, 0, 0])
        )
    assert tally.acta_records == 0


def test_rejects_skipped_revision() -> None:
    tally = Tally(ELECTION)
    tally.apply(
        make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    )
    before = tally.results_bytes()
    with pytest.raises(MalformedDataError):
        tally.apply(
            make_record(ELECTION, "01-0001-B", "SEN", revision=3, sequence=1, votes=[1, 1, 0, 0])
        )
    assert tally.acta_records == 1
    assert tally.results_bytes() == before


def test_rejects_first_record_with_revision_above_one() -> None:
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(
            make_record(ELECTION, "01-0001-B", "SEN", revision=2, sequence=0, votes=[1, 1, 0, 0])
        )


def test_rejects_unknown_casilla() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.acta_id = "99-9999-B/SEN"
    record.acta.casilla_id = "99-9999-B"
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_unknown_contest() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.acta_id = "01-0001-B/GOV"
    record.acta.contest_id = "GOV"
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_unknown_option() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.acta.option_votes.add(option_id="B", votes=3)
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_missing_option() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    del record.acta.option_votes[1]
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_duplicated_option() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.acta.option_votes[1].option_id = "A"
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_acta_id_disagreeing_with_the_acta() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.acta.casilla_id = "01-0002-B"
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_not_counted_without_reason() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.counted = False
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_rejects_counted_with_reason() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[1, 1, 0, 0])
    record.not_counted_reason = acta_pb2.NOT_COUNTED_REASON_ALL_BLANK
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply(record)


def test_apply_leaf_applies_the_acta_record_it_holds() -> None:
    record = make_record(ELECTION, "01-0001-B", "SEN", revision=1, sequence=0, votes=[3, 4, 0, 0])
    leaf = acta_pb2.LogLeaf(acta_record=record).SerializeToString(deterministic=True)
    tally = Tally(ELECTION)
    tally.apply_leaf(leaf)
    assert tally.acta_records == 1
    assert tally.unit_results(results_pb2.LEVEL_NATIONAL, "").contests[1].total_votes == 7


def test_apply_leaf_rejects_a_cut_record() -> None:
    leaf = acta_pb2.LogLeaf(cut_record=acta_pb2.CutRecord(cut_number=1)).SerializeToString()
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply_leaf(leaf)


def test_apply_leaf_rejects_garbage() -> None:
    with pytest.raises(MalformedDataError):
        Tally(ELECTION).apply_leaf(b"\xff\xff\xff")


@pytest.mark.parametrize(
    ("level", "unit_id"),
    [
        (results_pb2.LEVEL_STATE, "03"),
        (results_pb2.LEVEL_DISTRICT, "01-09"),
        (results_pb2.LEVEL_SECTION, "nope"),
        (results_pb2.LEVEL_CASILLA, "nope"),
        (results_pb2.LEVEL_NATIONAL, "01"),
        (results_pb2.LEVEL_UNSPECIFIED, ""),
    ],
)
def test_unit_results_rejects_unknown_units(
    level: results_pb2.Level.ValueType, unit_id: str
) -> None:
    with pytest.raises(LookupError):
        Tally(ELECTION).unit_results(level, unit_id)


def test_results_list_every_unit_in_definition_order() -> None:
    units = Tally(ELECTION).results().units
    assert [(u.level, u.unit_id) for u in units] == [
        (results_pb2.LEVEL_NATIONAL, ""),
        (results_pb2.LEVEL_STATE, "01"),
        (results_pb2.LEVEL_STATE, "02"),
        (results_pb2.LEVEL_DISTRICT, "01-01"),
        (results_pb2.LEVEL_DISTRICT, "01-02"),
        (results_pb2.LEVEL_DISTRICT, "02-01"),
    ]
    assert [u.contests[0].completeness.actas_expected for u in units] == [7, 4, 3, 3, 1, 3]


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (0, 0, 0),
        (5, 0, 0),
        (1, 3, 333_333),  # 33.33333...% truncated
        (2, 3, 666_666),  # 66.66666...% truncated, not rounded up
        (9312345, 10_000_000, 931_234),  # 93.12345% -> 931234
        (7, 7, 1_000_000),
    ],
)
def test_percent_e4_truncates(numerator: int, denominator: int, expected: int) -> None:
    assert percent_e4(numerator, denominator) == expected


def test_percent_e4_rejects_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        percent_e4(-1, 3)
