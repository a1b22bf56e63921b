"""``veritally status`` exit statuses as a script sees them: 1 without a scrape
configuration (the stack never ran in that directory), 2 when a job does not answer
(its figures unknown, the others' printed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from veritally.mesh.process import free_port
from veritally.metrics.prometheus import write_prometheus_files

VERITALLY = [sys.executable, "-m", "veritally.cli"]


def _status(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERITALLY, "status", "--state", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_without_a_stack_exits_1_and_says_where_it_looked(tmp_path: Path) -> None:
    done = _status(tmp_path, "--json")
    assert done.returncode == 1
    assert str(tmp_path / "prometheus" / "prometheus.yml") in done.stderr
    assert "veritally up" in done.stderr


def test_status_json_exits_2_when_no_job_answers(tmp_path: Path) -> None:
    dead = {name: f"127.0.0.1:{free_port()}" for name in ("ingest", "aggregation", "publication")}
    write_prometheus_files(
        tmp_path / "prometheus",
        services=dead,
        stack=f"127.0.0.1:{free_port()}",
        envoy_admin=f"127.0.0.1:{free_port()}",
    )
    done = _status(tmp_path, "--json")
    assert done.returncode == 2, done.stderr
    figures = json.loads(done.stdout)
    assert figures["up"] == {
        "ingest": False,
        "aggregation": False,
        "publication": False,
        "stack": False,
    }
    assert figures["log_records"] is None
    assert dead["ingest"] in figures["errors"]["ingest"]
    once = _status(tmp_path, "--once")
    assert once.returncode == 2
    assert "ingest DOWN" in once.stdout
