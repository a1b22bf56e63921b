"""The synthetic generator: deterministic per seed, and its files load back as written."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from veritally.election.generate import ContestSummary, GeneratedElection, generate
from veritally.election.loader import load_actas, load_election
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2, results_pb2

FILES = ("election.yaml", "casillas.csv", "actas.csv")


def summarise(
    index: ElectionIndex, actas: Iterable[acta_pb2.Acta], turnout: dict[str, list[int]]
) -> dict[str, ContestSummary]:
    """Recompute, from loaded actas, the summary the generator reports.

    ``turnout[contest]`` collects [votes, nominal list] of the honest actas of non-special
    casillas (within the limit, nothing marked).
    """
    out: dict[str, ContestSummary] = {}
    for contest in index.contests:
        keys = [*contest.option_ids, "_unreg", "_null"]
        out[contest.id] = ContestSummary(votes=dict.fromkeys(keys, 0))
    for acta in actas:
        s = out[acta.contest_id]
        s.actas += 1
        figures = [(o.option_id, o.votes, o.mark) for o in acta.option_votes]
        figures += [("_unreg", acta.unregistered_votes, acta.unregistered_mark)]
        figures += [("_null", acta.null_votes, acta.null_mark)]
        marks = [m for _, _, m in figures]
        for key, votes, _ in figures:
            s.votes[key] += votes
        s.marked_fields += sum(m != acta_pb2.FIELD_MARK_UNSPECIFIED for m in marks)
        if all(m == acta_pb2.FIELD_MARK_ILLEGIBLE for m in marks):
            s.all_illegible += 1
        elif all(m == acta_pb2.FIELD_MARK_BLANK for m in marks):
            s.all_blank += 1
        else:
            casilla = index.casilla(acta.casilla_id)
            total = sum(v for _, v, _ in figures)
            if total > casilla.vote_limit:
                s.exceeding += 1
            elif not casilla.is_special and not any(marks):
                pair = turnout.setdefault(acta.contest_id, [0, 0])
                pair[0] += total
                pair[1] += casilla.nominal_list
    return out


def assert_loads_back(
    result: GeneratedElection, turnout: dict[str, list[int]] | None = None
) -> ElectionIndex:
    """Load the files back and check they hold what the generator says it wrote."""
    files = load_election(result.yaml_path)
    assert files.index.pb == result.definition
    assert (
        files.index.definition_sha256 == ElectionIndex.from_pb(result.definition).definition_sha256
    )
    loaded = summarise(files.index, load_actas(files), {} if turnout is None else turnout)
    # Every contest of the definition is summarised, so the loop below checks them all.
    assert loaded
    assert result.contests.keys() == loaded.keys()
    for cid, summary in result.contests.items():
        got = loaded[cid]
        assert (got.actas, got.votes, got.marked_fields) == (
            summary.actas,
            summary.votes,
            summary.marked_fields,
        )
        assert (got.exceeding, got.all_illegible, got.all_blank) == (
            summary.exceeding,
            summary.all_illegible,
            summary.all_blank,
        )
        assert got.actas + summary.missing == len(files.index.casillas)
    return files.index


def test_small_election_loads_back_as_written(tmp_path: Path) -> None:
    result = generate(seed=7, casillas=600, out_dir=tmp_path)
    index = assert_loads_back(result)
    assert len(index.state_ids) == 32
    assert len(index.district_ids) == 300
    assert all(index.casillas_in_district(d) for d in index.district_ids)
    assert len(index.casillas) == 600
    assert index.contest_ids == ("PRES", "SEN", "DIP")


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    generate(seed=1, casillas=500, out_dir=tmp_path / "a")
    generate(seed=1, casillas=500, out_dir=tmp_path / "b")
    generate(seed=2, casillas=500, out_dir=tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "actas.csv").read_bytes() != (
        tmp_path / "c" / "actas.csv"
    ).read_bytes()


@pytest.mark.parametrize("casillas", [1, 7, 60, 299])
def test_tiny_elections_shrink_the_geography(tmp_path: Path, casillas: int) -> None:
    result = generate(seed=3, casillas=casillas, out_dir=tmp_path)
    index = assert_loads_back(result)
    assert len(index.casillas) == casillas
    assert 1 <= len(index.state_ids) <= 32
    assert len(index.district_ids) < 300
    assert all(index.casillas_in_district(d) for d in index.district_ids)


def test_actas_are_written_in_arrival_order(tmp_path: Path) -> None:
    result = generate(seed=5, casillas=400, out_dir=tmp_path)
    times = [a.provenance.captured_time.ToSeconds() for a in load_actas(result.yaml_path)]
    assert times == sorted(times)
    assert len(times) == result.actas_written


def test_rejects_an_election_without_casillas(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="casilla"):
        generate(seed=1, casillas=0, out_dir=tmp_path)


@pytest.mark.slow
def test_national_default_has_the_shape_of_a_mexican_federal_election(tmp_path: Path) -> None:
    result = generate(seed=1, out_dir=tmp_path)
    turnout: dict[str, list[int]] = {}
    index = assert_loads_back(result, turnout)
    assert len(index.state_ids) == 32
    assert len(index.district_ids) == 300
    assert all(len(index.casillas_in_state(s)) > 0 for s in index.state_ids)
    assert 60_000 <= len(index.section_ids) <= 75_000
    assert 150_000 <= len(index.casillas) <= 170_000
    types = dict.fromkeys(election_pb2.CasillaType.values(), 0)
    for c in index.casillas:
        types[c.type] += 1
    assert types[election_pb2.CASILLA_TYPE_UNSPECIFIED] == 0
    assert types[election_pb2.CASILLA_TYPE_BASICA] > 50_000
    assert types[election_pb2.CASILLA_TYPE_CONTIGUA] > 50_000
    assert 100 <= types[election_pb2.CASILLA_TYPE_EXTRAORDINARIA] <= 1_000
    assert 500 <= types[election_pb2.CASILLA_TYPE_ESPECIAL] <= 2_000
    specials = [c for c in index.casillas if c.is_special]
    assert all(c.nominal_list == 0 and c.ballot_limit >= 750 for c in specials)
    assert all(c.nominal_list <= 750 for c in index.casillas)
    assert len(index.contests) == 3
    assert index.party_ids == ("PAN", "PRI", "PRD", "PVEM", "PT", "MC", "MORENA")
    assert len(index.races) == 1 + 32 + 300
    combinations = [o for o in index.pb.contests[0].options if len(o.party_ids) > 1]
    assert len(combinations) == 8  # every combination of FCM's and of SHH's parties
    # Turnout over the honest actas of non-special casillas.
    pres = result.contests["PRES"]
    votes, nominal = turnout["PRES"]
    assert 0.55 <= votes / nominal <= 0.65
    broken = pres.exceeding + pres.all_illegible + pres.all_blank
    assert 0.01 <= broken / pres.actas <= 0.05
    assert 0.005 <= pres.missing / len(index.casillas) <= 0.03


def test_generate_command_writes_an_election_that_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veritally.cli.main import main

    assert main(["generate", "--seed", "4", "--casillas", "350", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "350 casillas" in out
    assert "3 contests in 333 races" in out
    assert main(["check", str(tmp_path / "election.yaml"), "--actas"]) == 0
    assert main(["generate", "--seed", "4", "--casillas", "0", "--out", str(tmp_path)]) == 2


def test_generate_test_writes_a_rehearsal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veritally.cli.main import main

    argv = ["generate", "--seed", "4", "--casillas", "40", "--test", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "a rehearsal" in capsys.readouterr().out
    index = load_election(tmp_path / "election.yaml").index
    assert index.is_test
    assert generate(seed=4, casillas=40, out_dir=tmp_path / "real").definition.test is False


def test_every_casilla_is_assigned_to_a_capture_centre_and_its_actas_name_it(
    tmp_path: Path,
) -> None:
    result = generate(seed=7, casillas=600, out_dir=tmp_path, capture_centres=3)
    centre = {c.id: c.capture_centre_id for c in result.definition.casillas}
    assert set(centre.values()) == {"cc-01", "cc-02", "cc-03"}
    files = load_election(result.yaml_path)
    assert {c.id: c.capture_centre_id for c in files.index.pb.casillas} == centre
    for acta in load_actas(files):
        assert acta.provenance.capture_centre_id == centre[acta.casilla_id]


def test_zero_capture_centres_assigns_no_casilla(tmp_path: Path) -> None:
    result = generate(seed=7, casillas=200, out_dir=tmp_path, capture_centres=0)
    assert {c.capture_centre_id for c in result.definition.casillas} == {""}
    assert load_election(result.yaml_path).index.pb == result.definition


# -- the federal night -----------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> GeneratedElection:
    return generate(seed=7, casillas=600, out_dir=tmp_path_factory.mktemp("night"))


def test_the_night_has_one_presidential_32_senate_and_300_deputy_races(
    night: GeneratedElection,
) -> None:
    index = load_election(night.yaml_path).index
    pres, sen, dip = index.contests
    assert [(c.id, c.scope, len(c.races)) for c in index.contests] == [
        ("PRES", results_pb2.LEVEL_NATIONAL, 1),
        ("SEN", results_pb2.LEVEL_STATE, 32),
        ("DIP", results_pb2.LEVEL_DISTRICT, 300),
    ]
    assert [r.unit_id for r in sen.races] == list(index.state_ids)
    assert [r.unit_id for r in dip.races] == list(index.district_ids)
    assert index.race("SEN-14").name == "Senaduría, Jalisco"
    assert index.race("DIP-09-05").name == "Diputación federal, Ciudad de México, Distrito 09-05"
    assert {p.id: p.abbreviation for p in index.pb.parties}["MORENA"] == "MORENA"
    # Every casilla votes in one race of each contest, special casillas included.
    assert index.receives(election_pb2.CASILLA_TYPE_ESPECIAL) == {"PRES", "SEN", "DIP"}
    assert all(None not in c.races for c in index.casillas)
    assert [c.nominated_by for c in pres.races[0].candidates] == ["coalition", "coalition", "party"]


def test_coalitions_differ_between_states_and_districts(night: GeneratedElection) -> None:
    index = load_election(night.yaml_path).index
    lineups = {
        contest.id: {tuple(c.nominator_id for c in r.candidates) for r in contest.races}
        for contest in index.contests
    }
    dip = lineups["DIP"]
    assert ("FCM", "SHH", "MC") in dip
    # Somewhere PRI runs alone, and PAN with PRD; somewhere PVEM alone, PT with MORENA.
    assert any("PRI" in lineup and "PAN_PRD" in lineup for lineup in dip)
    assert any("PVEM" in lineup and "PT_MORENA" in lineup for lineup in dip)
    assert len(lineups["SEN"]) > 1
    # Where PRI runs alone, no combination with PRI is on the ballot.
    apart = next(r for r in index.contest("DIP").races if "PRI" in [c.id for c in r.candidates])
    assert [o for o in apart.option_ids if "PRI" in o] == ["PRI"]
    assert apart.candidate("PAN_PRD").option_ids == ("PAN", "PRD", "PAN_PRD")


def test_a_few_districts_have_an_independent_with_an_option_of_its_own(
    night: GeneratedElection,
) -> None:
    index = load_election(night.yaml_path).index
    independents = [
        (race.id, candidate.nominator_id)
        for race in index.races
        for candidate in race.candidates
        if candidate.nominated_by == "independent"
    ]
    assert 1 <= len(independents) <= 10
    options = [option for _, option in independents]
    assert len(set(options)) == len(options)
    for race_id, option in independents:
        # The option is on its own race's ballot and on no other.
        assert [r.id for r in index.races if option in r.option_ids] == [race_id]
        assert index.contest("DIP").option_parties[option] == ()


def test_candidates_have_spanish_names_drawn_from_the_seed(
    night: GeneratedElection, tmp_path: Path
) -> None:
    index = load_election(night.yaml_path).index
    names = [c.name for r in index.races for c in r.candidates]
    assert len(names) > 3 * 333
    assert all(len(name.split()) == 3 and name[0].isupper() for name in names)
    assert any(ch in "áéíóúñ" for name in names for ch in name)
    assert len(set(names)) > len(names) // 2
    other = load_election(generate(seed=8, casillas=600, out_dir=tmp_path).yaml_path).index
    assert [c.name for r in other.races for c in r.candidates] != names


def test_every_acta_carries_the_ballot_of_its_race(night: GeneratedElection) -> None:
    files = load_election(night.yaml_path)
    index = files.index
    contests = {c.id: c.index for c in index.contests}
    special = {"PRES": 0, "SEN": 0, "DIP": 0}
    for acta in load_actas(files):
        casilla = index.casilla(acta.casilla_id)
        race = casilla.races[contests[acta.contest_id]]
        assert race is not None
        assert tuple(o.option_id for o in acta.option_votes) == race.option_ids
        if casilla.is_special:
            special[acta.contest_id] += 1
    assert all(special.values()), special
