"""``veritally demo`` (what ``make demo`` runs) end to end, on a small election.

It runs as a subprocess, exactly as from a fresh clone: state created from nothing, the
stack started behind a real Envoy, every acta captured twice through the edge, a media
client verifying every cut, a full recount, the verified national result printed, the
stack stopped, exit status 0. Run twice on one state directory, the second run must be
a clean election night again with the same identities and trust root.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from veritally.cli.demo import EXIT_VERIFICATION_FAILED
from veritally.election import load_actas, load_election

pytestmark = [pytest.mark.e2e]

CASILLAS = 300
# The demo's own bound on each of its waits is well under this (seconds).
DEMO_TIMEOUT_S = 240.0


def _run_demo(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "veritally.cli",
            "demo",
            "--state",
            str(state),
            "--casillas",
            str(CASILLAS),
            "--seed",
            "11",
            "--base-port",
            "0",  # free ports: tests may run next to a `veritally up`
            "--interval",
            "0.5",
            "--no-live",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )


def _demo(state: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = _run_demo(state)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary: dict[str, Any] = json.loads((state / "demo-summary.json").read_text())
    return result, summary


def _actas_in_file(state: Path) -> int:
    """Actas of the file, counted independently of every service."""
    files = load_election(state / "election" / "election.yaml")
    return sum(1 for _ in load_actas(files, state / "election" / "actas.csv"))


def test_demo_from_nothing_ends_with_a_verified_national_result_and_reruns_cleanly(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first, summary = _demo(state)

    assert summary["verified"] is True
    assert summary["double_capture"] is True
    actas = _actas_in_file(state)
    # Every acta of the night was sent twice through the edge and logged once...
    assert summary["actas_sent"] == actas
    assert summary["captures_answered"] == 2 * actas
    assert summary["actas_logged"] == actas
    # ...and the last verified, recounted cut covers every one of them.
    assert summary["acta_records"] == actas
    assert summary["cuts_verified_live"] >= 1
    # The verified national result is what was printed.
    national = summary["national"]
    assert national["total_votes"] > 0
    assert f"{national['total_votes']:,}" in first.stdout
    for votes in national["options"].values():
        assert f"{votes:,}" in first.stdout

    ca = (state / "pki" / "ca" / "ca.pem").read_bytes()
    trust_root = (state / "trust-root" / "trust-root-v1.binpb").read_bytes()
    key = (state / "keys" / "publisher.key.pub").read_bytes()

    _, again = _demo(state)
    # A fresh night (stores wiped, the same election replayed) with the same identities.
    assert again["outcomes"]["ACCEPTED"] == actas  # nothing was left from the first night
    assert again["actas_logged"] == actas
    assert again["national"] == national
    assert (state / "pki" / "ca" / "ca.pem").read_bytes() == ca
    assert (state / "trust-root" / "trust-root-v1.binpb").read_bytes() == trust_root
    assert (state / "keys" / "publisher.key.pub").read_bytes() == key


def _veritally(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "veritally.cli", *args],
        capture_output=True,
        timeout=DEMO_TIMEOUT_S,
        check=True,
    )


def test_demo_exits_non_zero_when_the_media_client_cannot_verify_the_cuts(
    tmp_path: Path,
) -> None:
    # The outlet pinned a trust root of another publisher key (same origin): every cut
    # the stack signs is by a key it does not trust.
    other = tmp_path / "other"
    other.mkdir()
    origin = "veritally.example/mx-synthetic-federal"
    _veritally("keys", "generate", "--name", origin, "--out", str(other / "k.key"))
    _veritally(
        "trust-root", "create", "--key", str(other / "k.key"), "--origin", origin,
        "--dir", str(other), "--expires", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    state = tmp_path / "state"
    result = _run_demo(state, "--pin", str(other / "trust-root-v1.binpb"))
    assert result.returncode == EXIT_VERIFICATION_FAILED, result.stdout[-4000:] + result.stderr
    assert not (state / "demo-summary.json").exists()


def test_demo_with_three_witnesses_verifies_every_cut_by_their_quorum_and_reruns_cleanly(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = _run_demo(state, "--witnesses", "3")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    summary = json.loads((state / "demo-summary.json").read_text())
    assert summary["verified"] is True
    assert summary["acta_records"] == _actas_in_file(state)
    # The media client pinned version 2, which requires 2 of the 3 witnesses.
    assert (state / "trust-root" / "trust-root-v2.binpb").exists()
    records = list((state / "witnesses").glob("witness-*/logs/*.json"))
    assert len(records) == 3
    # A second night on the same state: a fresh log under the same key, which the
    # witnesses' records of the first night would refuse as a fork, so they are wiped.
    again = _run_demo(state)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert json.loads((state / "demo-summary.json").read_text())["national"] == summary["national"]
    assert not (state / "trust-root" / "trust-root-v3.binpb").exists()
