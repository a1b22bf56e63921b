"""Loading files as electoral authorities publish them: constants and sums in column
mappings, the acta's own counts, a default ballot limit for special casillas, per-contest
files, races whose ballots differ, an optional image digest, actas outside the catalogue
and rows of expected actas that never arrived ("sin acta")."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.races_support import federal_pb
from veritally.cli.check import add_arguments as check_arguments
from veritally.cli.check import run as check_run
from veritally.cli.main import main
from veritally.election.loader import (
    MISSING_REASONS,
    ActaFileError,
    DefinitionError,
    ElectionFiles,
    MissingActa,
    load_acta_rows,
    load_actas,
    load_definition,
    load_election,
)
from veritally.ingest import rules as ingest_rules
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client.protocol import ElectionIndex

SHA = "cd" * 32
ILLEGIBLE = acta_pb2.FIELD_MARK_ILLEGIBLE
BLANK = acta_pb2.FIELD_MARK_BLANK
UNMARKED = acta_pb2.FIELD_MARK_UNSPECIFIED

YAML = """\
id: real-1
parties:
  - {id: A}
  - {id: B}
contests:
  - id: PRES
    options: &ballot
      - {id: A}
      - {id: B}
      - {id: A_B, parties: [A, B]}
  - {id: SEN, options: *ballot}
states:
  - {id: "01", name: One}
districts:
  - {id: "01-01", state: "01"}
casillas:
  file: casillas.csv
  columns:
    casilla_id: CLAVE
    section_id: SECCION
    district_id: {const: "01-01"}
    type: TIPO
    nominal_list: LISTA
  zero_values: ["-"]
  ballot_limits: {ESPECIAL: 1500}
actas:
  files: {PRES: pres.csv, SEN: sen.csv}
  columns:
    casilla_id: CLAVE
    unregistered_votes: NO_REGISTRADOS
    null_votes: NULOS
    image_sha256: SHA
    leftover_ballots: BOLETAS_SOBRANTES
    voters: PERSONAS_VOTARON
    representatives_voted: REPRESENTANTES_PP_CI_VOTARON
    ballots_taken_out: VOTOS_SACADOS
    total_votes_written: TOTAL_VOTOS_ASENTADO
  options: {A_B: A-B}
  marks: {illegible: [Ilegible], blank: [Sin dato, "-"]}
"""

CASILLAS = """\
CLAVE,SECCION,TIPO,LISTA
c1,0001,B,600
c2,0001,S,-
"""

ACTA_HEADER = (
    "CLAVE,A,B,A-B,NO_REGISTRADOS,NULOS,SHA,BOLETAS_SOBRANTES,PERSONAS_VOTARON,"
    "REPRESENTANTES_PP_CI_VOTARON,VOTOS_SACADOS,TOTAL_VOTOS_ASENTADO\n"
)
PRES = ACTA_HEADER + (
    f"c1,100,50,5,1,4,{SHA},420,160,2,160,160\nc2,30,20,0,0,2,{SHA},-,,Ilegible,52,Sin dato\n"
)
SEN = ACTA_HEADER + f"c1,90,60,4,0,6,{SHA},418,160,2,160,159\n"


@dataclass
class Election:
    """An election directory: election.yaml and the CSV files it names."""

    yaml: str = YAML
    files: dict[str, str] = field(
        default_factory=lambda: {"casillas.csv": CASILLAS, "pres.csv": PRES, "sen.csv": SEN}
    )

    def write(self, directory: Path) -> Path:
        for name, text in self.files.items():
            (directory / name).write_text(text, encoding="utf-8")
        path = directory / "election.yaml"
        path.write_text(self.yaml, encoding="utf-8")
        return path


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"test setup: {old!r} not in the text"
    return text.replace(old, new, 1)


def with_yaml(old: str, new: str) -> Election:
    return Election(yaml=replaced(YAML, old, new))


def with_file(name: str, text: str) -> Election:
    election = Election()
    election.files[name] = text
    return election


# -- constants -------------------------------------------------------------------------


def test_constant_column_gives_every_casilla_the_same_district(tmp_path: Path) -> None:
    index = load_definition(Election().write(tmp_path))
    assert {c.district_id for c in index.casillas} == {"01-01"}


def test_constant_contest_reads_a_single_file_as_that_contest(tmp_path: Path) -> None:
    election = with_yaml(
        "  files: {PRES: pres.csv, SEN: sen.csv}\n  columns:\n",
        "  file: sen.csv\n  columns:\n    contest_id: {const: SEN}\n",
    )
    actas = list(load_actas(election.write(tmp_path)))
    assert [(a.casilla_id, a.contest_id) for a in actas] == [("c1", "SEN")]


def test_constant_figure_fills_a_field_the_file_has_no_column_for(tmp_path: Path) -> None:
    election = with_yaml(
        "    unregistered_votes: NO_REGISTRADOS\n", "    unregistered_votes: {const: '0'}\n"
    )
    actas = list(load_actas(election.write(tmp_path)))
    assert {(a.unregistered_votes, a.unregistered_mark) for a in actas} == {(0, UNMARKED)}


@pytest.mark.parametrize(
    ("old", "new", "fieldname"),
    [
        # YAML reads 01 as the integer 1: a constant must be quoted, like an id.
        (
            'district_id: {const: "01-01"}',
            "district_id: {const: 1}",
            "casillas.columns.district_id",
        ),
        (
            'district_id: {const: "01-01"}',
            "district_id: {value: X}",
            "casillas.columns.district_id",
        ),
        (
            'district_id: {const: "01-01"}',
            "district_id: {sum: [A]}",
            "casillas.columns.district_id",
        ),
        ("    null_votes: NULOS\n", "    null_votes: {sum: []}\n", "actas.columns.null_votes"),
        ("    null_votes: NULOS\n", "    null_votes: [NULOS]\n", "actas.columns.null_votes"),
        # A sum is a figure: the casilla column of an acta is not one.
        (
            "    casilla_id: CLAVE\n    unreg",
            "    casilla_id: {sum: [CLAVE]}\n    unreg",
            "actas.columns.casilla_id",
        ),
    ],
    ids=["const_not_quoted", "unknown_form", "sum_in_catalogue", "empty_sum", "list", "sum_of_id"],
)
def test_bad_column_spec_names_the_field(
    tmp_path: Path, old: str, new: str, fieldname: str
) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_election(with_yaml(old, new).write(tmp_path))
    assert caught.value.field == fieldname
    assert caught.value.file.endswith("election.yaml")
    assert caught.value.line is not None


# -- sums and combined columns ---------------------------------------------------------


def test_summed_columns_give_one_figure(tmp_path: Path) -> None:
    election = with_yaml(
        "    null_votes: NULOS\n", "    null_votes: {sum: [NULOS, NO_REGISTRADOS]}\n"
    )
    first = next(load_actas(election.write(tmp_path)))
    assert (first.null_votes, first.null_mark) == (5, UNMARKED)


def test_summed_option_columns_give_the_option_its_votes(tmp_path: Path) -> None:
    election = with_yaml("  options: {A_B: A-B}\n", "  options: {A_B: {sum: [A-B, NULOS]}}\n")
    first = next(load_actas(election.write(tmp_path)))
    assert [(o.option_id, o.votes) for o in first.option_votes] == [
        ("A", 100),
        ("B", 50),
        ("A_B", 9),
    ]


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ("Ilegible,4", (0, ILLEGIBLE)),
        ("Sin dato,4", (0, BLANK)),
        ("Sin dato,Ilegible", (0, ILLEGIBLE)),
        ("3,4", (7, UNMARKED)),
    ],
)
def test_a_sum_with_a_marked_part_is_marked_and_counts_zero(
    tmp_path: Path, cells: str, expected: tuple[int, int]
) -> None:
    election = with_yaml(
        "    null_votes: NULOS\n", "    null_votes: {sum: [NO_REGISTRADOS, NULOS]}\n"
    )
    election.files["pres.csv"] = ACTA_HEADER + f"c1,100,50,5,{cells},{SHA},,,,,\n"
    first = next(load_actas(election.write(tmp_path)))
    assert (first.null_votes, first.null_mark) == expected


def test_a_combined_other_votes_column_maps_as_documented(tmp_path: Path) -> None:
    """A file with one column for unregistered and null votes together: the documented
    mapping puts it in null_votes and says unregistered_votes is 0, so totals and option
    shares are exact (docs/election-format.md, "Combined columns")."""
    election = with_yaml(
        "    unregistered_votes: NO_REGISTRADOS\n    null_votes: NULOS\n",
        "    unregistered_votes: {const: '0'}\n    null_votes: OTROS\n",
    )
    election.files["pres.csv"] = "CLAVE,A,B,A-B,OTROS,SHA\n" + f"c1,100,50,5,9,{SHA}\n"
    election.files["sen.csv"] = "CLAVE,A,B,A-B,OTROS,SHA\n"
    election.yaml = election.yaml.split("    leftover_ballots")[0] + "  options: {A_B: A-B}\n"
    (acta,) = load_actas(election.write(tmp_path))
    assert (acta.unregistered_votes, acta.null_votes) == (0, 9)
    assert sum(o.votes for o in acta.option_votes) + acta.null_votes == 164


# -- the acta's own counts -------------------------------------------------------------


def test_acta_counts_are_carried_from_their_columns(tmp_path: Path) -> None:
    first = next(load_actas(Election().write(tmp_path)))
    assert first.counts == acta_pb2.ActaCounts(
        leftover_ballots=420,
        voters=160,
        representatives_voted=2,
        ballots_taken_out=160,
        total_votes_written=160,
    )


def test_empty_or_marked_count_is_absent_not_zero(tmp_path: Path) -> None:
    special = list(load_actas(Election().write(tmp_path)))[1]
    assert special.casilla_id == "c2"
    present = {f.name for f, _ in special.counts.ListFields()}
    assert present == {"ballots_taken_out"}
    assert special.counts.ballots_taken_out == 52


def test_unmapped_counts_leave_the_acta_without_counts(tmp_path: Path) -> None:
    election = Election(yaml=YAML.split("    leftover_ballots")[0] + "  options: {A_B: A-B}\n")
    first = next(load_actas(election.write(tmp_path)))
    assert not first.HasField("counts")


def test_count_that_is_not_a_number_names_the_field_and_line(tmp_path: Path) -> None:
    election = with_file("sen.csv", ACTA_HEADER + f"c1,90,60,4,0,6,{SHA},418,muchos,2,160,159\n")
    with pytest.raises(ActaFileError) as caught:
        list(load_actas(election.write(tmp_path)))
    assert (Path(caught.value.file).name, caught.value.line) == ("sen.csv", 2)
    assert caught.value.field == "voters"


# -- ballot limits ---------------------------------------------------------------------


def test_special_casilla_without_a_limit_on_its_row_gets_the_type_default(
    tmp_path: Path,
) -> None:
    index = load_definition(Election().write(tmp_path))
    special = index.casilla("c2")
    assert (special.ballot_limit, special.vote_limit) == (1500, 1500)
    assert index.casilla("c1").ballot_limit == 0


def test_a_limit_on_the_row_overrides_the_type_default(tmp_path: Path) -> None:
    election = with_yaml(
        "    nominal_list: LISTA\n", "    nominal_list: LISTA\n    ballot_limit: BOLETAS\n"
    )
    election.files["casillas.csv"] = (
        "CLAVE,SECCION,TIPO,LISTA,BOLETAS\nc1,0001,B,600,\nc2,0001,S,-,750\nc3,0001,S,-,\n"
    )
    index = load_definition(election.write(tmp_path))
    assert index.casilla("c2").ballot_limit == 750
    assert index.casilla("c3").ballot_limit == 1500


def test_special_casilla_without_limit_or_default_names_ballot_limit(tmp_path: Path) -> None:
    election = with_yaml("  ballot_limits: {ESPECIAL: 1500}\n", "")
    with pytest.raises(DefinitionError) as caught:
        load_definition(election.write(tmp_path))
    assert (Path(caught.value.file).name, caught.value.line) == ("casillas.csv", 3)
    assert caught.value.field == "ballot_limit"


@pytest.mark.parametrize(
    "limits",
    ["{ESPECIAL: 0}", "{ESPECIAL: '1500'}", "{ESPECIAL: true}", "{S: 1500}", "{BASICA: 750}"],
    ids=["zero", "string", "bool", "cell_code_not_type", "not_special"],
)
def test_bad_default_ballot_limit_names_the_type(tmp_path: Path, limits: str) -> None:
    election = with_yaml("{ESPECIAL: 1500}", limits)
    with pytest.raises(DefinitionError) as caught:
        load_definition(election.write(tmp_path))
    assert caught.value.field is not None
    assert caught.value.field.startswith("casillas.ballot_limits.")


# -- per-contest files -----------------------------------------------------------------


def test_a_file_named_under_files_is_read_as_its_contest(tmp_path: Path) -> None:
    files = load_election(Election().write(tmp_path))
    actas = list(load_actas(files, tmp_path / "sen.csv"))
    assert [(a.casilla_id, a.contest_id) for a in actas] == [("c1", "SEN")]


def test_a_file_named_by_a_relative_path_is_still_its_contest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = load_election(Election().write(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert {a.contest_id for a in load_actas(files, "pres.csv")} == {"PRES"}


def test_another_file_takes_the_contest_it_is_given(tmp_path: Path) -> None:
    files = load_election(Election().write(tmp_path))
    other = tmp_path / "late.csv"
    other.write_text(SEN, encoding="utf-8")
    with pytest.raises(ActaFileError) as caught:
        list(load_actas(files, other))
    assert caught.value.field == "contest_id"
    assert [a.contest_id for a in load_actas(files, other, contest="SEN")] == ["SEN"]


def test_an_unknown_contest_given_for_a_file_is_refused(tmp_path: Path) -> None:
    files = load_election(Election().write(tmp_path))
    with pytest.raises(DefinitionError) as caught:
        list(load_actas(files, tmp_path / "sen.csv", contest="GOV"))
    assert caught.value.field == "contest_id"


# -- image digests ---------------------------------------------------------------------


def test_empty_image_digest_cell_is_not_given(tmp_path: Path) -> None:
    election = with_file("sen.csv", ACTA_HEADER + "c1,90,60,4,0,6,,418,160,2,160,159\n")
    sen = [a for a in load_actas(election.write(tmp_path)) if a.contest_id == "SEN"]
    assert [a.image_sha256 for a in sen] == [b""]


def test_unmapped_image_digest_is_not_given(tmp_path: Path) -> None:
    election = with_yaml("    image_sha256: SHA\n", "")
    assert {a.image_sha256 for a in load_actas(election.write(tmp_path))} == {b""}


def test_check_counts_the_actas_ingest_will_refuse_for_want_of_a_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    election = with_file("sen.csv", ACTA_HEADER + "c1,90,60,4,0,6,,418,160,2,160,159\n")
    parser = argparse.ArgumentParser()
    check_arguments(parser)
    assert check_run(parser.parse_args([str(election.write(tmp_path)), "--actas"])) == 0
    out = capsys.readouterr().out
    assert "actas read 3 (PRES: 2, SEN: 1)" in out
    assert "without an image digest 1" in out


def test_bad_image_digest_names_the_field(tmp_path: Path) -> None:
    election = with_file("sen.csv", ACTA_HEADER + "c1,90,60,4,0,6,abc,418,160,2,160,159\n")
    with pytest.raises(ActaFileError) as caught:
        list(load_actas(election.write(tmp_path)))
    assert (caught.value.field, caught.value.line) == ("image_sha256", 2)


# -- races -----------------------------------------------------------------------------

FEDERAL_YAML = """\
id: mx-mini
parties: [{id: PAN}, {id: PRI}, {id: MORENA}, {id: PT}, {id: MC}]
contests:
  - id: DIP
    options:
      - {id: PAN}
      - {id: PRI}
      - {id: MORENA}
      - {id: PT}
      - {id: MC}
      - {id: PAN_PRI, parties: [PAN, PRI]}
      - {id: MORENA_PT, parties: [MORENA, PT]}
      - {id: CI_01, parties: [PAN]}
states: [{id: "01"}, {id: "02"}]
districts: [{id: "01-01", state: "01"}, {id: "01-02", state: "01"}, {id: "02-01", state: "02"}]
casillas:
  file: casillas.csv
  columns: {casilla_id: C, section_id: S, district_id: D, type: T, nominal_list: L}
actas:
  files: {DIP: dip.csv}
  columns: {casilla_id: C, unregistered_votes: NR, null_votes: NUL}
  options: {CI_01: CAND_IND_1}
"""
DIP_HEADER = "C,PAN,PRI,MORENA,PT,MC,PAN_PRI,MORENA_PT,CAND_IND_1,NR,NUL\n"


def _federal(tmp_path: Path, dip: str) -> ElectionFiles:
    """The federal test election of tests/races_support.py (races with different
    ballots) read with the mapping of FEDERAL_YAML."""
    (tmp_path / "casillas.csv").write_text("C,S,D,T,L\nx,1,01-01,B,1\n", encoding="utf-8")
    (tmp_path / "dip.csv").write_text(dip, encoding="utf-8")
    path = tmp_path / "election.yaml"
    path.write_text(FEDERAL_YAML, encoding="utf-8")
    mapping = load_election(path).actas
    return ElectionFiles(path=path, index=ElectionIndex.from_pb(federal_pb()), actas=mapping)


def test_each_row_carries_the_ballot_of_its_casillas_race(tmp_path: Path) -> None:
    files = _federal(
        tmp_path,
        DIP_HEADER
        + "01-0001-B,1,2,3,4,5,6,7,8,0,1\n"
        # District 01-02 has no independent: PREP writes "-" in that column.
        + "01-0002-B,1,2,3,4,5,6,7,-,0,1\n",
    )
    first, second = load_actas(files)
    race_01 = files.index.race("DIP-01-01")
    race_02 = files.index.race("DIP-01-02")
    assert [o.option_id for o in first.option_votes] == list(race_01.option_ids)
    assert [o.option_id for o in second.option_votes] == list(race_02.option_ids)
    assert "CI_01" not in race_02.option_ids


def test_a_casilla_with_no_race_of_the_contest_is_refused_naming_the_contest(
    tmp_path: Path,
) -> None:
    # The special casilla receives no deputies' acta; district 02-01 has no race.
    for casilla in ("01-0001-S1", "02-0001-B"):
        files = _federal(tmp_path, DIP_HEADER + f"{casilla},1,2,3,4,5,6,7,-,0,1\n")
        with pytest.raises(ActaFileError) as caught:
            list(load_actas(files))
        assert (caught.value.field, caught.value.line) == ("contest_id", 2)


def test_a_column_only_some_races_need_is_needed_only_by_their_rows(tmp_path: Path) -> None:
    header = DIP_HEADER.replace(",CAND_IND_1", "")
    files = _federal(tmp_path, header + "01-0002-B,1,2,3,4,5,6,7,0,1\n")
    assert [a.casilla_id for a in load_actas(files)] == ["01-0002-B"]
    files = _federal(tmp_path, header + "01-0001-B,1,2,3,4,5,6,7,0,1\n")
    with pytest.raises(ActaFileError) as caught:
        list(load_actas(files))
    assert (caught.value.field, caught.value.line) == ("options.CI_01", 2)


def test_a_column_every_race_needs_must_be_in_the_header(tmp_path: Path) -> None:
    files = _federal(tmp_path, DIP_HEADER.replace("PAN,", "", 1))
    with pytest.raises(ActaFileError) as caught:
        list(load_actas(files))
    assert (caught.value.field, caught.value.line) == ("options.PAN", 1)


# -- veritally election init -----------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "small-election"


def _init(*args: str) -> int:
    return main(["election", "init", *args])


def test_election_init_writes_the_states_and_districts_of_the_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "election.yaml"
    catalogue = str(EXAMPLE / "casillas.csv")
    assert (
        _init(
            catalogue,
            "--id",
            "example-2024",
            "--skip-lines",
            "2",
            "--district-name",
            "",
            "--out",
            str(out),
        )
        == 0
    )
    assert "2 states and 3 districts from 19 casillas" in capsys.readouterr().out
    example = load_definition(EXAMPLE / "election.yaml")
    starter = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert [s["id"] for s in starter["states"]] == list(example.state_ids)
    assert [s["name"] for s in starter["states"]] == ["AGUASCALIENTES", "BAJA CALIFORNIA"]
    assert [(d["id"], d["state"]) for d in starter["districts"]] == [
        (d, example.district_state(d)) for d in example.district_ids
    ]
    # With parties, contests and the two columns PREP's names do not give, it loads as
    # the example does.
    text = out.read_text(encoding="utf-8")
    text = text.replace("parties: []", "parties: [{id: PAN}]").replace(
        "contests: []", "contests: [{id: PRES, options: [{id: PAN}]}]"
    )
    text = text.replace(
        "    # casilla_id: TODO (required)\n",
        '    casilla_id: "{ID_ENTIDAD:0>2}-{SECCION:0>4}-{TIPO_CASILLA}{ID_CASILLA}"\n'
        "    ballot_limit: BOLETAS\n",
    )
    out.write_text(text, encoding="utf-8")
    index = load_definition(out)
    assert [c.id for c in index.casillas] == [c.id for c in example.casillas]
    assert {c.district_id for c in index.casillas} == set(example.district_ids)


def test_election_init_fills_in_prep_columns_the_catalogue_has(tmp_path: Path) -> None:
    (tmp_path / "cat.csv").write_text(
        "CLAVE_CASILLA,ID_ENTIDAD,ENTIDAD,ID_DISTRITO_FEDERAL,DISTRITO_FEDERAL,SECCION,"
        "TIPO_CASILLA,LISTA_NOMINAL,REPRESENTANTES_PP_CI\n"
        "010101B,1,AGUASCALIENTES,1,JESÚS MARÍA,101,B,540,2\n"
        "090501B,9,CIUDAD DE MÉXICO,5,TLALPAN,3001,B,610,3\n",
        encoding="utf-8",
    )
    out = tmp_path / "election.yaml"
    assert _init(str(tmp_path / "cat.csv"), "--id", "mx", "--out", str(out)) == 0
    starter = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert starter["districts"] == [
        {"id": "01-01", "state": "01", "name": "JESÚS MARÍA"},
        {"id": "09-05", "state": "09", "name": "TLALPAN"},
    ]
    assert starter["casillas"]["file"] == "cat.csv"
    assert starter["casillas"]["columns"] == {
        "state_id": "{ID_ENTIDAD:0>2}",
        "district_id": "{ID_ENTIDAD:0>2}-{ID_DISTRITO_FEDERAL:0>2}",
        "casilla_id": "CLAVE_CASILLA",
        "type": "TIPO_CASILLA",
        "nominal_list": "LISTA_NOMINAL",
        "party_representatives": "REPRESENTANTES_PP_CI",
        "section_id": "{ID_ENTIDAD:0>2}-{SECCION:0>4}",
    }


@pytest.mark.parametrize(
    ("rows", "line", "fieldname"),
    [
        ("1,A,1,X\n2,B,1,X\n", None, None),  # districts numbered per state: fine
        ("1,A,1,X\n1,B,2,Y\n", 3, "state_name"),
        ("1,A,1,X\n1,A,1,Y\n", 3, "district_name"),
        ("1 2,A,1,X\n", 2, "state_id"),
    ],
    ids=["fine", "state_named_twice", "district_named_twice", "state_id_with_space"],
)
def test_election_init_refuses_a_catalogue_that_disagrees_with_itself(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: str,
    line: int | None,
    fieldname: str | None,
) -> None:
    (tmp_path / "cat.csv").write_text("E,EN,D,DN\n" + rows, encoding="utf-8")
    args = ["--state-id", "{E:0>2}", "--state-name", "EN", "--district-id", "{E:0>2}-{D:0>2}"]
    args += ["--district-name", "DN", "--id", "x", "--out", str(tmp_path / "e.yaml")]
    status = _init(str(tmp_path / "cat.csv"), *args)
    err = capsys.readouterr().err
    if line is None:
        assert status == 0
    else:
        assert status == 1
        assert f"cat.csv:{line}: field '{fieldname}'" in err
        assert not (tmp_path / "e.yaml").exists()


def test_election_init_does_not_replace_a_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "election.yaml"
    out.write_text("# mine\n", encoding="utf-8")
    catalogue = str(EXAMPLE / "casillas.csv")
    args = ["--id", "x", "--skip-lines", "2", "--district-name", "", "--out", str(out)]
    assert _init(catalogue, *args) == 1
    assert out.read_text(encoding="utf-8") == "# mine\n"
    assert _init(catalogue, *args, "--force") == 0
    assert "states:" in out.read_text(encoding="utf-8")


# -- every example of docs/election-format.md ------------------------------------------

REPO = Path(__file__).resolve().parents[2]
FORMAT_DOC = REPO / "docs" / "election-format.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXAMPLE_LINE = re.compile(r"\A# (docs/examples/\S+\.yaml)\n")


def _all_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block of the doc, in order."""
    return FENCE.findall(FORMAT_DOC.read_text(encoding="utf-8"))


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _all_blocks() if lang == language]


def _catalogued() -> list[tuple[str, str]]:
    """(definition, catalogue): a YAML block naming no example file is a whole
    definition, followed by the CSV block of its casilla catalogue."""
    blocks = _all_blocks()
    pairs = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "yaml" and not EXAMPLE_LINE.match(body):
            following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
            assert following[0] == "csv", "a whole definition is followed by its catalogue"
            pairs.append((body, following[1]))
    return pairs


def _merged(base: object, fragment: object) -> object:
    if isinstance(base, dict) and isinstance(fragment, dict):
        return {**base, **{k: _merged(base.get(k), v) for k, v in fragment.items()}}
    return fragment


def test_the_format_doc_has_only_blocks_a_test_runs() -> None:
    assert {lang for lang, _ in _all_blocks()} <= {"yaml", "console", "csv"}
    assert _blocks("yaml")
    assert _blocks("console")


@pytest.mark.parametrize(
    "block",
    [b for b in _blocks("yaml") if EXAMPLE_LINE.match(b)],
    ids=lambda b: b.splitlines()[0][2:],
)
def test_each_yaml_block_of_the_format_doc_loads_as_part_of_its_example(
    tmp_path: Path, block: str
) -> None:
    named = EXAMPLE_LINE.match(block)
    assert named is not None
    example = REPO / named.group(1)
    body = block[named.end() :]
    if body == example.read_text(encoding="utf-8"):
        path = example  # the whole file, as it is
    else:
        # A fragment: applied to a copy of its example, which must then load.
        shutil.copytree(example.parent, tmp_path / "example")
        merged = _merged(yaml.safe_load(example.read_text(encoding="utf-8")), yaml.safe_load(body))
        path = tmp_path / "example" / example.name
        path.write_text(yaml.safe_dump(merged, allow_unicode=True), encoding="utf-8")
    files = load_election(path)
    assert files.index.casillas
    if files.actas is not None:
        assert list(load_actas(files))


def test_each_whole_definition_of_the_format_doc_loads_with_the_catalogue_below_it(
    tmp_path: Path,
) -> None:
    for i, (definition, catalogue) in enumerate(_catalogued()):
        directory = tmp_path / str(i)
        directory.mkdir()
        name = yaml.safe_load(definition)["casillas"]["file"]
        (directory / name).write_text(catalogue, encoding="utf-8")
        (directory / "election.yaml").write_text(definition, encoding="utf-8")
        index = load_definition(directory / "election.yaml")
        assert len(index.casillas) == len(catalogue.splitlines()) - 1


@pytest.mark.parametrize(
    "block",
    [b for b in _blocks("csv") if b not in {c for _, c in _catalogued()}],
)
def test_each_other_csv_block_of_the_format_doc_is_a_header_of_an_example_file(
    block: str,
) -> None:
    lines = {
        line
        for csv_file in (REPO / "docs" / "examples").rglob("*.csv")
        for line in csv_file.read_text(encoding="utf-8").splitlines()
    }
    assert all(line in lines for line in block.splitlines())


@pytest.mark.parametrize(
    "command",
    [line[2:] for block in _blocks("console") for line in block.splitlines() if line[:2] == "$ "],
)
def test_each_command_of_the_format_doc_runs_from_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # From a copy of the repository's examples, so that what a command writes stays here.
    shutil.copytree(REPO / "docs" / "examples", tmp_path / "docs" / "examples")
    monkeypatch.chdir(tmp_path)
    program, *argv = shlex.split(command)
    assert program == "veritally"
    assert main(argv) == 0


def test_election_init_writes_the_states_and_districts_of_the_prep_example(
    tmp_path: Path,
) -> None:
    """The command the format doc shows gives the lists of docs/examples/prep-2024."""
    out = tmp_path / "election.yaml"
    catalogue = str(REPO / "docs" / "examples" / "prep-2024" / "PRES_2024.csv")
    assert _init(catalogue, "--skip-lines", "3", "--id", "mx-2024-federal", "--out", str(out)) == 0
    starter = yaml.safe_load(out.read_text(encoding="utf-8"))
    example = yaml.safe_load(
        (REPO / "docs" / "examples" / "prep-2024" / "election.yaml").read_text(encoding="utf-8")
    )
    assert starter["states"] == example["states"]
    assert starter["districts"] == example["districts"]
    assert starter["casillas"]["columns"] == example["casillas"]["columns"]


# -- actas of casillas outside the catalogue -------------------------------------------

OUTSIDE_ROW = f"c9,7,3,-,0,1,{SHA},,,,,\n"


def test_row_of_a_casilla_outside_the_catalogue_is_refused_by_default(tmp_path: Path) -> None:
    election = with_file("pres.csv", PRES + OUTSIDE_ROW)
    with pytest.raises(ActaFileError, match="unknown casilla 'c9'") as caught:
        list(load_actas(election.write(tmp_path)))
    assert (caught.value.line, caught.value.field) == (4, "casilla_id")


def test_row_outside_the_catalogue_is_read_when_accepted_with_the_figures_it_holds(
    tmp_path: Path,
) -> None:
    """PREP publishes actas of casillas not in its catalogue (ACTAS_FUERA_DE_CATALOGO):
    with ``outside_catalogue: accept`` such a row is read, with the contest's options
    whose cells hold a figure ('-' is off the ballot), for ingest to log and not count."""
    election = Election(
        yaml=replaced(YAML, "  marks:", "  outside_catalogue: accept\n  marks:"),
        files={**Election().files, "pres.csv": PRES + OUTSIDE_ROW},
    )
    actas = [a for a in load_actas(election.write(tmp_path)) if a.casilla_id == "c9"]
    [acta] = actas
    assert acta.contest_id == "PRES"
    assert [(o.option_id, o.votes) for o in acta.option_votes] == [("A", 7), ("B", 3)]
    assert (acta.unregistered_votes, acta.null_votes) == (0, 1)


def test_bad_outside_catalogue_setting_names_the_key(tmp_path: Path) -> None:
    election = with_yaml("  marks:", "  outside_catalogue: yes-please\n  marks:")
    with pytest.raises(DefinitionError, match="'refuse' or 'accept'") as caught:
        load_election(election.write(tmp_path))
    assert caught.value.field == "actas.outside_catalogue"


def test_check_counts_the_actas_outside_the_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    election = Election(
        yaml=replaced(YAML, "  marks:", "  outside_catalogue: accept\n  marks:"),
        files={**Election().files, "pres.csv": PRES + OUTSIDE_ROW},
    )
    assert main(["check", str(election.write(tmp_path)), "--actas"]) == 0
    out = capsys.readouterr().out
    assert "actas read 4 (PRES: 3, SEN: 1)" in out
    assert "actas of casillas outside the catalogue 1 (ingest logs them, never counted)" in out


# -- expected actas that never arrived (PREP's "sin acta") -----------------------------

MISSING_MAPPING = """\
  missing:
    column: OBSERVACIONES
    reasons:
      Sin acta por paquete no entregado: PACKAGE_NOT_DELIVERED
      Sin acta por casilla no instalada: CASILLA_NOT_INSTALLED
      Sin acta por sin sobre: NO_ENVELOPE
  marks:"""
OBS_HEADER = ACTA_HEADER.replace("\n", ",OBSERVACIONES\n")
NOT_DELIVERED = "Sin acta por paquete no entregado"
# A row as PREP writes one for an acta that never arrived: '-' in every figure and count,
# no digest, the reason in OBSERVACIONES.
SIN_ACTA_ROW = "c2,-,-,-,-,-,,-,-,-,-,-,{obs}\n"


def _missing_election(pres_rows: str, *, yaml_text: str = YAML) -> Election:
    """The test election with ``actas.missing`` and an OBSERVACIONES column; PRES holds
    c1's acta and then ``pres_rows``."""
    return Election(
        yaml=replaced(yaml_text, "  marks:", MISSING_MAPPING),
        files={
            "casillas.csv": CASILLAS,
            "pres.csv": OBS_HEADER + f"c1,100,50,5,1,4,{SHA},420,160,2,160,160,\n" + pres_rows,
            "sen.csv": OBS_HEADER
            + f"c1,90,60,4,0,6,{SHA},418,160,2,160,159,Excede lista nominal\n",
        },
    )


def test_sin_acta_row_is_a_missing_acta_with_its_reason_not_an_acta(tmp_path: Path) -> None:
    election = _missing_election(SIN_ACTA_ROW.format(obs=f" {NOT_DELIVERED} "))
    rows = list(load_acta_rows(election.write(tmp_path)))
    assert [type(r).__name__ for r in rows] == ["Acta", "MissingActa", "Acta"]
    missing = rows[1]
    assert isinstance(missing, MissingActa)
    assert missing == MissingActa(
        casilla_id="c2",
        contest_id="PRES",
        reason=acta_pb2.NOT_COUNTED_REASON_PACKAGE_NOT_DELIVERED,
        line=3,
    )
    assert missing.acta_id == "c2/PRES"
    # load_actas reads the actas only; another observation leaves the row an acta.
    actas = list(load_actas(election.write(tmp_path)))
    assert [(a.casilla_id, a.contest_id) for a in actas] == [("c1", "PRES"), ("c1", "SEN")]


def test_sin_acta_row_carries_its_capture_centre_for_import_by_centre(tmp_path: Path) -> None:
    election = _missing_election(
        SIN_ACTA_ROW.format(obs=NOT_DELIVERED).replace("\n", ",cc-02\n"),
        yaml_text=replaced(
            YAML, "    null_votes: NULOS\n", "    null_votes: NULOS\n    capture_centre: CC\n"
        ),
    )
    election.files["pres.csv"] = (
        election.files["pres.csv"]
        .replace("OBSERVACIONES\n", "OBSERVACIONES,CC\n")
        .replace(",160,160,\n", ",160,160,,cc-01\n")
    )
    election.files["sen.csv"] = (
        election.files["sen.csv"]
        .replace("OBSERVACIONES\n", "OBSERVACIONES,CC\n")
        .replace("nominal\n", "nominal,cc-01\n")
    )
    missing = [r for r in load_acta_rows(election.write(tmp_path)) if isinstance(r, MissingActa)]
    assert [m.capture_centre_id for m in missing] == ["cc-02"]


def test_unknown_sin_acta_reason_is_refused_naming_the_column_and_the_text(
    tmp_path: Path,
) -> None:
    """An observation that reads like a missing acta's but is no text of the mapping is
    an error, never an acta with every figure blank."""
    for text in ("Sin acta por contingencia en urna electrónica", "SIN ACTA POR PAQUETE"):
        election = _missing_election(SIN_ACTA_ROW.format(obs=text))
        with pytest.raises(ActaFileError) as caught:
            list(load_acta_rows(election.write(tmp_path)))
        assert (Path(caught.value.file).name, caught.value.line) == ("pres.csv", 3)
        assert caught.value.field == "missing.reasons"
        assert "'OBSERVACIONES'" in caught.value.reason
        assert repr(text) in caught.value.reason


def test_unknown_sin_acta_reason_is_quoted_only_in_part(tmp_path: Path) -> None:
    runaway = "Sin acta " + "x" * 100_000
    election = _missing_election(SIN_ACTA_ROW.format(obs=runaway))
    with pytest.raises(ActaFileError) as caught:
        list(load_acta_rows(election.write(tmp_path)))
    assert caught.value.field == "missing.reasons"
    assert len(str(caught.value)) < 600
    assert f"({len(runaway)} characters)" in caught.value.reason


@pytest.mark.parametrize(
    ("cells", "fieldname"),
    [
        ("c2,-,12,-,-,-,,-,-,-,-,-", "options.B"),
        ("c2,-,-,-,-,3,,-,-,-,-,-", "null_votes"),
        ("c2,-,-,-,-,-,,-,-,-,-,Sin dato", "total_votes_written"),
        ("c2,-,-,-,-,-,,-,200,-,-,-", "voters"),
    ],
    ids=["option", "null_votes", "marked_count", "count"],
)
def test_sin_acta_row_with_a_figure_is_refused_naming_the_field(
    tmp_path: Path, cells: str, fieldname: str
) -> None:
    election = _missing_election(f"{cells},{NOT_DELIVERED}\n")
    with pytest.raises(ActaFileError) as caught:
        list(load_acta_rows(election.write(tmp_path)))
    assert (caught.value.field, caught.value.line) == (fieldname, 3)


def test_sin_acta_row_may_leave_its_figures_empty(tmp_path: Path) -> None:
    election = _missing_election(f"c2,,,,,,,,,,,,{NOT_DELIVERED}\n")
    [missing] = [r for r in load_acta_rows(election.write(tmp_path)) if isinstance(r, MissingActa)]
    assert missing.casilla_id == "c2"


def test_sin_acta_row_reads_with_a_constant_figure_of_the_mapping(tmp_path: Path) -> None:
    # A combined column's mapping gives every row unregistered_votes "0": not the row's.
    yaml_text = replaced(
        YAML, "    unregistered_votes: NO_REGISTRADOS\n", "    unregistered_votes: {const: '0'}\n"
    )
    election = _missing_election(SIN_ACTA_ROW.format(obs=NOT_DELIVERED), yaml_text=yaml_text)
    rows = list(load_acta_rows(election.write(tmp_path)))
    assert [type(r).__name__ for r in rows] == ["Acta", "MissingActa", "Acta"]


def test_sin_acta_row_of_a_casilla_outside_the_catalogue_is_refused(tmp_path: Path) -> None:
    # Even where out-of-catalogue actas are read: no acta of such a casilla is expected.
    yaml_text = replaced(YAML, "  marks:", "  outside_catalogue: accept\n  marks:")
    election = _missing_election(
        SIN_ACTA_ROW.format(obs=NOT_DELIVERED).replace("c2,", "c9,"), yaml_text=yaml_text
    )
    with pytest.raises(ActaFileError) as caught:
        list(load_acta_rows(election.write(tmp_path)))
    assert (caught.value.field, caught.value.line) == ("casilla_id", 3)


def test_missing_column_not_in_the_header_names_the_mapping(tmp_path: Path) -> None:
    election = _missing_election("")
    election.files["sen.csv"] = SEN
    with pytest.raises(ActaFileError) as caught:
        list(load_acta_rows(election.write(tmp_path)))
    assert (Path(caught.value.file).name, caught.value.line) == ("sen.csv", 1)
    assert caught.value.field == "missing.column"


@pytest.mark.parametrize(
    ("old", "new", "fieldname"),
    [
        (": PACKAGE_NOT_DELIVERED", ": ALL_BLANK", "actas.missing.reasons.Sin acta por paquete"),
        ("    column: OBSERVACIONES\n", "", "actas.missing.column"),
        (
            "    column: OBSERVACIONES\n",
            "    column: OBS\n    colour: red\n",
            "actas.missing.colour",
        ),
        (
            "    column: OBSERVACIONES\n",
            "    column: OBSERVACIONES\n    prefix: ' '\n",
            "actas.missing.prefix",
        ),
    ],
    ids=["not_a_missing_reason", "no_column", "unknown_key", "empty_prefix"],
)
def test_bad_missing_mapping_names_the_key(
    tmp_path: Path, old: str, new: str, fieldname: str
) -> None:
    election = _missing_election("")
    election.yaml = replaced(election.yaml, old, new)
    with pytest.raises(DefinitionError) as caught:
        load_election(election.write(tmp_path))
    assert caught.value.field is not None
    assert caught.value.field.startswith(fieldname)
    assert caught.value.line is not None


def test_missing_mapping_without_reasons_is_refused(tmp_path: Path) -> None:
    election = _missing_election("")
    election.yaml = (
        election.yaml.split("    reasons:\n")[0]
        + "    reasons: {}\n"
        + (election.yaml.split("Sin acta por sin sobre: NO_ENVELOPE\n")[1])
    )
    with pytest.raises(DefinitionError) as caught:
        load_election(election.write(tmp_path))
    assert caught.value.field == "actas.missing.reasons"


def test_the_loaders_missing_reasons_are_those_ingest_records() -> None:
    assert set(MISSING_REASONS.values()) == set(ingest_rules.MISSING_REASONS)
    assert all(
        acta_pb2.NotCountedReason.Name(v) == f"NOT_COUNTED_REASON_{k}"
        for k, v in MISSING_REASONS.items()
    )


def test_a_missing_acta_holds_a_reason_for_a_missing_acta() -> None:
    with pytest.raises(ValueError, match="not a reason for a missing acta"):
        MissingActa(
            casilla_id="c1", contest_id="PRES", reason=acta_pb2.NOT_COUNTED_REASON_ALL_BLANK
        )


def test_check_counts_the_missing_actas_per_contest_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    election = _missing_election(SIN_ACTA_ROW.format(obs=NOT_DELIVERED))
    assert main(["check", str(election.write(tmp_path)), "--actas"]) == 0
    out = capsys.readouterr().out
    assert "actas read 2 (PRES: 1, SEN: 1)" in out
    assert "actas missing 1 (PRES: 1; PACKAGE_NOT_DELIVERED: 1)" in out
