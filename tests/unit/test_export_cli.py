"""``veritally-client export --format csv|json|prep|nist``: the command a newsroom runs,
over a real client verifying the in-memory publisher's signed cuts, and every export
command shown in docs/sdk.md."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import tempfile
from pathlib import Path

import pytest

from tests.unit.export_fake import FederalPublisher, night
from veritally.election.generate import generate
from veritally.election.loader import load_election
from veritally.state import DEFAULT_SEED
from veritally_client import Client, ClientConfig
from veritally_client import _cli as cli
from veritally_client._cli import EXIT_OK, EXIT_UNKNOWN_ID, EXIT_USAGE, EXIT_VERIFICATION, main
from veritally_client._export import OPTION_KINDS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def _serve(
    publisher: FederalPublisher, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> FederalPublisher:
    """Make the command's client talk to ``publisher`` instead of a socket."""

    def client(args: argparse.Namespace) -> Client:
        config = ClientConfig(max_checkpoint_age=300.0, allow_test=args.allow_test)
        return Client.from_transport(
            publisher,
            trust_root=publisher.trust_root(),
            state_dir=tmp_path / "state",
            config=config,
            clock=lambda: publisher.now,
        )

    monkeypatch.setattr(cli, "_client", client)
    return publisher


@pytest.fixture
def pub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FederalPublisher:
    """A rehearsal night."""
    return _serve(night(test=True), monkeypatch, tmp_path)


def test_rehearsal_export_is_refused_without_allow_test(
    pub: FederalPublisher, tmp_path: Path
) -> None:
    assert main(["export", "--output", str(tmp_path / "r.csv")]) == EXIT_VERIFICATION
    assert not (tmp_path / "r.csv").exists()


def test_csv_export_has_every_row_kind_with_names_and_says_rehearsal(
    pub: FederalPublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.csv"
    assert main(["--allow-test", "export", "--format", "csv", "--output", str(out)]) == EXIT_OK
    assert "REHEARSAL" in capsys.readouterr().err
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert {r["option_kind"] for r in rows} == set(OPTION_KINDS)
    assert {r["test"] for r in rows} == {"true"}
    assert "Xóchitl" in {r["option_name"] for r in rows}


def test_stdout_gets_the_same_utf8_bytes_as_the_file(
    pub: FederalPublisher, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    out = tmp_path / "results.json"
    assert main(["--allow-test", "export", "--format", "json", "--output", str(out)]) == EXIT_OK
    capsysbinary.readouterr()
    assert main(["--allow-test", "export", "--format", "json"]) == EXIT_OK
    assert capsysbinary.readouterr().out == out.read_bytes()


def test_nist_export_is_an_election_report_of_a_rehearsal(
    pub: FederalPublisher, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--allow-test", "export", "--format", "nist"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["@type"] == "ElectionResults.ElectionReport"
    assert (doc["IsTest"], doc["TestType"]) == (True, "rehearsal")


def test_prep_export_writes_a_file_per_contest_from_the_verified_log(
    pub: FederalPublisher, tmp_path: Path
) -> None:
    out = tmp_path / "prep"
    assert main(["--allow-test", "export", "--format", "prep", "--output", str(out)]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["DIP.csv", "LEEME.txt", "PRES.csv", "SEN.csv"]
    lines = (out / "PRES.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("FECHA_HORA_CORTE,")
    assert ",SIMULACRO,SI," in lines[0]
    assert len(lines) == 4 + 7  # 6 catalogue actas of PRES and one outside the catalogue


def test_several_formats_of_one_cut_are_written_together_into_a_directory(
    pub: FederalPublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newsroom exporting csv, json and PREP's files one command at a time could get
    three different cuts; one command gives one cut in every format."""
    out = tmp_path / "cut"
    argv = ["--allow-test", "export", "--format", "csv,json,nist,prep", "--output", str(out)]
    assert main(argv) == EXIT_OK
    err = capsys.readouterr().err
    assert "as csv,json,nist,prep" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["prep", "results.csv", "results.json", "results.nist.json"]
    number = json.loads((out / "results.json").read_text())["cut"]["cut_number"]
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text(encoding="utf-8"))))
    assert {int(r["cut_number"]) for r in rows} == {number}
    nist = json.loads((out / "results.nist.json").read_text())
    cut_ids = [
        e["Value"]
        for e in nist["ExternalIdentifier"]
        if e.get("OtherType") == "veritally-cut-number"
    ]
    assert cut_ids == [str(number)]
    assert sorted(p.name for p in (out / "prep").iterdir()) == [
        "DIP.csv",
        "LEEME.txt",
        "PRES.csv",
        "SEN.csv",
    ]
    # The same bytes as each format exported alone from that cut.
    single = tmp_path / "single.json"
    assert main(["--allow-test", "export", "--format", "json", "--output", str(single)]) == (
        EXIT_OK
    )
    assert single.read_bytes() == (out / "results.json").read_bytes()


def test_several_formats_need_a_directory(pub: FederalPublisher) -> None:
    assert main(["--allow-test", "export", "--format", "csv,json"]) == EXIT_USAGE
    assert main(["--allow-test", "export", "--format", "csv,xml", "--output", "x"]) == EXIT_USAGE


def test_prep_export_of_a_past_cut_covers_its_records_only(
    pub: FederalPublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--allow-test", "export", "--format", "prep", "--cut", "1", "--contest", "PRES"]
    assert main(args) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert ",CORTE,1," in lines[0]
    assert len(lines) == 4 + 4  # 4 of the first cut's 9 actas are of PRES


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "prep"],  # a directory is needed
        ["--format", "csv", "--contest", "PRES"],
        ["--format", "nist", "--all-levels"],
        ["--format", "csv", "--kinds", "option,coalition"],
    ],
)
def test_export_usage_errors(pub: FederalPublisher, args: list[str]) -> None:
    assert main(["--allow-test", "export", *args]) == EXIT_USAGE


def test_export_of_an_unknown_contest_is_an_unknown_id(
    pub: FederalPublisher, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--allow-test", "export", "--format", "prep", "--contest", "GOV"]) == (
        EXIT_UNKNOWN_ID
    )
    assert "no contest 'GOV' (valid contest ids: 'PRES'" in capsys.readouterr().err


def _doc_commands() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("\n## Exports\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    fenced = False
    for line in section.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced and line.startswith("veritally-client "):
            commands.append(line)
    return commands


def test_docs_show_export_commands() -> None:
    formats = {shlex.split(c)[shlex.split(c).index("--format") + 1] for c in _doc_commands()}
    assert formats == {"csv", "json", "prep", "nist", "csv,json,nist,prep"}


@pytest.mark.parametrize("command", _doc_commands())
def test_every_export_command_in_the_docs_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    argv = shlex.split(command)[1:]
    _serve(night(test="--allow-test" in argv), monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == EXIT_OK
    if "--output" in argv:
        target = tmp_path / argv[argv.index("--output") + 1]
        assert target.is_dir() or target.stat().st_size > 0


def test_client_readmes_example_acta_exists_in_the_demos_election() -> None:
    """The README's `proof` example names an acta of the election `make demo` runs: the
    generator numbers each state's sections from 0001 and gives each section its basic
    casilla first, whatever the size, so a small election of the demo's seed shows it."""

    readme = (Path(__file__).resolve().parents[2] / "clients" / "python" / "README.md").read_text()
    (acta,) = re.findall(r"proof (\S+)", readme)
    casilla_id, _, contest_id = acta.rpartition("/")
    with tempfile.TemporaryDirectory() as directory:
        generate(seed=DEFAULT_SEED, casillas=400, out_dir=Path(directory))
        index = load_election(Path(directory) / "election.yaml").index
    assert index.race_of(casilla_id, contest_id) is not None
