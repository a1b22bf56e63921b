"""The services' logs under ``veritally up``: one JSON object per line, and one line per
capture call with the identity Envoy authenticated, the method, the status and its time.
Read from the ingest process's own log file after a real import through the edge."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir

pytestmark = [pytest.mark.e2e]

VERITALLY = [sys.executable, "-m", "veritally.cli"]
CENTRE = "cc-01"
BATCH = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("request-log"))
    Bootstrap(casillas=40, seed=13).ensure(state)
    with Stack(
        state, base_port=None, drain_seconds=0.5, interval_s=0.5, single_capture=True
    ) as running:
        yield running


def _lines(stack: Stack, service: str) -> list[dict[str, object]]:
    text = stack.log_path(service).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_capture_call_is_one_json_line_with_the_authenticated_identity(
    stack: Stack,
) -> None:
    tls = stack.tls(f"{CENTRE}/op-1")
    done = subprocess.run(
        [
            *(*VERITALLY, "import", str(stack.state.actas_csv)),
            *("--election", str(stack.state.election_yaml)),
            *("--target", stack.endpoints.edge, "--centre", CENTRE),
            *("--batch", str(BATCH), "--quiet"),
            *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answered = json.loads(done.stdout)["answered"]
    lines = _lines(stack, "ingest")  # every line of the file parses as JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    calls = [line for line in lines if line.get("logger") == "veritally.requests"]
    submits = [c for c in calls if str(c["method"]).endswith("/SubmitActas")]
    # One line per stream of at most BATCH actas, each with the operator's identity as
    # Envoy authenticated it (its certificate), the status and the time taken.
    assert len(submits) >= -(-answered // BATCH)
    assert {c["identity"] for c in submits} == {
        f"spiffe://{stack.pki.trust_domain}/capture/{CENTRE}/op-1"
    }
    assert {c["code"] for c in submits} == {"OK"}
    assert all(isinstance(c["ms"], float | int) and c["ms"] >= 0 for c in submits)
    assert {c["level"] for c in submits} == {"INFO"}
