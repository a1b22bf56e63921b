"""The election loader: mapped CSV columns load, and every error names file, line, field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from veritally.cli.check import add_arguments, run
from veritally.election.loader import (
    ActaFileError,
    DefinitionError,
    load_actas,
    load_definition,
    load_election,
)
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2

EXAMPLE = REPO_ROOT / "docs" / "examples" / "small-election" / "election.yaml"
SHA = "ab" * 32

BASE_YAML = """\
format: veritally-election/1
id: t-1
name: Test
parties:
  - {id: A, name: Party A}
  - {id: B, name: Party B}
contests:
  - id: PRES
    options:
      - {id: A}
      - {id: B}
      - {id: A_B, parties: [A, B]}
  - id: SEN
    options:
      - {id: A}
states:
  - {id: "01", name: One}
  - {id: "02", name: Two}
districts:
  - {id: "01-01", state: "01"}
  - {id: "02-01", state: "02"}
casillas:
  file: casillas.csv
  columns:
    casilla_id: ID
    section_id: "{EDO}-{SEC:0>4}"
    district_id: DTO
    state_id: EDO
    type: TIPO
    nominal_list: LN
    party_representatives: REP
    ballot_limit: BOL
  types: {B: BASICA, C: CONTIGUA, E: EXTRAORDINARIA, S: ESPECIAL}
  zero_values: ["-"]
actas:
  file: actas.csv
  columns:
    casilla_id: ID
    contest_id: CONT
    unregistered_votes: NR
    null_votes: NUL
    image_sha256: SHA
    origin: ORIG
    digitisation: DIG
    captured_time: HORA
  options: {A_B: A-B}
  time_format: "%d/%m/%Y %H:%M"
  timezone: "-06:00"
"""

BASE_CASILLAS = """\
ID,EDO,DTO,SEC,TIPO,LN,REP,BOL
c1,01,01-01,1,B,500,3,0
c2,01,01-01,1,C,400,0,0
c3,02,02-01,7,S,-,1,750
"""

BASE_ACTAS = f"""\
ID,CONT,A,B,A-B,NR,NUL,SHA,ORIG,DIG,HORA
c1,PRES,10,20,1,0,2,{SHA},CATD,SCANNER,02/06/2024 20:30
c1,SEN,12,,,Ilegible,Sin dato,,CASILLA,MOBILE,
c3,PRES,Ilegible,Sin dato,3,0,0,,,,02/06/2024 21:05
"""


@dataclass
class Files:
    yaml: str = BASE_YAML
    casillas: str = BASE_CASILLAS
    actas: str = BASE_ACTAS

    def write(self, directory: Path) -> Path:
        (directory / "casillas.csv").write_text(self.casillas, encoding="utf-8")
        (directory / "actas.csv").write_text(self.actas, encoding="utf-8")
        path = directory / "election.yaml"
        path.write_text(self.yaml, encoding="utf-8")
        return path


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"test setup: {old!r} not in the base text"
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"test setup: {needle!r} not found")


# -- loading ---------------------------------------------------------------------------


def test_loads_mapped_catalogue_with_derived_sections(tmp_path: Path) -> None:
    index = load_definition(Files().write(tmp_path))
    assert index.election_id == "t-1"
    assert index.section_ids == ("01-0001", "02-0007")
    assert index.section_district("02-0007") == "02-01"
    c3 = index.casilla("c3")
    assert c3.type == election_pb2.CASILLA_TYPE_ESPECIAL
    assert (c3.nominal_list, c3.ballot_limit, c3.party_representatives) == (0, 750, 1)
    assert index.option_ids("PRES") == ("A", "B", "A_B")
    assert index.contest("PRES").option_index["A_B"] == 2
    assert list(index.pb.contests[0].options[2].party_ids) == ["A", "B"]


def test_loads_actas_with_marks_times_and_provenance(tmp_path: Path) -> None:
    actas = list(load_actas(Files().write(tmp_path)))
    assert [(a.casilla_id, a.contest_id) for a in actas] == [
        ("c1", "PRES"),
        ("c1", "SEN"),
        ("c3", "PRES"),
    ]
    first = actas[0]
    assert [(o.option_id, o.votes) for o in first.option_votes] == [
        ("A", 10),
        ("B", 20),
        ("A_B", 1),
    ]
    assert first.image_sha256 == bytes.fromhex(SHA)
    assert first.provenance.origin == acta_pb2.ACTA_ORIGIN_CATD
    assert first.provenance.digitisation == acta_pb2.DIGITISATION_METHOD_SCANNER
    # 2024-06-02 20:30 at UTC-6 is 2024-06-03 02:30 UTC.
    assert first.provenance.captured_time.ToJsonString() == "2024-06-03T02:30:00Z"
    sen = actas[1]
    assert [o.option_id for o in sen.option_votes] == ["A"]
    assert (sen.unregistered_votes, sen.unregistered_mark) == (0, acta_pb2.FIELD_MARK_ILLEGIBLE)
    assert (sen.null_votes, sen.null_mark) == (0, acta_pb2.FIELD_MARK_BLANK)
    assert not sen.provenance.HasField("captured_time")
    marks = [(o.votes, o.mark) for o in actas[2].option_votes]
    assert marks == [
        (0, acta_pb2.FIELD_MARK_ILLEGIBLE),
        (0, acta_pb2.FIELD_MARK_BLANK),
        (3, acta_pb2.FIELD_MARK_UNSPECIFIED),
    ]


def test_explicit_acta_file_overrides_the_mapping(tmp_path: Path) -> None:
    files = load_election(Files().write(tmp_path))
    other = tmp_path / "more.csv"
    other.write_text(BASE_ACTAS.splitlines()[0] + "\nc2,SEN,4,,,0,0,,,,\n", encoding="utf-8")
    assert [a.casilla_id for a in load_actas(files, other)] == ["c2"]


def test_example_election_loads_with_its_actas() -> None:
    files = load_election(EXAMPLE)
    index = files.index
    assert len(index.state_ids) == 2
    assert len(index.district_ids) == 3
    assert len(index.contests) == 3
    assert 15 <= len(index.casillas) <= 25
    assert any(len(o.party_ids) > 1 for c in index.pb.contests for o in c.options)
    types = {c.type for c in index.casillas}
    assert election_pb2.CASILLA_TYPE_ESPECIAL in types
    actas = list(load_actas(files))
    assert {a.contest_id for a in actas} == {"PRES", "SEN", "DIP"}
    assert len(actas) < len(index.casillas) * 3  # some actas never arrive
    assert any(o.mark == acta_pb2.FIELD_MARK_ILLEGIBLE for a in actas for o in a.option_votes)
    for acta in actas:
        assert index.has_casilla(acta.casilla_id)
        assert [o.option_id for o in acta.option_votes] == list(index.option_ids(acta.contest_id))


def test_check_command_reports_success_and_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run(parser.parse_args([str(EXAMPLE), "--actas"])) == 0
    assert "casillas" in capsys.readouterr().out
    bad = Files(casillas=replaced(BASE_CASILLAS, "c2,", "c1,")).write(tmp_path)
    assert run(parser.parse_args([str(bad)])) == 1
    assert "casillas.csv:3" in capsys.readouterr().err


# -- definition errors -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A broken input and where the error must point."""

    files: Files
    file: str
    line: int | None
    field: str | None


def yaml_case(old: str, new: str, field: str, line_needle: str | None = None) -> Case:
    text = replaced(BASE_YAML, old, new)
    line = line_of(text, line_needle) if line_needle else None
    return Case(Files(yaml=text), "election.yaml", line, field)


def casillas_case(old: str, new: str, line: int, field: str | None) -> Case:
    return Case(Files(casillas=replaced(BASE_CASILLAS, old, new)), "casillas.csv", line, field)


DEFINITION_ERRORS: dict[str, Case] = {
    "not_yaml": Case(
        Files(yaml=replaced(BASE_YAML, "name: Test\n", "name: Test: bad\n")),
        "election.yaml",
        3,
        None,
    ),
    "unsupported_format": yaml_case("veritally-election/1", "other/2", "format", "format:"),
    "capture_centre_not_a_certificate_name": Case(
        Files(
            yaml=replaced(
                BASE_YAML,
                "    ballot_limit: BOL\n",
                "    ballot_limit: BOL\n    capture_centre: CC\n",
            ),
            casillas=BASE_CASILLAS.replace("BOL\n", "BOL,CC\n")
            .replace(",0\nc2", ",0,cc-01\nc2")
            .replace(",0\nc3", ",0,\u0441c-01\nc3")
            .replace("750\n", "750,cc-02\n"),
        ),
        "casillas.csv",
        3,
        "capture_centre",
    ),
    "duplicate_party": yaml_case(
        "{id: B, name: Party B}", "{id: A, name: Party B}", "parties[1].id", "Party B"
    ),
    "id_not_a_string": yaml_case(
        '{id: "01", name: One}', "{id: 1, name: One}", "states[0].id", "One"
    ),
    "empty_id": yaml_case(
        "{id: B, name: Party B}", '{id: "", name: Party B}', "parties[1].id", "Party B"
    ),
    # The identifier rule of ingest (veritally.bounds): a look-alike id is refused
    # where it is defined, not only when an acta names it.
    "confusable_option_id": yaml_case(
        "      - {id: B}\n",
        "      - {id: \u0412}  # Cyrillic\n",
        "contests[0].options[1].id",
        "Cyrillic",
    ),
    "contest_id_with_slash": yaml_case(
        "  - id: SEN\n", "  - id: SEN/2  # slash\n", "contests[1].id", "# slash"
    ),
    "casilla_id_too_long": casillas_case(
        "c2,01,01-01,1,C", f"{'c' * 65},01,01-01,1,C", 3, "casilla_id"
    ),
    "casilla_id_with_space": casillas_case("c2,01,01-01,1,C", "c 2,01,01-01,1,C", 3, "casilla_id"),
    "duplicate_contest": yaml_case(
        "  - id: SEN\n", "  - id: PRES  # again\n", "contests[1].id", "# again"
    ),
    "contest_without_options": yaml_case(
        "  - id: SEN\n    options:\n      - {id: A}\n",
        "  - id: SEN\n    options: []\n",
        "contests[1].options",
        "- id: SEN",
    ),
    "duplicate_option": yaml_case(
        "      - {id: B}\n",
        "      - {id: A, name: again}\n",
        "contests[0].options[1].id",
        "again",
    ),
    "option_unknown_party": yaml_case(
        "{id: A_B, parties: [A, B]}",
        "{id: A_B, parties: [A, Z]}",
        "contests[0].options[2].parties",
        "A_B",
    ),
    "duplicate_state": yaml_case(
        '{id: "02", name: Two}', '{id: "01", name: Two}', "states[1].id", "Two"
    ),
    "duplicate_district": yaml_case(
        '{id: "02-01", state: "02"}', '{id: "01-01", state: "02"}', "districts[1].id", 'state: "02"'
    ),
    "district_unknown_state": yaml_case(
        '{id: "02-01", state: "02"}', '{id: "02-01", state: "09"}', "districts[1].state", '"09"'
    ),
    "casillas_section_missing": yaml_case(
        "casillas:\n  file", "nocasillas:\n  file", "casillas", "format:"
    ),
    "casilla_column_missing": yaml_case(
        "    type: TIPO\n", "", "casillas.columns.type", "file: casillas.csv"
    ),
    "casilla_unknown_mapped_field": yaml_case(
        "    type: TIPO\n",
        "    type: TIPO\n    colour: X\n",
        "casillas.columns.colour",
        "file: casillas.csv",
    ),
    "casilla_type_name_unknown": yaml_case(
        "S: ESPECIAL}", "S: SPECIAL}", "casillas.types.S", "file: casillas.csv"
    ),
    "acta_option_unknown": yaml_case(
        "options: {A_B: A-B}", "options: {A_B: A-B, Z: Z}", "actas.options.Z", "file: actas.csv"
    ),
    "acta_column_missing": yaml_case(
        "    null_votes: NUL\n", "", "actas.columns.null_votes", "file: actas.csv"
    ),
    "acta_contest_column_missing": yaml_case(
        "    contest_id: CONT\n", "", "actas.columns.contest_id", "file: actas.csv"
    ),
    "acta_files_unknown_contest": yaml_case(
        "  file: actas.csv\n", "  files: {GOV: gov.csv}\n", "actas.files.GOV", "files: {GOV"
    ),
    "acta_bad_timezone": yaml_case(
        'timezone: "-06:00"', 'timezone: "CST"', "actas.timezone", "file: actas.csv"
    ),
    "acta_marks_overlap": yaml_case(
        '  timezone: "-06:00"\n',
        '  timezone: "-06:00"\n  marks: {illegible: [X], blank: [X]}\n',
        "actas.marks",
        "marks:",
    ),
    "duplicate_casilla": casillas_case("c2,", "c1,", 3, "casilla_id"),
    "empty_casilla_id": casillas_case("c2,", ",", 3, "casilla_id"),
    "casilla_unknown_district": casillas_case("c3,02,02-01", "c3,02,02-09", 4, "district_id"),
    "casilla_state_mismatch": casillas_case("c3,02,02-01", "c3,01,02-01", 4, "state_id"),
    "section_in_two_districts_same_state": Case(
        Files(
            yaml=replaced(
                BASE_YAML,
                '  - {id: "02-01", state: "02"}\n',
                '  - {id: "02-01", state: "02"}\n  - {id: "01-02", state: "01"}\n',
            ),
            casillas=replaced(BASE_CASILLAS, "c2,01,01-01,1", "c2,01,01-02,1"),
        ),
        "casillas.csv",
        3,
        "section_id",
    ),
    "casilla_unknown_type_value": casillas_case(",C,400", ",X,400", 3, "type"),
    "casilla_bad_number": casillas_case(",400,", ",4o0,", 3, "nominal_list"),
    "casilla_negative_number": casillas_case(",0,0\nc3", ",-1,0\nc3", 3, "party_representatives"),
    "special_with_nominal_list": casillas_case(",S,-,", ",S,20,", 4, "nominal_list"),
    "special_without_ballot_limit": casillas_case(",1,750", ",1,0", 4, "ballot_limit"),
    "basic_without_nominal_list": casillas_case(",B,500,", ",B,0,", 2, "nominal_list"),
    "casilla_header_missing_column": casillas_case(
        "ID,EDO,DTO,SEC,TIPO", "ID,EDO,DTO,SEC,KIND", 1, "type"
    ),
    "casilla_template_column_missing": casillas_case(
        "ID,EDO,DTO,SEC,", "ID,EDO,DTO,SECCION,", 1, "section_id"
    ),
    "casilla_short_row": casillas_case("c2,01,01-01,1,C,400,0,0", "c2,01,01-01,1,C", 3, None),
    "casilla_file_missing": Case(
        Files(yaml=replaced(BASE_YAML, "file: casillas.csv", "file: nope.csv")),
        "nope.csv",
        None,
        None,
    ),
}


@pytest.mark.parametrize("case", DEFINITION_ERRORS.values(), ids=list(DEFINITION_ERRORS))
def test_definition_error_names_file_line_and_field(tmp_path: Path, case: Case) -> None:
    path = case.files.write(tmp_path)
    with pytest.raises(DefinitionError) as info:
        load_definition(path)
    error = info.value
    assert type(error) is DefinitionError
    assert Path(error.file).name == case.file
    assert error.line == case.line
    assert error.field == case.field


def test_definition_error_is_a_value_error() -> None:
    assert issubclass(DefinitionError, ValueError)
    assert issubclass(ActaFileError, DefinitionError)


def test_missing_definition_file_is_a_definition_error(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition(tmp_path / "election.yaml")
    assert info.value.line is None


# -- acta file errors ------------------------------------------------------------------

ACTA_ERRORS: dict[str, tuple[str, str, int, str | None]] = {
    "unknown_casilla": ("c3,PRES,Ilegible", "c9,PRES,Ilegible", 4, "casilla_id"),
    "unknown_contest": ("c1,SEN,12", "c1,GOV,12", 3, "contest_id"),
    "bad_figure": ("c1,PRES,10,20", "c1,PRES,1O,20", 2, "options.A"),
    "negative_figure": ("c1,PRES,10,20,1,0,2", "c1,PRES,10,20,1,0,-2", 2, "null_votes"),
    "missing_figure": ("c1,SEN,12,", "c1,SEN,,", 3, "options.A"),
    "bad_sha": (SHA, "abc", 2, "image_sha256"),
    "bad_time": ("02/06/2024 20:30", "2024-06-02 20:30", 2, "captured_time"),
    "unknown_origin": ("CATD,SCANNER", "CAT,SCANNER", 2, "origin"),
    "unknown_digitisation": ("CATD,SCANNER", "CATD,FAX", 2, "digitisation"),
    "option_column_missing": ("ID,CONT,A,B,A-B", "ID,CONT,A,B,AB", 1, "options.A_B"),
    "short_row": (",CASILLA,MOBILE,\n", ",CASILLA\n", 3, None),
}


@pytest.mark.parametrize(
    ("old", "new", "line", "field"), ACTA_ERRORS.values(), ids=list(ACTA_ERRORS)
)
def test_acta_file_error_names_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str | None
) -> None:
    path = Files(actas=replaced(BASE_ACTAS, old, new)).write(tmp_path)
    with pytest.raises(ActaFileError) as info:
        list(load_actas(path))
    assert Path(info.value.file).name == "actas.csv"
    assert info.value.line == line
    assert info.value.field == field


def test_load_actas_requires_an_actas_section(tmp_path: Path) -> None:
    text = BASE_YAML[: BASE_YAML.index("actas:")]
    path = Files(yaml=text).write(tmp_path)
    assert load_definition(path).election_id == "t-1"
    with pytest.raises(DefinitionError) as info:
        list(load_actas(path))
    assert info.value.field == "actas"


def test_per_contest_files_are_read_in_contest_order(tmp_path: Path) -> None:
    text = replaced(BASE_YAML, "  file: actas.csv\n", "  files: {SEN: sen.csv, PRES: pres.csv}\n")
    text = replaced(text, "    contest_id: CONT\n", "")
    path = Files(yaml=text).write(tmp_path)
    header = "ID,A,B,A-B,NR,NUL,SHA,ORIG,DIG,HORA\n"
    (tmp_path / "sen.csv").write_text(header + "c2,7,,,0,0,,,,\n", encoding="utf-8")
    (tmp_path / "pres.csv").write_text(header + "c1,1,2,3,0,0,,,,\n", encoding="utf-8")
    actas = list(load_actas(path))
    assert [(a.casilla_id, a.contest_id) for a in actas] == [("c1", "PRES"), ("c2", "SEN")]
    assert [o.votes for o in actas[0].option_votes] == [1, 2, 3]


def test_catalogue_column_assigns_each_casilla_to_a_capture_centre(tmp_path: Path) -> None:
    yaml_text = replaced(
        BASE_YAML, "    ballot_limit: BOL\n", "    ballot_limit: BOL\n    capture_centre: CC\n"
    )
    casillas = (
        BASE_CASILLAS.replace("BOL\n", "BOL,CC\n")
        .replace(",0\nc2", ",0,cc-01\nc2")
        .replace(",0\nc3", ",0,cc-01\nc3")
        .replace("750\n", "750,cc-02\n")
    )
    definition = load_definition(Files(yaml=yaml_text, casillas=casillas).write(tmp_path))
    assert {c.id: c.capture_centre_id for c in definition.pb.casillas} == {
        "c1": "cc-01",
        "c2": "cc-01",
        "c3": "cc-02",
    }
