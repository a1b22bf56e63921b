"""One identity must not starve the others: stream floods, silent streams and TCP
connections that never start TLS, through the real stack (three services behind a real
Envoy with mTLS).

The limits are the production mechanisms with small numbers, so that a flood is
reached in a test: 4 streams per identity in the services, an edge stream breaker of 6,
a 1 s TLS handshake timeout, 600 connections on the edge. The full-size floods (4,300
streams, 20,700 connections) run in ``make soak`` (bench/abuse.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from veritally.election import load_actas, load_election
from veritally.mesh.envoy import CircuitBreaker, Limits, TokenBucket
from veritally.rpc.streams import StreamLimits
from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client import ClientConfig, TransportError
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    publication_pb2,
    publication_pb2_grpc,
)

pytestmark = [pytest.mark.e2e]

CASILLAS = 40
STREAMS = StreamLimits(max_per_identity=4, request_idle_s=2.0)
EDGE_STREAM_BREAKER = 6  # streams in flight to one service from the edge
HANDSHAKE_TIMEOUT_S = 1.0
EDGE_CAP = 600
LIMITS = Limits(
    # Wide enough that opening streams is never rate limited: the stream bounds are
    # under test, not the token buckets.
    media=TokenBucket(burst=500, per_second=200),
    capture=TokenBucket(burst=500, per_second=200),
    tls_handshake_timeout_s=HANDSHAKE_TIMEOUT_S,
    max_connections=1000,
    edge_max_connections=EDGE_CAP,
    rest_max_connections=100,
    mesh_max_connections=100,
    public_max_connections=100,
    edge_stream=CircuitBreaker(
        max_connections=8,
        max_pending_requests=16,
        max_requests=EDGE_STREAM_BREAKER,
        max_retries=0,
    ),
)
FLOOD_STREAMS = 30  # streams the flooding identity tries to open
RAW_CONNECTIONS = 300  # TCP connections that never start TLS (within the edge cap)
CALL_TIMEOUT_S = 10.0
WAIT_S = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("isolation"))
    Bootstrap(casillas=CASILLAS, seed=9).ensure(state)
    with Stack(
        state,
        base_port=None,
        drain_seconds=0.5,
        interval_s=0.5,
        single_capture=True,
        limits=LIMITS,
        stream_limits=STREAMS,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def actas(stack: Stack) -> Iterator[acta_pb2.Acta]:
    # The actas of the casillas assigned to cc-02, the centre that submits them below.
    election = load_election(stack.state.election_yaml)
    actas = load_actas(election, stack.state.actas_csv)
    return iter([a for a in actas if a.provenance.capture_centre_id == "cc-02"])


def _channel(stack: Stack, identity: str) -> grpc.Channel:
    # Its own subchannel pool: each channel is its own connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    return grpc.secure_channel(
        stack.endpoints.edge, stack.tls(identity).channel_credentials(), options
    )


def _code(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"
    return "OK"


def _latest_reads(stack: Stack, identity: str, count: int) -> Counter[str]:
    with _channel(stack, identity) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        request = publication_pb2.GetLatestCutRequest()
        return Counter(
            _code(lambda: stub.GetLatestCut(request, timeout=CALL_TIMEOUT_S)) for _ in range(count)
        )


@contextlib.contextmanager
def _watch_streams(stack: Stack, identity: str, count: int) -> Iterator[Counter[str]]:
    """Try to open ``count`` WatchCuts streams of ``identity`` and hold those that got
    a first cut; yields the outcome of each attempt ("held", or the refusal's code)."""
    outcomes: Counter[str] = Counter()
    held: list[grpc.Call] = []
    with _channel(stack, identity) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        try:
            for _ in range(count):
                stream = stub.WatchCuts(publication_pb2.WatchCutsRequest(after_cut_number=0))
                try:
                    next(stream)
                    held.append(stream)
                    outcomes["held"] += 1
                except grpc.RpcError as e:
                    outcomes[e.code().name if isinstance(e, grpc.Call) else "UNKNOWN"] += 1
            yield outcomes
        finally:
            for call in held:
                call.cancel()


def _watch_gets_a_cut(stack: Stack, identity: str) -> str:
    with _channel(stack, identity) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        stream = stub.WatchCuts(
            publication_pb2.WatchCutsRequest(after_cut_number=0), timeout=CALL_TIMEOUT_S
        )
        code = _code(lambda: next(stream))
        stream.cancel()
        return code


def _published_records(stack: Stack, state_dir: Path) -> int:
    config = ClientConfig(max_checkpoint_age=120.0)
    with (
        stack.media_client("outlet-02", state_dir=state_dir, config=config) as client,
        contextlib.suppress(TransportError),  # no cut yet
    ):
        return client.latest().acta_records
    return 0


def _submit_reaches_a_cut(stack: Stack, acta: acta_pb2.Acta, tmp_path: Path) -> None:
    """cc-02 submits one acta; it must show in a verified cut, which needs aggregation's
    mesh stream (StreamRecords) and publication's (StreamAggregatedRecords) working."""
    before = _published_records(stack, tmp_path / "before")
    with _channel(stack, "cc-02") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        response = stub.SubmitActa(ingest_pb2.SubmitActaRequest(acta=acta), timeout=CALL_TIMEOUT_S)
    assert response.outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
    deadline = time.monotonic() + WAIT_S
    records = before
    while records <= before and time.monotonic() < deadline:
        time.sleep(0.25)
        records = _published_records(stack, tmp_path / "after")
    assert records > before


# --------------------------------------------------------------------------------------
# streams


def test_flood_of_watch_streams_does_not_starve_other_outlets(stack: Stack) -> None:
    with _watch_streams(stack, "outlet-01", FLOOD_STREAMS) as flood:
        polite = _latest_reads(stack, "outlet-02", 20)
        polite_watch = _watch_gets_a_cut(stack, "outlet-02")
    # The flooder holds its cap; every stream beyond it is refused by the service.
    assert flood == {"held": STREAMS.max_per_identity, "RESOURCE_EXHAUSTED": 26}
    assert polite == {"OK": 20}
    assert polite_watch == "OK"


def test_full_edge_stream_breaker_leaves_reads_and_mesh_streams_alone(
    stack: Stack, actas: Iterator[acta_pb2.Acta], tmp_path: Path
) -> None:
    with (
        _watch_streams(stack, "outlet-01", STREAMS.max_per_identity) as first,
        _watch_streams(stack, "outlet-03", EDGE_STREAM_BREAKER - STREAMS.max_per_identity) as rest,
    ):
        assert first["held"] + rest["held"] == EDGE_STREAM_BREAKER
        # The publication edge stream breaker is full: one more stream overflows...
        assert _watch_gets_a_cut(stack, "outlet-02") == "UNAVAILABLE"
        # ...but unary reads use another cluster, and the followers the mesh ones.
        assert _latest_reads(stack, "outlet-02", 20) == {"OK": 20}
        _submit_reaches_a_cut(stack, next(actas), tmp_path)
    assert stack.envoy is not None
    # Refused by the breaker of the stream cluster only (max_requests, "active").
    overflow = "cluster.publication_edge_stream.upstream_rq_active_overflow"
    assert stack.envoy.stats(overflow)[overflow] >= 1
    unary = "cluster.publication_edge_unary.upstream_rq_active_overflow"
    assert stack.envoy.stats(unary)[unary] == 0


def test_silent_submit_streams_do_not_stop_another_centre_nor_aggregation(
    stack: Stack, actas: Iterator[acta_pb2.Acta], tmp_path: Path
) -> None:
    release = threading.Event()

    def silent() -> Iterator[ingest_pb2.SubmitActasRequest]:
        release.wait(WAIT_S)
        yield from ()

    with _channel(stack, "cc-01") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        started = time.monotonic()
        futures = [stub.SubmitActas.future(silent(), timeout=WAIT_S) for _ in range(10)]
        try:
            _submit_reaches_a_cut(stack, next(actas), tmp_path)
            ended: list[tuple[str, str, float]] = []
            for future in futures:
                error = future.exception(timeout=WAIT_S)
                assert isinstance(error, grpc.Call)
                ended.append((error.code().name, error.details() or "", time.monotonic()))
        finally:
            release.set()
    idle = [t - started for _, d, t in ended if "no message for 2 s" in d]
    refused = Counter(
        code
        for code, d, _ in ended
        if "at most 4" in d or "reset reason: overflow" in d  # the service, or the breaker
    )
    # The centre held its cap of silent streams until the idle bound ended them; every
    # other attempt was refused at once, by the service (RESOURCE_EXHAUSTED) or, while
    # 6 were in flight, by the edge stream breaker (UNAVAILABLE).
    assert len(idle) == STREAMS.max_per_identity
    assert all(t < STREAMS.request_idle_s + 10 for t in idle)
    assert sum(refused.values()) == 10 - STREAMS.max_per_identity
    assert set(refused) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}
    assert {code for code, _, _ in ended} <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE"}


# --------------------------------------------------------------------------------------
# connections


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        sock.setblocking(False)
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # nothing to read: still open
    except OSError:
        return True  # reset


def test_tcp_connections_that_never_start_tls_are_closed_and_others_still_connect(
    stack: Stack,
) -> None:
    host, port = stack.endpoints.edge.rsplit(":", 1)
    raw = [socket.create_connection((host, int(port)), timeout=5) for _ in range(RAW_CONNECTIONS)]
    try:
        opened = time.monotonic()
        # While they are held (within the cap), another client gets in.
        assert _latest_reads(stack, "outlet-02", 5) == {"OK": 5}
        time.sleep(max(0.0, HANDSHAKE_TIMEOUT_S + 1.0 - (time.monotonic() - opened)))
        deadline = time.monotonic() + WAIT_S
        while sum(_closed_by_peer(s) for s in raw) < RAW_CONNECTIONS:
            assert time.monotonic() < deadline, "Envoy kept connections that never did TLS"
            time.sleep(0.2)
    finally:
        for s in raw:
            s.close()
    assert _latest_reads(stack, "outlet-02", 5) == {"OK": 5}


def test_connections_beyond_the_edge_cap_are_closed_at_once_and_the_mesh_is_untouched(
    stack: Stack,
) -> None:
    host, port = stack.endpoints.edge.rsplit(":", 1)
    raw = [socket.create_connection((host, int(port)), timeout=5) for _ in range(EDGE_CAP + 50)]
    try:
        time.sleep(0.3)  # well within the handshake timeout
        assert sum(_closed_by_peer(s) for s in raw) >= 50
        # The mesh listener has its own cap: a service still gets in while the edge is
        # full, so the pipeline behind the edge keeps working.
        with grpc.secure_channel(
            stack.endpoints.mesh,
            stack.tls("publication").channel_credentials(),
            [("grpc.use_local_subchannel_pool", 1)],
        ) as channel:
            blob = aggregation_pb2_grpc.AggregationServiceStub(channel).GetResultsBlob(
                aggregation_pb2.GetResultsBlobRequest(), timeout=CALL_TIMEOUT_S
            )
        assert blob.results
    finally:
        for s in raw:
            s.close()
    assert stack.envoy is not None
    limited = "connection_limit.edge_connection_limit.limited_connections"
    assert stack.envoy.stats(limited)[limited] >= 50
    # Once the flood is gone (or timed out), the edge takes new clients again.
    assert _latest_reads(stack, "outlet-02", 5) == {"OK": 5}


def test_envoy_runs_with_an_fd_limit_above_its_connection_caps(stack: Stack) -> None:
    assert stack.envoy is not None
    soft = stack.envoy.open_files_limit()
    assert soft is not None
    assert soft >= LIMITS.open_files_needed > LIMITS.max_connections
