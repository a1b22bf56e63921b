"""``veritally import`` through a real Envoy whose capture budget is far below the
import's pace: Envoy answers RESOURCE_EXHAUSTED, and the import backs off, sends again and
completes with every acta accepted (the capture client, ``veritally.capture``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from veritally.election import load_actas, load_election
from veritally.mesh.envoy import Limits, TokenBucket
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir

pytestmark = [pytest.mark.e2e]

VERITALLY = [sys.executable, "-m", "veritally.cli"]
CASILLAS = 60  # ~180 actas, ~45 of them assigned to cc-01
CENTRE = "cc-01"
BATCH = 5  # actas per stream: ~9 streams for cc-01's share
# Two streams at once, then one a second: the import's two streams in flight meet the
# limit at once, and every later stream waits for its token.
CAPTURE_BUCKET = TokenBucket(burst=2, per_second=1)
IMPORT_TIMEOUT_S = 120.0


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


def test_import_rides_out_envoys_rate_limit_with_every_acta_accepted(stack: Stack) -> None:
    election = load_election(stack.state.election_yaml)
    share = [
        a
        for a in load_actas(election, stack.state.actas_csv)
        if a.provenance.capture_centre_id == CENTRE
    ]
    assert len(share) > 4 * BATCH  # enough streams to exhaust the bucket
    tls = stack.tls(f"{CENTRE}/op-1")
    result = subprocess.run(
        [
            *(*VERITALLY, "import", str(stack.state.actas_csv)),
            *("--election", str(stack.state.election_yaml)),
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
    assert summary["status"] == {"ACCEPTED": len(share)}
    # Envoy did refuse streams, and the import sent them again.
    assert summary["retries"].get("RESOURCE_EXHAUSTED", 0) > 0
    assert "batches retried after RESOURCE_EXHAUSTED" in result.stderr
