"""What ``veritally-client latest`` and ``watch`` print: one race with names, chosen with
``--contest``, ``--state``, ``--district`` and ``--by``, fitting an 80 x 24 terminal, with
final and rehearsal cuts marked; and every command docs/sdk.md shows, run as written.

The CLI runs unchanged against a fake publisher that signs real cuts: only the function
that connects (``_cli._client``) is pointed at it.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import REPO_ROOT
from tests.unit.sdk_fake import FakePublisher
from tests.unit.test_sdk_view import ELECTION, named_federal_pb, night
from veritally_client import Client, ClientConfig, RaceResult
from veritally_client import _cli as cli
from veritally_client._cli import EXIT_OK, EXIT_UNKNOWN_ID, EXIT_USAGE, EXIT_VERIFICATION, main
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, election_pb2

SDK_DOC = REPO_ROOT / "docs" / "sdk.md"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """``run(pub, *argv)`` -> (exit code, stdout, stderr) of the CLI on an 80 x 24 terminal."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")

    def run(pub: FakePublisher, *argv: str) -> tuple[int, str, str]:
        def connect(args: object) -> Client:
            config = ClientConfig(
                max_checkpoint_age=300.0,
                allow_test=getattr(args, "allow_test", False),
            )
            return Client.from_transport(
                pub,
                trust_root=pub.trust_root(),
                state_dir=tmp_path / "state",
                config=config,
                clock=lambda: pub.now,
            )

        monkeypatch.setattr(cli, "_client", connect)
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_fits(text: str, *, columns: int = 80, lines: int = 24) -> None:
    rows = text.rstrip("\n").split("\n")
    assert len(rows) <= lines, f"{len(rows)} lines:\n{text}"
    too_wide = [r for r in rows if len(r) > columns]
    assert not too_wide, too_wide


def many_options_election() -> ElectionIndex:
    """A national contest with 30 parties of long names: more rows than 24 lines hold."""
    pb = election_pb2.ElectionDefinition(id="wide", name="Wide ballot")
    contest = pb.contests.add(id="PRES", name="Presidencia de los Estados Unidos Mexicanos")
    for i in range(30):
        pid = f"P{i:02d}"
        pb.parties.add(
            id=pid,
            name=f"Partido Nacional de la Transformación Democrática Número {i}",
            abbreviation=f"PNTD{i}",
        )
        contest.options.add(id=pid, name=f"Opción {pid}", party_ids=[pid])
    pb.states.add(id="01", name="Estado de México")
    pb.districts.add(id="01-01", state_id="01", name="Distrito Uno")
    pb.sections.add(id="0001", district_id="01-01")
    pb.casillas.add(
        id="0001-B", section_id="0001", type=election_pb2.CASILLA_TYPE_BASICA, nominal_list=40_000
    )
    return ElectionIndex.from_pb(pb)


def wide_night() -> FakePublisher:
    election = many_options_election()
    pub = FakePublisher(election=election)
    acta = acta_pb2.Acta(casilla_id="0001-B", contest_id="PRES", image_sha256=b"\1" * 32)
    for i, oid in enumerate(election.option_ids("PRES")):
        acta.option_votes.add(option_id=oid, votes=1000 + i)
    pub._append_record(
        acta_pb2.ActaRecord(acta_id="0001-B/PRES", revision=1, acta=acta, counted=True)
    )
    pub.make_cut()
    return pub


# -- latest ------------------------------------------------------------------------------


def test_latest_shows_a_district_race_with_candidate_names_and_signed_shares(run: Run) -> None:
    code, out, err = run(night(), "latest", "--contest", "DIP", "--district", "01-01")
    assert code == EXIT_OK
    assert "verified cut 1" in err
    lines = out.splitlines()
    assert lines[1] == "Diputaciones (DIP-01-01) · district 01-01 Benito Juárez"
    table = [line.split() for line in lines if line.split()[:1] in (["D1"], ["D2"], ["Indie"])]
    assert table == [
        ["D1", "PAN-PRI", "160", "38.0952%"],
        ["D2", "MORENA-PT", "170", "40.4761%"],
        ["Indie", "independent", "17", "4.0476%"],
    ]
    assert "counted 1 (50.0000%)" in out
    assert "participation 84.0000%" in out
    assert_fits(out)


def test_latest_chooses_a_state_by_name_and_shows_its_first_contest(run: Run) -> None:
    code, out, _ = run(night(), "latest", "--state", "jalisco")
    assert code == EXIT_OK
    assert "Presidencia (PRES) · state 02 Jalisco · national race" in out
    assert "also held here: SEN (--contest ID)" in out
    code, out, _ = run(night(), "latest", "--contest", "SEN", "--state", "Jalisco")
    assert code == EXIT_OK
    assert re.search(r"^B2 +MORENA-PT +237 +52\.6666%$", out, re.MULTILINE)
    assert_fits(out)


def test_latest_by_parties_shows_abbreviations_and_names(run: Run) -> None:
    code, out, _ = run(night(), "latest", "--contest", "SEN", "--by", "parties")
    assert code == EXIT_OK
    assert "Senado (SEN) · National · sum of 2 races" in out
    assert re.search(r"^PRI +Partido Revolucionario Institucional +70 +15\.5555%$", out, re.M)
    assert_fits(out)


def test_latest_by_candidates_where_races_are_summed_is_a_usage_error(run: Run) -> None:
    code, out, err = run(night(), "latest", "--contest", "DIP", "--by", "candidates")
    assert code == EXIT_USAGE
    assert out == ""
    assert "DIP sums 2 races in the nation" in err


def test_latest_with_an_unknown_state_lists_the_valid_ids(run: Run) -> None:
    code, _, err = run(night(), "latest", "--state", "Jalisko")
    assert code == EXIT_UNKNOWN_ID
    assert "no state 'Jalisko' (valid state ids: '01', '02')" in err
    code, _, err = run(night(), "latest", "--contest", "DIP", "--district", "02-01")
    assert code == EXIT_UNKNOWN_ID
    assert "contest 'DIP' has no race in district '02-01'" in err


def test_latest_marks_a_final_cut(run: Run) -> None:
    code, out, _ = run(night(final=True), "latest")
    assert code == EXIT_OK
    assert out.splitlines()[0].endswith("· verified · FINAL CUT")
    code, out, _ = run(night(final=False), "latest")
    assert "FINAL" not in out


def test_latest_marks_a_rehearsal_cut_and_refuses_it_without_allow_test(run: Run) -> None:
    pb = named_federal_pb()
    pb.test = True
    rehearsal = night(ElectionIndex.from_pb(pb))
    code, out, err = run(rehearsal, "latest")
    assert code == EXIT_VERIFICATION
    assert "RehearsalCutError" in err
    code, out, _ = run(rehearsal, "--allow-test", "latest")
    assert code == EXIT_OK
    assert out.splitlines()[0] == "*** REHEARSAL: TEST DATA, NOT THE ELECTION'S RESULTS ***"
    assert_fits(out)


def test_latest_of_a_long_ballot_fits_80_by_24(run: Run) -> None:
    code, out, _ = run(wide_night(), "latest")
    assert code == EXIT_OK
    assert_fits(out)
    assert "Partido Nacional de la Transforma" in out  # long names cut, not dropped
    assert re.search(r"^PNTD0 +Partido Nacional de la Transf.*… +1,000 +3\.2856%$", out, re.M)
    assert re.search(r"^… 1\d more rows not shown \(--json for all\)$", out, re.MULTILINE)
    assert re.search(r"^total +30,435$", out, re.MULTILINE)
    code, out, _ = run(wide_night(), "latest", "--by", "options")
    assert_fits(out)


def test_latest_follows_a_wider_taller_terminal(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("LINES", "50")
    code, out, _ = run(wide_night(), "latest")
    assert code == EXIT_OK
    assert "not shown" not in out  # all 30 parties fit in 50 lines
    assert_fits(out, columns=100, lines=50)


def test_latest_json_is_still_the_export(run: Run) -> None:
    code, out, _ = run(night(), "latest", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["cut"]["cut_number"] == 1


# -- watch --------------------------------------------------------------------------------


def test_watch_plain_lines_carry_the_chosen_race_with_names(run: Run) -> None:
    pub = night(final=True)
    code, out, _ = run(
        pub, "watch", "--plain", "--max-cuts", "1", "--contest", "DIP", "--district", "01-01"
    )
    assert code == EXIT_OK
    line = json.loads(out.splitlines()[0])
    assert line["cut"]["cut_number"] == 1
    assert line["national"]["level"] == "national"
    race = line["race"]
    assert (race["race_id"], race["unit"]["name"], race["final"], race["test"]) == (
        "DIP-01-01",
        "Benito Juárez",
        True,
        False,
    )
    assert race["candidates"][1] == {
        "id": "d2",
        "name": "D2",
        "nominated_by": "coalition",
        "affiliation": "MORENA-PT",
        "votes": 170,
        "share": "40.4761",
    }
    assert race["completeness"]["participation"] == "84.0000"


def test_watch_with_a_bad_district_fails_before_watching(run: Run) -> None:
    code, out, err = run(night(), "watch", "--plain", "--district", "99-99")
    assert code == EXIT_UNKNOWN_ID
    assert out == ""
    assert "no district '99-99'" in err


def _live_text(pub: FakePublisher, tmp_path: Path, *argv: str, size: tuple[int, int]) -> str:
    args = cli.build_parser().parse_args(["watch", *argv])
    with Client.from_transport(
        pub,
        trust_root=pub.trust_root(),
        state_dir=tmp_path,
        config=ClientConfig(max_checkpoint_age=300.0, allow_test=True),
        clock=lambda: pub.now,
    ) as client:
        screen = cli._screen(client.latest(), args, size)
    console = Console(width=size[0], height=size[1], record=True, file=io.StringIO())
    console.print(cli._live_view(screen))
    return console.export_text()


def test_watch_live_view_fits_80_by_24_and_shows_names(tmp_path: Path) -> None:
    text = _live_text(night(), tmp_path, "--contest", "PRES", size=(80, 24))
    assert_fits(text)
    assert re.search(r"^Claudia +MORENA-PT +209 +47\.5000%$", text, re.MULTILINE)
    assert "Presidencia (PRES) · National" in text
    wide = _live_text(wide_night(), tmp_path / "wide", size=(80, 24))
    assert_fits(wide)
    assert "more rows not shown (--json for all)" in wide


def test_watch_live_view_marks_final_and_rehearsal_cuts(tmp_path: Path) -> None:
    pb = named_federal_pb()
    pb.test = True
    text = _live_text(night(ElectionIndex.from_pb(pb), final=True), tmp_path, size=(80, 24))
    assert_fits(text)
    first, second = text.splitlines()[:2]
    assert first == "*** REHEARSAL: TEST DATA, NOT THE ELECTION'S RESULTS ***"
    assert second.endswith("FINAL CUT")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_watch_on_a_terminal_draws_the_live_table(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    code, _, _ = run(night(), "watch", "--max-cuts", "1", "--contest", "SEN", "--state", "02")
    assert code == EXIT_OK
    drawn = ANSI.sub("", terminal.getvalue())
    assert "Senado (SEN-02) · state 02 Jalisco" in drawn
    assert re.search(r"B2 +MORENA-PT +237 +52\.6666%", drawn)


# -- the commands docs/sdk.md shows ---------------------------------------------------------


def doc_commands() -> list[tuple[list[str], list[str]]]:
    """Each ``$ veritally-client ...`` line of docs/sdk.md's console blocks, with the
    output shown under it (until the next command or the end of the block)."""
    text = SDK_DOC.read_text(encoding="utf-8")
    found: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            if line.startswith("$ "):
                argv = shlex.split(line[2:])
                assert argv[0] == "veritally-client", line
                found.append((argv[1:], []))
            else:
                found[-1][1].append(line)
    return found


def test_docs_show_latest_and_watch_commands() -> None:
    commands = {argv[0] for argv, _ in doc_commands()}
    assert {"latest", "watch"} <= commands


@pytest.mark.parametrize(("argv", "shown"), doc_commands(), ids=lambda v: " ".join(v))
def test_doc_command_prints_what_the_docs_show(
    run: Run, monkeypatch: pytest.MonkeyPatch, argv: list[str], shown: list[str]
) -> None:
    live = argv[0] == "watch" and "--plain" not in argv
    terminal = _Terminal()
    if live:  # as typed at a terminal: the live table
        monkeypatch.setattr(sys, "stdout", terminal)
    code, out, _ = run(night(final="FINAL" in "\n".join(shown)), *argv)
    assert code == EXIT_OK
    if shown:
        assert out.splitlines() == shown
    if live:
        drawn = [line for line in ANSI.sub("", terminal.getvalue()).splitlines() if line]
        assert "Presidencia (PRES) · state 01 Ciudad de México · national race" in drawn
        assert max(len(line) for line in drawn) <= 80
    elif "--plain" in argv:
        assert json.loads(out)["race"]["unit"]["level"] == "district"
    else:
        assert_fits(out)


def test_doc_python_example_prints_what_the_docs_show(tmp_path: Path) -> None:
    text = SDK_DOC.read_text(encoding="utf-8")
    section = text.split("## Results with names", 1)[1]
    code, shown = re.findall(r"```(?:python|text)\n(.*?)```", section, re.DOTALL)[:2]
    pub = night()
    out = io.StringIO()
    with Client.from_transport(
        pub,
        trust_root=pub.trust_root(),
        state_dir=tmp_path,
        config=ClientConfig(max_checkpoint_age=300.0),
        clock=lambda: pub.now,
    ) as client:
        namespace = {"client": client, "print": lambda *a: print(*a, file=out)}
        exec(compile(code, str(SDK_DOC), "exec"), namespace)  # noqa: S102  # the docs' own code
    assert out.getvalue() == shown
    race = namespace["race"]
    assert isinstance(race, RaceResult)
    assert race.unit.name == ELECTION.pb.districts[0].name
