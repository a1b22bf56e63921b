"""Ingest's Prometheus metrics, scraped over HTTP from its own loopback listener while
real gRPC calls come in: outcomes by state and rejections by reason equal to the
outcomes the callers were answered, the pending captures and the cross-check queue, the
log's size and the store's commits. A caller cannot multiply the series by sending
actas under ever new ids."""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from tests.write_path_support import as_caller, capture_operator, make_acta, small_election
from veritally.ingest.app import IngestService, start_ingest
from veritally.metrics.exposition import MetricsServer
from veritally.metrics.families import OUTCOME_STATES
from veritally.metrics.status import Samples, parse
from veritally.rpc import aio_channel
from veritally.serve import expose_metrics
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
A = "01-01-0001-B1"
B = "02-02-0002-C2"


@pytest.fixture
async def ingest(
    tmp_path: Path,
) -> AsyncIterator[tuple[IngestService, MetricsServer, ingest_pb2_grpc.IngestServiceAsyncStub]]:
    service = await start_ingest(
        election=ELECTION, db_path=tmp_path / "ingest.db", address="127.0.0.1:0"
    )
    server = expose_metrics(service.metrics, listen="127.0.0.1:0", tls=None)
    assert server is not None
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            yield service, server, ingest_pb2_grpc.IngestServiceStub(channel)
    finally:
        server.stop()
        await service.stop()


async def _batch(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, operator: str, actas: list[acta_pb2.Acta]
) -> list[ingest_pb2.ActaOutcome]:
    async def requests() -> AsyncIterator[ingest_pb2.SubmitActasRequest]:
        yield ingest_pb2.SubmitActasRequest(actas=actas)

    response = await stub.SubmitActas(requests(), metadata=as_caller(capture_operator(operator)))
    return list(response.outcomes)


def _scrape(server: MetricsServer) -> Samples:
    with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as answer:
        return parse(answer.read().decode())


def _value(samples: Samples, name: str, **labels: str) -> float:
    [value] = [v for have, v in samples[name] if all(have.get(k) == x for k, x in labels.items())]
    return value


def _unknown_contest(casilla: str) -> acta_pb2.Acta:
    return acta_pb2.Acta(casilla_id=casilla, contest_id="NOPE")


async def test_metrics_count_what_callers_were_answered(
    ingest: tuple[IngestService, MetricsServer, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    service, server, stub = ingest
    answered = await _batch(
        stub,
        "ana",
        [
            make_acta(ELECTION, A, "PRES", [3, 4, 5], operator="ana"),
            make_acta(ELECTION, B, "PRES", [1, 1, 1], operator="ana"),
            make_acta(ELECTION, A, "SEN", [2, 2], operator="ana"),
            _unknown_contest(A),
        ],
    )
    answered += await _batch(
        stub,
        "ben",
        [
            make_acta(ELECTION, A, "PRES", [3, 4, 5], operator="ben"),  # agrees: logged
            make_acta(ELECTION, B, "PRES", [2, 2, 2], operator="ben"),  # disagrees
        ],
    )
    # Other figures for an acta already logged: a conflict.
    answered += await _batch(
        stub, "carla", [make_acta(ELECTION, A, "PRES", [9, 9, 9], operator="carla")]
    )
    states = Counter(OUTCOME_STATES[o.status] for o in answered)
    reasons = Counter(o.code for o in answered if o.status == ingest_pb2.OUTCOME_STATUS_REJECTED)
    assert states == {
        "accepted": 1,
        "awaiting_second_capture": 3,
        "cross_check": 1,
        "rejected": 2,
    }
    assert reasons["ALREADY_EXISTS"] == 1
    samples = _scrape(server)
    assert _value(samples, "veritally_ingest_actas_received_total") == len(answered)
    for state in OUTCOME_STATES.values():
        assert _value(samples, "veritally_ingest_actas_total", state=state) == states[state]
    for reason, n in reasons.items():
        assert _value(samples, "veritally_ingest_actas_rejected_total", reason=reason) == n
    pending = "veritally_ingest_captures_pending"
    assert _value(samples, pending, state="awaiting_second_capture") == 1  # A/SEN
    assert _value(samples, pending, state="cross_check") == 1  # B/PRES
    assert _value(samples, "veritally_ingest_log_records") == service.engine.log_size == 1
    assert _value(samples, "veritally_ingest_store_commit_seconds_count") >= 1
    assert _value(samples, "veritally_ingest_night_closed") == 0


def _series(samples: Samples) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (name, tuple(sorted(labels.items())))
        for name, rows in samples.items()
        for labels, _ in rows
    }


def _ids(n: int) -> Iterable[acta_pb2.Acta]:
    for i in range(n):
        yield acta_pb2.Acta(casilla_id=f"99-99-{i:04d}-B1", contest_id=f"X{i}")


async def test_caller_cannot_multiply_metric_series_with_new_acta_ids(
    ingest: tuple[IngestService, MetricsServer, ingest_pb2_grpc.IngestServiceAsyncStub],
) -> None:
    _, server, stub = ingest
    await _batch(stub, "ana", [_unknown_contest(A)])
    before = _series(_scrape(server))
    outcomes = await _batch(stub, "ana", list(_ids(200)))
    assert all(o.status == ingest_pb2.OUTCOME_STATUS_REJECTED for o in outcomes)
    after = _scrape(server)
    ours = {s for s in _series(after) if s[0].startswith("veritally_")}
    assert ours == {s for s in before if s[0].startswith("veritally_")}
    assert _value(after, "veritally_ingest_actas_total", state="rejected") == 201
