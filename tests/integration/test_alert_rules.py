"""The alerting rules of the night, as ``veritally up`` renders them, checked with
Debian's ``promtool test rules`` against tests/prometheus/rules_test.yml: every alert in a
case where it fires and in one where it does not, with its labels and its rendered
summary; every alert has its section in docs/operations.md's runbook."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from veritally.metrics.prometheus import (
    RULES_NAME,
    AlertThresholds,
    render_rules,
    render_scrape_config,
    rules,
    scrape_targets,
)

RULES_TEST = REPO_ROOT / "tests" / "prometheus" / "rules_test.yml"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
RUNBOOK_HEADING = "## Election night runbook"
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _alerts() -> list[str]:
    return [r["alert"] for g in rules()["groups"] for r in g["rules"]]


def _promtool(directory: Path) -> subprocess.CompletedProcess[str]:
    (directory / RULES_NAME).write_text(render_rules())
    shutil.copy(RULES_TEST, directory / RULES_TEST.name)
    return subprocess.run(
        ["promtool", "test", "rules", RULES_TEST.name],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_checks_the_rendered_rules(tmp_path: Path) -> None:
    tested = _promtool(tmp_path)
    checked = subprocess.run(
        ["promtool", "check", "rules", RULES_NAME],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_fails_a_rule_that_no_longer_fires_as_tested(tmp_path: Path) -> None:
    """The test file bites: a cut-age threshold changed under it fails the run."""
    (tmp_path / RULES_NAME).write_text(render_rules(AlertThresholds(cut_age_intervals=500)))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    tested = subprocess.run(
        ["promtool", "test", "rules", RULES_TEST.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode != 0
    assert "VeritallyCutStale" in tested.stdout + tested.stderr


def _labels(series: str) -> set[tuple[str, str]]:
    return set(_LABEL.findall(series))


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    """Firing: a check expects it. Not firing: a check expects nothing, or the case
    holds a series that no expected alert's labels match (promtool compares the exact set
    of alerts, so that series' alert must not fire)."""
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        series = [_labels(s["series"]) for s in case["input_series"]]
        for check in case["alert_rule_test"]:
            expected = [
                {(k, str(v)) for k, v in a["exp_labels"].items() if k != "severity"}
                for a in check["exp_alerts"]
            ]
            if expected:
                fires.add(check["alertname"])
            if not expected or any(not any(e <= s for e in expected) for s in series):
                quiet.add(check["alertname"])
    alerts = set(_alerts())
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_every_alert_has_its_section_in_the_runbook() -> None:
    text = OPERATIONS.read_text()
    runbook = text[text.index(RUNBOOK_HEADING) :]
    runbook = runbook[: runbook.find("\n## ", len(RUNBOOK_HEADING))]
    headings = {line[4:].strip() for line in runbook.splitlines() if line.startswith("### ")}
    assert set(_alerts()) <= headings
    for rule in (r for g in rules()["groups"] for r in g["rules"]):
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"


def test_scrape_config_names_every_job_and_reads_back(tmp_path: Path) -> None:
    text = render_scrape_config(
        services={
            "ingest": "127.0.0.1:1",
            "aggregation": "127.0.0.1:2",
            "publication": "127.0.0.1:3",
        },
        stack="127.0.0.1:4",
        envoy_admin="127.0.0.1:5",
    )
    assert scrape_targets(text) == {
        "ingest": "127.0.0.1:1",
        "aggregation": "127.0.0.1:2",
        "publication": "127.0.0.1:3",
        "stack": "127.0.0.1:4",
        "envoy": "127.0.0.1:5",
    }
    (tmp_path / "prometheus.yml").write_text(text)
    (tmp_path / RULES_NAME).write_text(render_rules())
    checked = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
