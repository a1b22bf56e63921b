"""``veritally status``'s figures from the text the services' registries answer (fake
engines, real registries and exposition), and the console's table of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import generate_latest
from rich.console import Console

from veritally.cli.status import render
from veritally.metrics.families import (
    AggregationMetrics,
    IngestMetrics,
    PublicationMetrics,
    StackMetrics,
)
from veritally.metrics.status import ScrapeError, Status, parse, status_from
from veritally_client.protocol.pb import ingest_pb2

Outcome = ingest_pb2.ActaOutcome


@dataclass
class FakeIngest:
    log_size: int = 120
    night_closed: object | None = None

    def pending_captures(self) -> tuple[int, int]:
        return 7, 2


@dataclass
class FakeAggregation:
    position: int = 100
    ingest_records: int = 120
    stuck_at: int | None = None


@dataclass
class FakeStack:
    restarts: dict[str, list[float]] = field(default_factory=lambda: {"ingest": [1.0]})

    def pids(self) -> dict[str, int | None]:
        return {"ingest": 10, "aggregation": 11, "publication": None, "envoy": 12}


def _ingest_text() -> str:
    metrics = IngestMetrics()
    metrics.watch(FakeIngest())
    accepted = Outcome(status=ingest_pb2.OUTCOME_STATUS_ACCEPTED)
    conflict = Outcome(status=ingest_pb2.OUTCOME_STATUS_REJECTED, code="ALREADY_EXISTS")
    foreign = Outcome(status=ingest_pb2.OUTCOME_STATUS_REJECTED, code="PERMISSION_DENIED")
    metrics.count(4, [accepted, accepted, conflict, foreign])
    metrics.count(1, [Outcome(status=ingest_pb2.OUTCOME_STATUS_CROSS_CHECK)])
    return generate_latest(metrics.registry).decode()


def _aggregation_text() -> str:
    metrics = AggregationMetrics()
    metrics.watch(FakeAggregation())
    return generate_latest(metrics.registry).decode()


def _stack_text(tmp_path: Path) -> str:
    metrics = StackMetrics(
        FakeStack(), certificates=list, crl=tmp_path / "no-crl.pem", state_dir=tmp_path
    )
    return generate_latest(metrics.registry).decode()


def test_status_reads_the_figures_each_registry_exports(tmp_path: Path) -> None:
    status = status_from(
        {
            "ingest": parse(_ingest_text()),
            "aggregation": parse(_aggregation_text()),
            "publication": parse(
                generate_latest(PublicationMetrics(interval_seconds=2.0).registry).decode()
            ),
            "stack": parse(_stack_text(tmp_path)),
        }
    )
    assert status.up == {"ingest": True, "aggregation": True, "publication": True, "stack": True}
    assert status.received == 5
    assert status.captures["accepted"] == 2
    assert status.captures["cross_check"] == 1
    assert status.captures["rejected"] == 2
    assert status.rejected == {"ALREADY_EXISTS": 1, "PERMISSION_DENIED": 1}
    assert status.conflicts == 1
    assert status.pending == {"awaiting_second_capture": 7, "cross_check": 2}
    assert status.log_records == 120
    assert status.aggregation_position == 100
    assert status.aggregation_lag == 20
    # No cut yet: publication exports no cut figure, the lag is unknown, not zero.
    assert status.last_cut is None
    assert status.publication_lag is None
    assert status.crl_expiry is None  # the CRL file is missing: absent, so it alerts


def test_a_job_that_does_not_answer_is_down_and_its_figures_unknown() -> None:
    status = status_from(
        {"ingest": ScrapeError("http://127.0.0.1:1/metrics: refused"), "aggregation": {}}
    )
    assert status.up == {"ingest": False, "aggregation": True}
    assert status.errors == {"ingest": "http://127.0.0.1:1/metrics: refused"}
    assert status.received is None
    assert status.aggregation_lag is None
    assert status.to_json()["up"] == {"ingest": False, "aggregation": True}


def test_console_table_shows_the_figures() -> None:
    now = time.time()
    status = Status(
        up={"ingest": True, "aggregation": True, "publication": False, "stack": True},
        received=1200,
        captures={"accepted": 1100, "rejected": 3, "duplicate": 0},
        pending={"awaiting_second_capture": 40, "cross_check": 2},
        rejected={"PERMISSION_DENIED": 3},
        conflicts=0,
        log_records=1100,
        aggregation_lag=12,
        publication_lag=None,
        last_cut=57,
        last_cut_age_s=1.25,
        cut_records=1088,
        certificates_expiry={"media": now + 89.5 * 86_400},
        crl_expiry=now + 5 * 3600,
        errors={"publication": "http://127.0.0.1:8462/metrics: refused"},
    )
    console = Console(record=True, width=120)
    console.print(render(status, title="veritally status", now=now))
    text = console.export_text()
    assert "publication DOWN" in text
    assert "received 1,200 · accepted 1,100 · rejected 3" in text
    assert "duplicate" not in text  # states with no acta are left out
    assert "2 actas · awaiting second capture 40" in text
    assert "PERMISSION_DENIED 3" in text
    assert "12 records behind ingest" in text
    assert "? records behind ingest" in text
    assert "#57 · 1.2 s ago · 1,088 actas" in text
    assert "media 89.5 d" in text
    assert "5.0 h" in text
    assert "http://127.0.0.1:8462/metrics: refused" in text
