"""``veritally import`` through a real Envoy whose capture budget is far below the
import's pace: Envoy answers RESOURCE_EXHAUSTED, and the import backs off, sends again and
completes with every acta accepted (the capture client, ``veritally.capture``). The file
also holds rows of expected actas that never arrived (PREP's "sin acta", mapped by
``actas.missing``): the import records them with RecordMissingActa, and the signed
results a media client verifies count them as not counted, each with its reason."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from veritally.election import MissingActa, load_acta_rows, load_election
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import ClientConfig, TransportError, VerifiedCut
from veritally_client.protocol.pb import acta_pb2

pytestmark = [pytest.mark.e2e]

VERITALLY = [sys.executable, "-m", "veritally.cli"]
CASILLAS = 60  # ~180 actas, ~45 of them assigned to cc-01
CENTRE = "cc-01"
BATCH = 5  # actas per stream: ~9 streams for cc-01's share
# Two streams at once, then one a second: the import's two streams in flight meet the
# limit at once, and every later stream waits for its token.
CAPTURE_BUCKET = TokenBucket(burst=2, per_second=1)
IMPORT_TIMEOUT_S = 120.0
# How long the cut holding every record of the import may take to be signed (seconds).
CUT_WAIT_S = 90.0
# One row of cc-01's per contest becomes "sin acta", each with its own reason; the texts
# are those veritally's PREP export writes.
SIN_ACTA = {
    "PRES": ("Sin acta por paquete no entregado", "PACKAGE_NOT_DELIVERED"),
    "SEN": ("Sin acta por casilla no instalada", "CASILLA_NOT_INSTALLED"),
    "DIP": ("Sin acta por paquete entregado sin sobre PREP", "NO_ENVELOPE"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("import-rate-limit"))
    Bootstrap(casillas=CASILLAS, seed=11).ensure(state)
    with Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        single_capture=True,
        limits=Limits(capture=CAPTURE_BUCKET),
    ) as running:
        yield running


def _with_sin_acta_rows(state: StateDir, out: Path) -> Path:
    """The state's election with an ``actas.missing`` mapping, reading a copy of its acta
    file with an OBSERVACIONES column in which one row of CENTRE's per contest is "sin
    acta": the reason written there and '-' in every figure, as PREP writes it."""
    index = load_election(state.election_yaml).index
    figures = {o for c in index.contests for o in c.option_ids} | {"NO_REGISTRADOS", "NULOS"}
    with state.actas_csv.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    column = {name: i for i, name in enumerate(header)}
    pending = dict(SIN_ACTA)
    for row in rows:
        text = ""
        contest = row[column["CONTIENDA"]]
        if row[column["CENTRO_CAPTURA"]] == CENTRE and contest in pending:
            text = pending.pop(contest)[0]
            for name in figures:
                row[column[name]] = "-"
            row[column["SHA"]] = ""
        row.append(text)
    assert not pending, f"test setup: {CENTRE} has no acta of {sorted(pending)}"
    with (out / "actas.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([[*header, "OBSERVACIONES"], *rows])
    doc = yaml.safe_load(state.election_yaml.read_text(encoding="utf-8"))
    doc["casillas"]["file"] = str(state.election_yaml.parent / doc["casillas"]["file"])
    doc["actas"]["missing"] = {
        "column": "OBSERVACIONES",
        "reasons": dict(SIN_ACTA.values()),
    }
    path = out / "election.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    # The same definition as the stack's: only the mapping of the acta file differs.
    assert load_election(path).index.definition_sha256 == index.definition_sha256
    return path


def _centre(row: acta_pb2.Acta | MissingActa) -> str:
    """The capture centre column of an acta row or of a missing acta's row."""
    if isinstance(row, MissingActa):
        return row.capture_centre_id
    return row.provenance.capture_centre_id


def _cut_with(stack: Stack, state_dir: Path, records: int) -> VerifiedCut:
    """The first verified cut whose log holds ``records`` acta records."""
    deadline = time.monotonic() + CUT_WAIT_S
    config = ClientConfig(max_checkpoint_age=300.0)
    with stack.media_client("outlet-01", state_dir=state_dir, config=config) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(TransportError):
                cut = client.latest()
                if cut.acta_records >= records:
                    assert cut.election.election_id  # names fetched (and checked) now
                    return cut
            time.sleep(0.2)
    raise AssertionError(f"no cut with {records} acta records came")


def test_import_rides_out_envoys_rate_limit_and_records_sin_acta_rows_the_cut_shows(
    stack: Stack, tmp_path: Path
) -> None:
    election_yaml = _with_sin_acta_rows(stack.state, tmp_path)
    election = load_election(election_yaml)
    share = [r for r in load_acta_rows(election, tmp_path / "actas.csv") if _centre(r) == CENTRE]
    missing = [r for r in share if isinstance(r, MissingActa)]
    actas = len(share) - len(missing)
    assert len(missing) == len(SIN_ACTA)
    assert actas > 4 * BATCH  # enough streams to exhaust the bucket
    tls = stack.tls(f"{CENTRE}/op-1")
    result = subprocess.run(
        [
            *(*VERITALLY, "import", str(tmp_path / "actas.csv")),
            *("--election", str(election_yaml)),
            *("--target", stack.endpoints.edge, "--centre", CENTRE),
            *("--batch", str(BATCH), "--concurrency", "2", "--quiet"),
            *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)),
        ],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["answered"] == len(share)
    assert summary["status"] == {"ACCEPTED": actas}
    # Every "sin acta" row was recorded missing: logged, never counted.
    assert summary["missing"] == {"status": {"ACCEPTED": len(missing)}, "rejected": {}}
    # Envoy did refuse streams, and the import sent them again.
    assert summary["retries"].get("RESOURCE_EXHAUSTED", 0) > 0
    assert "batches retried after RESOURCE_EXHAUSTED" in result.stderr
    assert "missing acta recorded: ACCEPTED" in result.stderr

    # What a media client reads in the signed, verified results: each missing acta is
    # registered, not captured, and not counted for the reason its row gave.
    cut = _cut_with(stack, tmp_path / "media", len(share))
    assert cut.acta_records == len(share)
    for m in missing:
        reason = acta_pb2.NotCountedReason.Name(m.reason).removeprefix("NOT_COUNTED_REASON_")
        assert reason == SIN_ACTA[m.contest_id][1]
        nation = cut.race(m.contest_id).completeness
        assert dict(nation.not_counted_by_reason).get(reason.lower()) == 1, nation
        assert nation.registered - nation.captured == 1
        if m.contest_id == "DIP":
            # The deputies' race of the casilla's district holds it.
            district = election.index.casilla(m.casilla_id).district_id
            local = cut.race("DIP", district=district).completeness
            assert ("no_envelope", 1) in local.not_counted_by_reason
