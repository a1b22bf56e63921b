"""Races, candidates, coalitions, ballots, the rehearsal flag and the close time in
``election.yaml``: they load into the model the SDK validates, a race template declares
a race per unit, and every error names the file, line and YAML key at fault."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.races_support import federal_pb
from veritally.election.loader import DefinitionError, load_definition
from veritally_client._gen.veritally.v1 import election_pb2, results_pb2

# The mini federal election of tests/races_support.py, written as YAML: explicit races
# for the presidency and the deputies, a template for the senate.
FEDERAL_YAML = """\
format: veritally-election/1
id: mx-mini
name: Mini federal
parties:
  - {id: PAN, name: PAN, abbreviation: PAN}
  - {id: PRI, name: PRI, abbreviation: PRI}
  - {id: MORENA, name: MORENA, abbreviation: MORENA}
  - {id: PT, name: PT, abbreviation: PT}
  - {id: MC, name: MC, abbreviation: MC}
coalitions:
  - {id: FCM, name: Fuerza y Corazón, parties: [PAN, PRI]}
  - {id: SHH, name: Sigamos, parties: [MORENA, PT]}
contests:
  - id: PRES
    name: Presidencia
    options: &ballot
      - {id: PAN}
      - {id: PRI}
      - {id: MORENA}
      - {id: PT}
      - {id: MC}
      - {id: PAN_PRI, parties: [PAN, PRI]}
      - {id: MORENA_PT, parties: [MORENA, PT]}
    races:
      - candidates:
          - {id: x, name: Xóchitl, coalition: FCM}
          - {id: c, name: Claudia, coalition: SHH}
          - {id: j, name: Jorge, party: MC}
  - id: SEN
    name: Senado
    scope: state
    options: *ballot
    race_template:
      candidates:
        - {id: a, coalition: FCM}
        - {id: b, coalition: SHH}
        - {id: m, party: MC}
    races:
      - {unit: "01", names: {a: A, b: B, m: M}}
      - unit: "02"
        candidates:
          - {id: p, name: P, party: PAN}
          - {id: r, name: R, party: PRI}
          - {id: b, name: B2, coalition: SHH}
          - {id: m, name: M2, party: MC}
  - id: DIP
    name: Diputaciones
    scope: district
    options:
      - {id: PAN}
      - {id: PRI}
      - {id: MORENA}
      - {id: PT}
      - {id: MC}
      - {id: PAN_PRI, parties: [PAN, PRI]}
      - {id: MORENA_PT, parties: [MORENA, PT]}
      - {id: CI_01, parties: []}
    races:
      - id: DIP-01-01
        unit: "01-01"
        options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT, CI_01]
        candidates:
          - {id: d1, name: D1, coalition: FCM}
          - {id: d2, name: D2, coalition: SHH}
          - {id: d3, name: D3, party: MC}
          - {id: d4, name: Indie, independent: CI_01}
      - unit: "01-02"
        options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT]
ballots:
  ESPECIAL: [PRES, SEN]
states:
  - {id: "01", name: Uno}
  - {id: "02", name: Dos}
districts:
  - {id: "01-01", state: "01", name: d1}
  - {id: "01-02", state: "01", name: d2}
  - {id: "02-01", state: "02", name: d3}
casillas:
  file: casillas.csv
  columns:
    casilla_id: ID
    section_id: SEC
    district_id: DTO
    type: TIPO
    nominal_list: LN
    ballot_limit: BOL
"""

CASILLAS = """\
ID,SEC,DTO,TIPO,LN,BOL
01-0001-B,01-0001,01-01,B,500,0
01-0001-C1,01-0001,01-01,C,480,0
01-0001-S1,01-0001,01-01,S,0,750
01-0002-B,01-0002,01-02,B,300,0
02-0001-B,02-0001,02-01,B,700,0
02-0001-E1,02-0001,02-01,E,250,0
"""


def write(directory: Path, text: str, casillas: str = CASILLAS) -> Path:
    (directory / "casillas.csv").write_text(casillas, encoding="utf-8")
    path = directory / "election.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"test setup: {old!r} not in the text"
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"test setup: {needle!r} not found")


# -- loading ---------------------------------------------------------------------------


def test_federal_yaml_loads_into_the_model_the_sdk_tests_use(tmp_path: Path) -> None:
    index = load_definition(write(tmp_path, FEDERAL_YAML))
    assert index.pb == federal_pb()
    assert [r.id for r in index.races] == [
        "PRES",
        "SEN-01",
        "SEN-02",
        "DIP-01-01",
        "DIP-01-02",
    ]
    # The special casilla receives no deputies' acta; the district without a deputies'
    # race expects none either.
    assert index.race_of("01-0001-S1", "DIP") is None
    assert index.race_of("02-0001-B", "DIP") is None
    assert index.race("SEN-02").candidate("b").option_ids == ("MORENA", "PT", "MORENA_PT")


_DIP_RACES = FEDERAL_YAML[
    FEDERAL_YAML.index("    races:\n      - id: DIP-01-01") : FEDERAL_YAML.index("ballots:")
]
# The deputies declared with a template, a rehearsal with a close time.
TEMPLATE_YAML = replaced(
    replaced(
        FEDERAL_YAML,
        _DIP_RACES,
        """\
    race_template:
      id: "DIP-{unit}"
      name: "Diputación federal, {state_name} distrito {unit_name}"
      candidates:
        - {id: FCM, coalition: FCM}
        - {id: SHH, coalition: SHH}
        - {id: MC, party: MC}
    races:
      - unit: "02-01"
        names: {FCM: Ana Pérez, SHH: Luis Gómez, MC: Rosa Díaz}
      - unit: "01-02"
        candidates:
          - {party: PAN, name: Juan López}
          - {party: PRI, name: María Ruiz}
          - {coalition: SHH, name: Pedro Soto}
          - {party: MC, name: Elena Cruz}
          - {independent: CI_01, name: Carmen Vega}
""",
    ),
    "ballots:",
    "test: true\nclose_time: 2024-06-03T20:00:00-06:00\nballots:",
)


def test_race_template_declares_a_race_per_unit_with_overrides(tmp_path: Path) -> None:
    index = load_definition(write(tmp_path, TEMPLATE_YAML))
    dip = index.contest("DIP")
    assert dip.scope == results_pb2.LEVEL_DISTRICT
    assert [(r.id, r.unit_id) for r in dip.races] == [
        ("DIP-01-01", "01-01"),
        ("DIP-01-02", "01-02"),
        ("DIP-02-01", "02-01"),
    ]
    first = index.race("DIP-01-01")
    assert first.name == "Diputación federal, Uno distrito d1"
    # The ballot is the contest's options its candidates stand for, in contest order.
    assert first.option_ids == ("PAN", "PRI", "MORENA", "PT", "MC", "PAN_PRI", "MORENA_PT")
    assert [(c.id, c.name, c.nominated_by) for c in first.candidates] == [
        ("FCM", "FCM", "coalition"),
        ("SHH", "SHH", "coalition"),
        ("MC", "MC", "party"),
    ]
    named = index.race("DIP-02-01")
    assert [c.name for c in named.candidates] == ["Ana Pérez", "Luis Gómez", "Rosa Díaz"]
    # PAN and PRI run apart in 01-02, with an independent: no PAN_PRI box on its ballot.
    apart = index.race("DIP-01-02")
    assert apart.option_ids == ("PAN", "PRI", "MORENA", "PT", "MC", "MORENA_PT", "CI_01")
    assert [(c.id, c.option_ids) for c in apart.candidates] == [
        ("PAN", ("PAN",)),
        ("PRI", ("PRI",)),
        ("SHH", ("MORENA", "PT", "MORENA_PT")),
        ("MC", ("MC",)),
        ("CI_01", ("CI_01",)),
    ]
    assert index.is_test
    assert index.close_time == datetime(2024, 6, 4, 2, 0, tzinfo=UTC)


def test_a_definition_without_the_new_keys_keeps_its_bytes(tmp_path: Path) -> None:
    """National scope is stored unset and no key adds a field: an old definition's
    SHA-256, bound into every signed results blob, does not change."""
    text = replaced(
        FEDERAL_YAML, "    name: Presidencia\n", "    name: Presidencia\n    scope: national\n"
    )
    assert load_definition(write(tmp_path, text)).pb == federal_pb()


def test_close_time_may_be_quoted_or_in_utc(tmp_path: Path) -> None:
    for value in ('"2024-06-04T02:00:00Z"', "2024-06-04T02:00:00+00:00"):
        text = replaced(FEDERAL_YAML, "ballots:", f"close_time: {value}\nballots:")
        index = load_definition(write(tmp_path, text))
        assert index.close_time == datetime(2024, 6, 4, 2, 0, tzinfo=UTC)


# -- errors ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    text: str
    field: str | None
    line_needle: str


def case(base: str, old: str, new: str, field: str, needle: str | None = None) -> Case:
    return Case(replaced(base, old, new), field, needle or new.strip().splitlines()[0])


ERRORS: dict[str, Case] = {
    "candidate_unknown_coalition": case(
        FEDERAL_YAML,
        "{id: d2, name: D2, coalition: SHH}",
        "{id: d2, name: D2, coalition: JHH}",
        "contests[2].races[0].candidates[1].coalition",
    ),
    "candidate_two_nominations": case(
        FEDERAL_YAML,
        "{id: d3, name: D3, party: MC}",
        "{id: d3, name: D3, party: MC, coalition: FCM}",
        "contests[2].races[0].candidates[2]",
    ),
    "candidate_nominated_by_nobody": case(
        FEDERAL_YAML,
        "{id: d3, name: D3, party: MC}",
        "{id: d3, name: D3}",
        "contests[2].races[0].candidates[2]",
    ),
    "candidate_unknown_key": case(
        FEDERAL_YAML,
        "{id: d3, name: D3, party: MC}",
        "{id: d3, name: D3, partido: MC}",
        "contests[2].races[0].candidates[2].partido",
    ),
    "independent_option_not_of_the_contest": case(
        FEDERAL_YAML,
        "independent: CI_01}",
        "independent: CI_02}",
        "contests[2].races[0].candidates[3].independent",
    ),
    # From here on the SDK's validation finds the fault and the loader names the key.
    "independent_option_stands_for_a_party": case(
        FEDERAL_YAML,
        "{id: d3, name: D3, party: MC}\n          - {id: d4, name: Indie, independent: CI_01}",
        "{id: d4, name: Indie, independent: MC}",
        "contests[2].races[0].candidates[2].independent",
    ),
    "party_candidate_without_its_own_option": Case(
        replaced(
            FEDERAL_YAML,
            "options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT, CI_01]",
            "options: [PAN, PRI, MORENA, PT, PAN_PRI, MORENA_PT, CI_01]",
        ),
        "contests[2].races[0].candidates[2].party",
        "{id: d3, name: D3, party: MC}",
    ),
    "two_candidates_claim_one_option": case(
        FEDERAL_YAML,
        "{id: j, name: Jorge, party: MC}",
        "{id: j, name: Jorge, party: MC}\n          - {id: k, name: Karla, party: PAN}",
        "contests[0].races[0].candidates[3]",
        "Karla",
    ),
    "option_of_no_candidate": case(
        FEDERAL_YAML,
        "          - {id: d3, name: D3, party: MC}\n",
        "",
        "contests[2].races[0]",
        "- id: DIP-01-01",
    ),
    "race_options_out_of_contest_order": case(
        FEDERAL_YAML,
        "options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT]",
        "options: [PRI, PAN, MORENA, PT, MC, PAN_PRI, MORENA_PT]",
        "contests[2].races[1].options[1]",
        '- unit: "01-02"',
    ),
    "race_option_not_of_the_contest": case(
        FEDERAL_YAML,
        "options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT]",
        "options: [PAN, PRI, MORENA, PT, MC, PAN_PT, MORENA_PT]",
        "contests[2].races[1].options[5]",
        '- unit: "01-02"',
    ),
    "coalition_of_one_party": case(
        FEDERAL_YAML,
        "{id: SHH, name: Sigamos, parties: [MORENA, PT]}",
        "{id: SHH, name: Sigamos, parties: [MORENA]}",
        "coalitions[1].parties",
    ),
    "coalition_unknown_party": case(
        FEDERAL_YAML,
        "{id: SHH, name: Sigamos, parties: [MORENA, PT]}",
        "{id: SHH, name: Sigamos, parties: [MORENA, PVEM]}",
        "coalitions[1].parties",
    ),
    "coalition_id_is_a_party_id": case(
        FEDERAL_YAML,
        "contests:\n",
        "  - {id: MC, name: Movimiento, parties: [PAN, MC]}\ncontests:\n",
        "coalitions[2].id",
    ),
    "duplicate_coalition": case(
        FEDERAL_YAML,
        "contests:\n",
        "  - {id: FCM, name: Again, parties: [PAN, MC]}\ncontests:\n",
        "coalitions[2].id",
    ),
    "independent_option_in_a_race_without_candidates": case(
        FEDERAL_YAML,
        "options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT]",
        "options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT, CI_01]",
        "contests[2].races[1]",
        '- unit: "01-02"',
    ),
    "unknown_scope": case(
        FEDERAL_YAML, "    scope: state\n", "    scope: estado\n", "contests[1].scope", "- id: SEN"
    ),
    "contest_unknown_key": case(
        FEDERAL_YAML,
        "    scope: state\n    options: *ballot\n    race_template:",
        "    scope: state\n    options: *ballot\n    template:",
        "contests[1].template",
        "- id: SEN",
    ),
    "state_contest_without_races": case(
        FEDERAL_YAML,
        FEDERAL_YAML[FEDERAL_YAML.index("    race_template:") : FEDERAL_YAML.index("  - id: DIP")],
        "",
        "contests[1]",
        "- id: SEN",
    ),
    "race_unit_unknown": case(
        FEDERAL_YAML, 'unit: "01-02"\n', 'unit: "01-09"\n', "contests[2].races[1].unit"
    ),
    "race_unit_missing": case(
        FEDERAL_YAML,
        '      - unit: "01-02"\n        options',
        "      - options",
        "contests[2].races[1].unit",
        "      - options: [PAN, PRI, MORENA, PT, MC, PAN_PRI, MORENA_PT]",
    ),
    "two_races_for_one_unit": case(
        FEDERAL_YAML,
        'unit: "01-02"\n',
        'unit: "01-01"  # again\n',
        "contests[2].races[1].unit",
        "# again",
    ),
    "national_race_with_a_unit": case(
        FEDERAL_YAML,
        "      - candidates:\n          - {id: x",
        '      - unit: "01"\n        candidates:\n          - {id: x',
        "contests[0].races[0].unit",
        '      - unit: "01"',
    ),
    "duplicate_race_id": case(
        FEDERAL_YAML,
        '      - unit: "01-02"\n',
        '      - unit: "01-02"\n        id: DIP-01-01\n',
        "contests[2].races[1].id",
        '      - unit: "01-02"',
    ),
    "race_id_with_a_space": case(
        FEDERAL_YAML,
        "id: DIP-01-01\n",
        "id: DIP 01-01\n",
        "contests[2].races[0].id",
        "- id: DIP 01",
    ),
    "template_unknown_placeholder": case(
        TEMPLATE_YAML,
        'id: "DIP-{unit}"',
        'id: "DIP-{district}"',
        "contests[2].race_template.id",
        'id: "DIP-{district}"',
    ),
    "names_an_unknown_candidate": case(
        TEMPLATE_YAML,
        "names: {FCM: Ana Pérez,",
        "names: {FXM: Ana Pérez,",
        "contests[2].races[0].names.FXM",
        '- unit: "02-01"',
    ),
    "template_candidate_unknown_coalition": case(
        TEMPLATE_YAML,
        "        - {id: FCM, coalition: FCM}\n        - {id: SHH",
        "        - {id: FCM, coalition: FMC}\n        - {id: SHH",
        "contests[2].race_template.candidates[0].coalition",
        "{id: FCM, coalition: FMC}",
    ),
    "ballots_unknown_type": case(
        FEDERAL_YAML,
        "  ESPECIAL: [PRES, SEN]",
        "  SPECIAL: [PRES, SEN]",
        "ballots.SPECIAL",
        "SPECIAL: [",
    ),
    "ballots_unknown_contest": case(
        FEDERAL_YAML,
        "  ESPECIAL: [PRES, SEN]",
        "  ESPECIAL: [PRES, GOV]",
        "ballots.ESPECIAL",
        "SPECIAL: [",
    ),
    "ballots_contest_twice": case(
        FEDERAL_YAML,
        "  ESPECIAL: [PRES, SEN]",
        "  ESPECIAL: [PRES, PRES]",
        "ballots.ESPECIAL",
        "SPECIAL: [",
    ),
    "test_not_a_boolean": case(
        FEDERAL_YAML, "ballots:", 'test: "yes"\nballots:', "test", "format:"
    ),
    "close_time_without_offset": case(
        FEDERAL_YAML,
        "ballots:",
        "close_time: 2024-06-03T20:00:00\nballots:",
        "close_time",
        "format:",
    ),
    "close_time_not_a_time": case(
        FEDERAL_YAML, "ballots:", "close_time: tomorrow\nballots:", "close_time", "format:"
    ),
}


@pytest.mark.parametrize("case", ERRORS.values(), ids=list(ERRORS))
def test_race_error_names_file_line_and_key(tmp_path: Path, case: Case) -> None:
    with pytest.raises(DefinitionError) as info:
        load_definition(write(tmp_path, case.text))
    error = info.value
    assert Path(error.file).name == "election.yaml"
    assert error.field == case.field
    assert error.line == line_of(case.text, case.line_needle)


def test_an_error_of_a_template_candidate_names_the_race(tmp_path: Path) -> None:
    text = replaced(
        TEMPLATE_YAML,
        "        - {id: FCM, coalition: FCM}\n        - {id: SHH",
        "        - {id: FCM, party: PRD}\n        - {id: SHH",
    )
    text = replaced(
        text,
        "  - {id: MC, name: MC, abbreviation: MC}\n",
        "  - {id: MC, name: MC}\n  - {id: PRD}\n",
    )
    with pytest.raises(DefinitionError) as info:
        load_definition(write(tmp_path, text))
    # A template's candidate is every district's: the message says which race.
    assert info.value.field == "contests[2].race_template.candidates[0].party"
    assert "DIP-01-01" in str(info.value)


# -- the documented examples -----------------------------------------------------------

DOC = REPO_ROOT / "docs" / "election-format.md"
RACES_HEADING = "### Races, candidates and coalitions"


def _blocks(heading: str, language: str) -> list[str]:
    """The fenced blocks of ``language`` under ``heading`` (up to the next heading)."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    after = re.search(r"\n#{2,3} ", text[start + 1 :])
    body = text[start : start + 1 + after.start() if after else len(text)]
    return re.findall(rf"```{language}\n(.*?)```", body, re.DOTALL)


def test_documented_federal_example_loads(tmp_path: Path) -> None:
    yamls = _blocks(RACES_HEADING, "yaml")
    csvs = _blocks(RACES_HEADING, "csv")
    assert yamls
    assert csvs
    (tmp_path / "casillas.csv").write_text(csvs[0], encoding="utf-8")
    for text in yamls:
        path = tmp_path / "election.yaml"
        path.write_text(text, encoding="utf-8")
        index = load_definition(path)
        assert index.races
    dip = index.contest("DIP")
    assert len(dip.races) == len(index.district_ids)
    assert index.receives(election_pb2.CASILLA_TYPE_ESPECIAL) == {"PRES", "SEN", "DIP"}
    # What the text under the example says of district 01-02.
    ballot = ("PAN", "PRI", "PRD", "MORENA", "MC", "PAN_PRD", "CI_01-02")
    assert index.race("DIP-01-02").option_ids == ballot
    assert index.race("SEN-02").name == "Senaduría, Baja California"
    assert index.is_test
    assert index.close_time == datetime(2024, 6, 4, 2, 0, tzinfo=UTC)
