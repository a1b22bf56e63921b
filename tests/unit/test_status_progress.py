"""Capture progress per state read from a bundle (veritally.metrics.progress): the
figures of the newest cut by state name, and a clear reason when the bundle cannot give
them (no cut yet, a file too large or malformed, a pointer leading outside the bundle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veritally.metrics import progress
from veritally.metrics.progress import ProgressUnavailableError, read_progress
from veritally_client.protocol.pb import election_pb2, log_pb2, results_pb2


def _bundle(tmp_path: Path, *, definition: str = "election/definition.binpb") -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "cuts").mkdir(parents=True)
    (bundle / "election").mkdir()
    d = election_pb2.ElectionDefinition(id="e")
    d.states.add(id="01", name="Aguascalientes")
    d.states.add(id="02", name="Baja California")
    (bundle / "election/definition.binpb").write_bytes(d.SerializeToString())
    r = results_pb2.Results(election_id="e")
    unit = r.units.add(level=results_pb2.LEVEL_STATE, unit_id="01")
    c = unit.contests.add(contest_id="PRES")
    c.completeness.actas_expected = 3
    c.completeness.actas_captured = 2
    c.completeness.actas_counted = 1
    c.completeness.captured_percent_e4 = 666_666
    r.units.add(level=results_pb2.LEVEL_NATIONAL).contests.add(contest_id="PRES")
    cut = log_pb2.SignedCut(results=r.SerializeToString())
    (bundle / "cuts/7.cut").write_bytes(cut.SerializeToString())
    pointer = {"cut_number": 7, "election_definition": definition}
    (bundle / "latest").write_text(json.dumps(pointer))
    return bundle


def test_progress_names_every_state_with_its_contests_figures(tmp_path: Path) -> None:
    cut, states = read_progress(_bundle(tmp_path))
    assert cut == 7
    assert [(s.id, s.name) for s in states] == [("01", "Aguascalientes"), ("02", "Baja California")]
    pres = states[0].contests["PRES"]
    assert (pres.expected, pres.captured, pres.counted, pres.captured_percent) == (3, 2, 1, 66.6666)
    assert states[1].contests == {}  # no acta of that state yet


def test_no_cut_yet_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ProgressUnavailableError, match="cannot read latest"):
        read_progress(tmp_path / "bundle")


def test_pointer_leading_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProgressUnavailableError, match="outside the bundle"):
        read_progress(_bundle(tmp_path, definition="../../etc/passwd"))


def test_oversized_cut_file_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle(tmp_path)
    monkeypatch.setattr(progress, "MAX_CUT_BYTES", 8)
    with pytest.raises(ProgressUnavailableError, match="larger than 8 bytes"):
        read_progress(bundle)


def test_malformed_cut_file_is_a_reason(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    (bundle / "cuts/7.cut").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ProgressUnavailableError, match="does not parse"):
        read_progress(bundle)
