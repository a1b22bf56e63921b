"""The flat CSV and JSON exports of a verified cut: names, races, shares, candidate and
party rows, the cut's number and digest, the rehearsal flag, and the same bytes for
everyone who exports the same cut."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.unit.export_fake import federal_election, night, verified_cut
from tests.unit.sdk_fake import small_election
from veritally_client._export import (
    CSV_COLUMNS,
    csv_rows,
    percent_text,
    to_json,
    write_csv,
    write_json,
)
from veritally_client._gen.veritally.v1 import results_pb2

SECTION = results_pb2.LEVEL_SECTION
CASILLA = results_pb2.LEVEL_CASILLA
LEVEL_NAMES = {
    results_pb2.LEVEL_NATIONAL: "national",
    results_pb2.LEVEL_STATE: "state",
    results_pb2.LEVEL_DISTRICT: "district",
}
ALL_KINDS = ("option", "unregistered", "null", "candidate", "party")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _csv(tmp_path: Path, *, test: bool = False, kinds: tuple[str, ...] = ALL_KINDS) -> str:
    pub = night(test=test)
    cut = verified_cut(pub, tmp_path)
    out = io.StringIO()
    write_csv(cut, out, election=pub.election, kinds=kinds)
    return out.getvalue()


def test_rows_name_the_unit_the_race_and_the_option_and_carry_the_cut(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    out = io.StringIO()
    write_csv(cut, out, election=pub.election, kinds=ALL_KINDS)
    rows = _rows(out.getvalue())
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["cut_number"] for r in rows} == {"2"}
    assert {r["results_sha256"] for r in rows} == {cut.cut_record.results_sha256.hex()}
    assert {r["election_id"] for r in rows} == {"mx-mini"}
    pan = next(
        r
        for r in rows
        if r["level"] == "district"
        and r["unit_id"] == "01-01"
        and r["contest_id"] == "DIP"
        and r["option_id"] == "PAN"
    )
    assert pan["state_id"] == "01"
    assert pan["state_name"] == "Uno"
    assert pan["district_name"] == "d1"
    assert pan["unit_name"] == "d1"
    assert pan["contest_name"] == "Diputaciones"
    assert pan["race_id"] == "DIP-01-01"
    assert pan["option_name"] == "PAN"
    assert pan["party_ids"] == "PAN"
    district = cut.unit("district", "01-01")
    dip = next(c for c in district.contests if c.contest_id == "DIP")
    signed = next(o for o in dip.options if o.option_id == "PAN")
    assert pan["votes"] == str(signed.votes)
    assert pan["share_percent"] == percent_text(signed.share_percent_e4)
    combo = next(r for r in rows if r["unit_id"] == "" and r["option_id"] == "MORENA_PT")
    assert combo["party_ids"] == "MORENA;PT"


def test_candidate_rows_add_up_their_options_and_party_rows_are_their_own_option(
    tmp_path: Path,
) -> None:
    rows = _rows(_csv(tmp_path))
    national_pres = [r for r in rows if r["level"] == "national" and r["contest_id"] == "PRES"]
    votes = {(r["option_kind"], r["option_id"]): int(r["votes"]) for r in national_pres}
    # Xóchitl stands for the FCM coalition: PAN, PRI and their combination.
    assert votes[("candidate", "x")] == sum(votes[("option", o)] for o in ("PAN", "PRI", "PAN_PRI"))
    assert votes[("candidate", "j")] == votes[("option", "MC")]
    assert votes[("party", "PAN")] == votes[("option", "PAN")]
    xochitl = next(r for r in national_pres if r["option_id"] == "x")
    assert xochitl["option_name"] == "Xóchitl"
    assert xochitl["nominated_by"] == "coalition:FCM"
    indie = next(r for r in rows if r["option_kind"] == "candidate" and r["option_id"] == "d4")
    assert indie["nominated_by"] == "independent:CI_01"
    assert indie["race_id"] == "DIP-01-01"
    # A unit holding several races of a contest shows their sum: parties, no candidates.
    national_sen = [r for r in rows if r["level"] == "national" and r["contest_id"] == "SEN"]
    assert {r["race_id"] for r in national_sen} == {""}
    assert not [r for r in national_sen if r["option_kind"] == "candidate"]
    assert [r for r in national_sen if r["option_kind"] == "party"]


def test_default_rows_of_a_contest_add_up_to_its_total(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    rows = list(csv_rows(cut, election=pub.election))
    assert {r["option_kind"] for r in rows} == {"option", "unregistered", "null"}
    for unit in cut.results.units:
        for contest in unit.contests:
            mine = [
                r
                for r in rows
                if r["unit_id"] == unit.unit_id
                and r["level"] == LEVEL_NAMES[unit.level]
                and r["contest_id"] == contest.contest_id
            ]
            assert sum(int(r["votes"]) for r in mine) == contest.total_votes


def test_rehearsal_cut_is_marked_in_every_row_and_in_the_json(tmp_path: Path) -> None:
    rows = _rows(_csv(tmp_path / "a", test=True))
    assert {r["test"] for r in rows} == {"true"}
    rows = _rows(_csv(tmp_path / "b", test=False))
    assert {r["test"] for r in rows} == {"false"}
    pub = night(test=True)
    doc = to_json(verified_cut(pub, tmp_path / "c"), election=pub.election)
    assert doc["test"] is True


def test_two_clients_exporting_the_same_cut_write_the_same_bytes(tmp_path: Path) -> None:
    pub = night(test=True)
    outputs = []
    for name in ("newsroom-a", "newsroom-b"):
        cut = verified_cut(pub, tmp_path / name)
        csv_out, json_out = io.StringIO(), io.StringIO()
        write_csv(cut, csv_out, election=pub.election, kinds=ALL_KINDS)
        write_json(cut, json_out, election=pub.election)
        outputs.append((csv_out.getvalue().encode(), json_out.getvalue().encode()))
    assert outputs[0] == outputs[1]


def test_export_refuses_a_definition_that_is_not_the_cuts(tmp_path: Path) -> None:
    cut = verified_cut(night(), tmp_path)
    other = federal_election(test=True)  # another definition: its digest differs
    with pytest.raises(ValueError, match="election"):
        write_csv(cut, io.StringIO(), election=other)
    with pytest.raises(ValueError, match="election"):
        to_json(cut, election=small_election())


def test_unknown_row_kind_is_refused(tmp_path: Path) -> None:
    cut = verified_cut(night(), tmp_path)
    with pytest.raises(ValueError, match="kinds"):
        write_csv(cut, io.StringIO(), kinds=("option", "coalition"))


def test_json_names_races_candidates_and_gives_shares_as_exact_decimals(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    doc = json.loads(json.dumps(to_json(cut, election=pub.election)))
    assert doc["election_name"] == "Mini federal"
    assert doc["cut"]["results_sha256"] == cut.cut_record.results_sha256.hex()
    state = next(u for u in doc["units"] if u["level"] == "state" and u["unit_id"] == "02")
    assert state["name"] == "Dos"
    sen = next(c for c in state["contests"] if c["contest_id"] == "SEN")
    assert sen["race_id"] == "SEN-02"
    assert [c["name"] for c in sen["candidates"]] == ["P", "R", "B2", "M2"]
    signed = next(c for c in cut.unit("state", "02").contests if c.contest_id == "SEN")
    assert sen["candidates"][0]["share_percent"] == percent_text(
        signed.candidates[0].share_percent_e4
    )
    assert sen["candidates"][0]["votes"] == signed.candidates[0].votes
    assert sen["null_share_percent"] == percent_text(signed.null_share_percent_e4)
    assert sen["completeness"]["inconsistent_percent"] == percent_text(
        signed.completeness.inconsistent_percent_e4
    )
    assert sen["completeness"]["not_counted"][0]["reason"].startswith("NOT_COUNTED_REASON_")


def test_section_and_casilla_rows_from_a_recount_name_their_state_and_district(
    tmp_path: Path,
) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    # The publisher's tally has applied exactly the cut's records.
    extra = [
        pub.tally.unit_results(SECTION, "01-0002"),
        pub.tally.unit_results(CASILLA, "02-0001-E1"),
    ]
    rows = list(csv_rows(cut, election=pub.election, extra_units=extra))
    section = next(r for r in rows if r["level"] == "section")
    assert (section["state_id"], section["district_id"], section["district_name"]) == (
        "01",
        "01-02",
        "d2",
    )
    casilla = next(r for r in rows if r["level"] == "casilla")
    assert (casilla["state_name"], casilla["unit_name"]) == ("Dos", "02-0001-E1")
