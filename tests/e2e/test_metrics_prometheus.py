"""The stack's metrics as an operations room sees them: a real Prometheus, run against
the scrape configuration ``veritally up`` writes, scrapes every service, the supervisor
and Envoy; its HTTP API answers the figures of an import (accepted actas equal to what
was imported, rejected ones by reason), Envoy's stats beside them, the alerting rules
loaded with none firing on a healthy night. ``veritally status --json`` answers the same
figures, and its live console shows them in a real terminal (tmux). No metric is
reachable on a listener Envoy exposes."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from veritally.election import load_acta_rows, load_election
from veritally.mesh.process import free_port
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client.protocol.pb import acta_pb2, election_pb2

pytestmark = [pytest.mark.e2e]

VERITALLY = [sys.executable, "-m", "veritally.cli"]
CASILLAS = 40
CENTRE = "cc-01"
OTHER = "cc-02"  # its rows sent with CENTRE's certificate: refused, PERMISSION_DENIED
WAIT_S = 90.0  # bound on every wait for a scrape, a cut or the terminal (seconds)
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
DOC_SECTIONS = ("## Metrics and alerts", "## Election night runbook")
DOC_PROMETHEUS = "127.0.0.1:9090"
DOC_PORTS = {"ingest": 8460, "aggregation": 8461, "publication": 8462, "stack": 8463}


def _doc_commands() -> list[str]:
    """Every command of the sh blocks of the metrics and runbook sections of
    docs/operations.md (``\\`` continues a line; comments dropped)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    found: list[str] = []
    for heading in DOC_SECTIONS:
        section = text[text.index(heading) :]
        section = section[: section.find("\n## ", len(heading))]
        for block in re.finditer(r"```sh\n(.*?)```", section, re.S):
            for line in block.group(1).replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+#\s.*$", "", line).strip()
                if command:
                    found.append(command)
    return found


def _localised(command: str, stack: Stack, prometheus: str = DOC_PROMETHEUS) -> str:
    """A command of the docs against this test's stack: its ports, state directory and
    virtualenv instead of the default layout's."""
    ports = {f"127.0.0.1:{port}": stack.endpoints.metrics[n] for n, port in DOC_PORTS.items()}
    ports["127.0.0.1:8441"] = stack.endpoints.admin
    ports[DOC_PROMETHEUS] = prometheus
    for documented, actual in ports.items():
        command = command.replace(documented, actual)
    command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
    return re.sub(r"(?<![\w/-])state(?=/|\s|$)", str(stack.state.root), command)


def _doc_command(prefix: str, *, without: tuple[str, ...] = ()) -> str:
    for command in _doc_commands():
        if command.startswith(prefix) and not any(w in command for w in without):
            return command
    raise AssertionError(f"docs/operations.md shows no command starting {prefix!r}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("metrics"))
    Bootstrap(casillas=CASILLAS, seed=5).ensure(state)
    with Stack(
        state, base_port=None, drain_seconds=0.5, interval_s=0.5, single_capture=True
    ) as running:
        yield running


def _rows(stack: Stack, centre: str) -> int:
    election = load_election(stack.state.election_yaml)
    return sum(
        1
        for row in load_acta_rows(election, stack.state.actas_csv)
        if isinstance(row, acta_pb2.Acta) and row.provenance.capture_centre_id == centre
    )


def _import(stack: Stack, centre: str) -> None:
    tls = stack.tls(f"{CENTRE}/op-1")
    subprocess.run(
        [
            *(*VERITALLY, "import", str(stack.state.actas_csv)),
            *("--election", str(stack.state.election_yaml)),
            *("--target", stack.endpoints.edge, "--centre", centre, "--quiet"),
            *("--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--tls-ca", str(tls.ca)),
        ],
        check=True,
        capture_output=True,
        timeout=WAIT_S,
    )


@pytest.fixture(scope="module")
def imported(stack: Stack) -> dict[str, int]:
    """CENTRE's actas imported with its certificate, then OTHER's with the same one."""
    _import(stack, CENTRE)
    _import(stack, OTHER)
    return {"accepted": _rows(stack, CENTRE), "refused": _rows(stack, OTHER)}


class Prometheus:
    """A real Prometheus server on a free loopback port, and its HTTP API."""

    def __init__(self, stack: Stack, logs: Path) -> None:
        """Run exactly the command docs/operations.md shows, on a free port."""
        self.address = f"127.0.0.1:{free_port()}"
        command = _localised(_doc_command("prometheus "), stack, self.address)
        self.log = logs / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                shlex.split(command), stdout=subprocess.DEVNULL, stderr=log
            )

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        url = f"http://{self.address}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, None if no series."""
        try:
            result = self.api("query", query=expr)["result"]
        except OSError:
            return None  # not listening yet
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, wanted: float) -> None:
        deadline = time.monotonic() + WAIT_S
        seen = None
        while time.monotonic() < deadline:
            seen = self.value(expr)
            if seen == wanted:
                return
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.5)
        raise AssertionError(f"{expr} = {seen}, expected {wanted}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(stack, tmp_path_factory.mktemp("prometheus-log"))
    try:
        yield server
    finally:
        server.stop()


def test_prometheus_scrapes_every_job_and_counts_the_imported_actas(
    stack: Stack, imported: dict[str, int], prometheus: Prometheus
) -> None:
    for job in ("ingest", "aggregation", "publication", "stack", "envoy"):
        prometheus.wait_for(f'up{{job="{job}"}}', 1)
    prometheus.wait_for('veritally_ingest_actas_total{state="accepted"}', imported["accepted"])
    prometheus.wait_for(
        'veritally_ingest_actas_rejected_total{reason="PERMISSION_DENIED"}', imported["refused"]
    )
    prometheus.wait_for(
        "veritally_ingest_actas_received_total", imported["accepted"] + imported["refused"]
    )
    prometheus.wait_for("veritally_ingest_log_records", imported["accepted"])
    prometheus.wait_for("veritally_aggregation_lag_records", 0)
    # Store latency of both writers of the log: ingest's commits, aggregation's appends.
    for store in ("ingest", "aggregation"):
        assert (prometheus.value(f"veritally_{store}_store_commit_seconds_count") or 0) > 0
    prometheus.wait_for("veritally_publication_acta_records", imported["accepted"])
    prometheus.wait_for("veritally_publication_lag_records", 0)
    # Envoy's stats beside ours: it is live, and it counted the import's streams.
    assert prometheus.value('envoy_server_live{job="envoy"}') == 1
    assert (prometheus.value('sum(envoy_cluster_upstream_rq_total{job="envoy"})') or 0) > 0
    # The supervisor's: the CRL and every role's certificates in the future.
    now = time.time()
    assert (prometheus.value("veritally_crl_expiry_timestamp_seconds") or 0) > now
    roles = prometheus.api("query", query="veritally_certificate_expiry_timestamp_seconds")
    assert {r["metric"]["role"] for r in roles["result"]} >= {
        "ca", "service", "media", "capture", "operator",
    }  # fmt: skip
    # The rules are loaded, and a healthy night fires none of them. A pending alert is
    # not one: on these 2 loaded cores a cut can come a few seconds late during the
    # import, which is what each rule's `for` duration absorbs before it pages.
    groups = prometheus.api("rules")["groups"]
    assert [g["name"] for g in groups] == ["veritally-night"]
    assert len(groups[0]["rules"]) >= 10
    alerts = prometheus.api("alerts")["alerts"]
    assert [a["labels"]["alertname"] for a in alerts if a["state"] == "firing"] == []


def _status_json(stack: Stack) -> dict[str, Any]:
    done = subprocess.run(
        [*VERITALLY, "status", "--state", str(stack.state.root), "--json"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def test_status_json_answers_the_nights_figures(stack: Stack, imported: dict[str, int]) -> None:
    deadline = time.monotonic() + WAIT_S
    figures = _status_json(stack)
    while figures["publication_lag"] != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
        figures = _status_json(stack)
    assert figures["up"] == {
        "ingest": True,
        "aggregation": True,
        "publication": True,
        "stack": True,
    }
    assert figures["captures"]["accepted"] == imported["accepted"]
    assert figures["rejected"] == {"PERMISSION_DENIED": imported["refused"]}
    assert figures["received"] == imported["accepted"] + imported["refused"]
    assert figures["conflicts"] == 0
    assert figures["pending"] == {"awaiting_second_capture": 0, "cross_check": 0}
    assert figures["log_records"] == imported["accepted"]
    assert figures["aggregation_lag"] == 0
    assert figures["publication_lag"] == 0
    assert figures["cut_records"] == imported["accepted"]
    assert figures["last_cut"] > 0
    assert 0 <= figures["last_cut_age_s"] < 30
    assert figures["crl_expiry"] > time.time()
    assert set(figures["certificates_expiry"]) >= {"ca", "service", "media", "capture"}
    # Capture progress per geographic state, from the newest cut's signed results: every
    # state of the definition by name, and the captured actas of all states and
    # contests add up to the actas imported.
    assert figures["states_error"] is None
    assert figures["progress_cut"] >= 1
    definition = election_pb2.ElectionDefinition.FromString(
        stack.state.definition_bytes.read_bytes()
    )
    assert [(s["id"], s["name"]) for s in figures["states"]] == [
        (s.id, s.name) for s in definition.states
    ]
    captured = sum(c["captured"] for s in figures["states"] for c in s["contests"].values())
    assert captured == imported["accepted"]
    for s in figures["states"]:
        for c in s["contests"].values():
            assert c["captured"] <= c["expected"]
            assert c["captured_percent"] == c["captured"] * 1_000_000 // c["expected"] / 10_000


def _pane(session: str) -> str:
    done = subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    )
    return done.stdout


async def test_status_console_shows_the_figures_live_in_a_terminal(
    stack: Stack, imported: dict[str, int]
) -> None:
    session = f"veritally-status-{uuid.uuid4().hex[:8]}"
    # Exactly the live console's command docs/operations.md shows.
    live = _doc_command(".venv/bin/veritally status", without=("--once", "--json"))
    command = _localised(live, stack)
    await asyncio.to_thread(
        subprocess.run,
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30",
         f"TERM=xterm-256color {command}; echo EXIT=$?; sleep 60"],
        check=True,
    )  # fmt: skip
    try:
        wanted = {
            "services": "ingest up · aggregation up · publication up · stack up",
            "captures": f"received {imported['accepted'] + imported['refused']:,} · "
            f"accepted {imported['accepted']:,}",
            "rejects": f"PERMISSION_DENIED {imported['refused']:,}",
            "aggregation lag": "0 records behind ingest",
            "publication lag": "0 records behind ingest",
        }
        deadline = time.monotonic() + WAIT_S
        screen = ""
        while time.monotonic() < deadline:
            screen = await asyncio.to_thread(_pane, session)
            if all(_row(screen, what).startswith(text) for what, text in wanted.items()):
                break
            await asyncio.sleep(0.2)
        shown = {what: _row(screen, what) for what in wanted}
        assert all(shown[w].startswith(t) for w, t in wanted.items()), screen
        first_cut = _cut_number(screen)
        # Live: the cut number moves on (a cut every 0.5 s) without a key pressed.
        while time.monotonic() < deadline:
            screen = await asyncio.to_thread(_pane, session)
            if _cut_number(screen) > first_cut:
                break
            await asyncio.sleep(0.2)
        assert _cut_number(screen) > first_cut, screen
        # Ctrl-C ends it with status 0.
        await asyncio.to_thread(subprocess.run, ["tmux", "send-keys", "-t", session, "C-c"])
        while time.monotonic() < deadline:
            screen = await asyncio.to_thread(_pane, session)
            if "EXIT=" in screen:
                break
            await asyncio.sleep(0.2)
        assert "EXIT=0" in screen, screen
    finally:
        await asyncio.to_thread(
            subprocess.run, ["tmux", "kill-session", "-t", session], check=False
        )


def _row(screen: str, what: str) -> str:
    """The figures cell of the table row labelled ``what`` (its first line)."""
    for line in screen.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 2 and cells[0] == what:
            return cells[1]
    return ""


def _cut_number(screen: str) -> int:
    for line in screen.splitlines():
        if "last cut" in line and "#" in line:
            return int(line.split("#", 1)[1].split()[0])
    return 0


def _get(url: str, stack: Stack) -> tuple[int, bytes]:
    """An HTTPS GET with a media outlet's certificate through Envoy's REST listener."""
    tls = stack.tls("outlet-01")
    done = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(tls.ca),
         "--cert", str(tls.cert), "--key", str(tls.key), url],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code or 0), body


def test_media_outlet_cannot_read_metrics_or_envoy_stats_on_the_rest_listener(stack: Stack) -> None:
    for path in ("/metrics", "/stats/prometheus", "/stats"):
        code, body = _get(f"https://{stack.endpoints.rest}{path}", stack)
        assert code != 200, f"{path} answered on the REST listener"
        assert b"veritally_" not in body
        assert b"envoy_" not in body
    for name, address in stack.endpoints.metrics.items():
        assert address.startswith("127.0.0.1:"), f"{name} metrics on {address}"


def test_every_command_of_the_metrics_and_runbook_docs_runs(
    stack: Stack, imported: dict[str, int], prometheus: Prometheus
) -> None:
    prometheus.wait_for('up{job="ingest"}', 1)
    # The fixture runs Prometheus' command, the console test the live console's.
    live = _doc_command(".venv/bin/veritally status", without=("--once", "--json"))
    commands = [c for c in _doc_commands() if not c.startswith("prometheus ") and c != live]
    assert len(commands) >= 8
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {_localised(command, stack, prometheus.address)}"],
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.strip(), f"{command} printed nothing"


def test_the_documented_refused_handshakes_command_prints_the_edges_counters(
    stack: Stack,
) -> None:
    """docs/operations.md's examples grep Envoy's admin stats for refused handshakes:
    that very command, against this stack, prints each listener's verification failure
    counters (the ones docs/mesh.md explains)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    shown = [
        re.sub(r"\s+#\s.*$", "", line).strip()
        for line in text.splitlines()
        if line.startswith("curl -s http://127.0.0.1:8441/stats |")
    ]
    assert len(shown) == 1, shown
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {_localised(shown[0], stack)}"],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    counters = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    for listener in ("edge", "mesh", "rest"):
        for reason in ("error", "no_cert", "san"):
            assert counters[f"listener.{listener}.ssl.fail_verify_{reason}"].isdigit()
