"""The NIST SP 1500-100 Rev. 2 JSON export of a verified cut, validated against NIST's
published JSON schema (tests/vectors/nist-1500-100, with its provenance)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships no type information
import pytest

from tests.unit.export_fake import night, verified_cut
from veritally_client._export_nist import FORMAT_NAME, to_nist, write_nist

SCHEMA_PATH = (
    Path(__file__).resolve().parents[1]
    / "vectors"
    / "nist-1500-100"
    / "NIST_V2_election_results_reporting.json"
)
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker())


def _report(tmp_path: Path, *, test: bool = False, final: bool = False) -> dict[str, Any]:
    pub = night(test=test, final=final)
    cut = verified_cut(pub, tmp_path)
    out = io.StringIO()
    write_nist(cut, out, election=pub.election)
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def _errors(doc: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_schema_is_the_copy_its_provenance_names() -> None:
    readme = (SCHEMA_PATH.parents[1] / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()
    assert f"{digest}  nist-1500-100/{SCHEMA_PATH.name}" in readme


def test_schema_is_nists_draft_4_election_report() -> None:
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["$ref"] == "#/definitions/ElectionResults.ElectionReport"


@pytest.mark.parametrize(("test", "final"), [(False, False), (True, False), (False, True)])
def test_report_validates_against_nists_schema(tmp_path: Path, test: bool, final: bool) -> None:
    assert _errors(_report(tmp_path, test=test, final=final)) == []


def test_schema_catches_a_report_without_its_issuer(tmp_path: Path) -> None:
    doc = _report(tmp_path)
    del doc["Issuer"]
    doc["Election"][0]["Contest"][0]["VotesAllowed"] = "one"
    assert len(_errors(doc)) >= 2


def test_report_carries_the_cut_and_marks_a_rehearsal(tmp_path: Path) -> None:
    pub = night(test=True)
    cut = verified_cut(pub, tmp_path)
    doc = to_nist(cut, election=pub.election)
    ids = {e["OtherType"]: e["Value"] for e in doc["ExternalIdentifier"]}
    assert ids["veritally-cut-number"] == "2"
    assert ids["veritally-results-sha256"] == cut.cut_record.results_sha256.hex()
    assert (doc["IsTest"], doc["TestType"]) == (True, "rehearsal")
    assert doc["Status"] == "unofficial-partial"
    assert doc["GeneratedDate"] == "2026-06-02T20:02:00Z"
    assert doc["VendorApplicationId"] == FORMAT_NAME
    assert doc["Notes"] == cut.note.decode()
    real = night()
    doc = to_nist(verified_cut(real, tmp_path / "real"), election=real.election)
    assert doc["IsTest"] is False
    assert "TestType" not in doc


def test_final_cut_is_unofficial_complete(tmp_path: Path) -> None:
    doc = _report(tmp_path, final=True)
    assert doc["Status"] == "unofficial-complete"
    statuses = {s["Status"] for c in doc["Election"][0]["Contest"] for s in c["CountStatus"]}
    assert statuses == {"completed"}


def test_every_reference_names_an_object_of_the_report(tmp_path: Path) -> None:
    doc = _report(tmp_path)
    ids: set[str] = set()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "@id":
                    assert value not in ids, f"duplicate @id {value}"
                    ids.add(value)
                elif key.endswith("Id") and key != "VendorApplicationId":
                    refs.append(value)
                elif key.endswith("Ids"):
                    refs.extend(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    assert refs
    assert set(refs) <= ids


def test_vote_counts_are_the_signed_totals_of_every_unit_of_a_race(tmp_path: Path) -> None:
    pub = night()
    cut = verified_cut(pub, tmp_path)
    doc = to_nist(cut, election=pub.election)
    contests = {c["@id"]: c for c in doc["Election"][0]["Contest"]}
    assert len(contests) == len(pub.election.races) == 5
    checked = 0
    for unit in cut.results.units:
        gpu = {1: "gpu-nation", 2: f"gpu-state-{unit.unit_id}", 3: f"gpu-district-{unit.unit_id}"}
        for totals in unit.contests:
            if not totals.race_id:
                continue  # a unit holding several races: their sum is not a contest
            contest = contests[f"con-{totals.race_id}"]
            here = gpu[unit.level]
            counts = {
                s["@id"]: next(v["Count"] for v in s["VoteCounts"] if v["GpUnitId"] == here)
                for s in contest["ContestSelection"]
            }
            nulls = next(o["Overvotes"] for o in contest["OtherCounts"] if o["GpUnitId"] == here)
            assert sum(counts.values()) + nulls == totals.total_votes
            assert counts[f"sel-{totals.race_id}-unregistered"] == totals.unregistered_votes
            for candidate in totals.candidates:
                cid = f"can-{totals.race_id}-{candidate.candidate_id}"
                mine = [
                    counts[s["@id"]]
                    for s in contest["ContestSelection"]
                    if s.get("CandidateIds") == [cid]
                ]
                assert sum(mine) == candidate.votes
            checked += 1
    assert checked > 6
    pres = contests["con-PRES"]
    combo = next(s for s in pres["ContestSelection"] if s["@id"] == "sel-PRES-PAN_PRI")
    assert combo["EndorsementPartyIds"] == ["par-PAN", "par-PRI"]
    assert combo["CandidateIds"] == ["can-PRES-x"]
    coalition = next(p for p in doc["Party"] if p["@id"] == "coa-FCM")
    assert coalition["ContestIds"] == ["con-PRES", "con-SEN-01", "con-DIP-01-01"]
    indie = next(c for c in doc["Election"][0]["Candidate"] if c["@id"] == "can-DIP-01-01-d4")
    assert "PartyId" not in indie


def test_two_clients_write_the_same_report_bytes(tmp_path: Path) -> None:
    pub = night(test=True)
    outputs = []
    for name in ("a", "b"):
        out = io.StringIO()
        write_nist(verified_cut(pub, tmp_path / name), out, election=pub.election)
        outputs.append(out.getvalue().encode())
    assert outputs[0] == outputs[1]
