"""Services started by ``veritally up`` accept only Envoy: a party with a valid
certificate of our CA that dials a service's own port, bypassing Envoy's RBAC and rate
limits, gets PERMISSION_DENIED from every service (health excepted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veritally.stack import Stack
from veritally.state import Bootstrap, StateDir
from veritally_client._gen.veritally.v1 import (
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    publication_pb2,
    publication_pb2_grpc,
)

pytestmark = [pytest.mark.e2e]

CALL_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = StateDir(tmp_path_factory.mktemp("bypass"))
    Bootstrap(casillas=20, seed=5).ensure(state)
    with Stack(state, base_port=None, drain_seconds=0.2, interval_s=0.5) as running:
        yield running


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as e:
        code: grpc.StatusCode = e.code()
        return code
    return grpc.StatusCode.OK


def _call(channel: grpc.Channel, service: str) -> Callable[[], object]:
    """One ordinary call to ``service`` (which one does not matter: none may pass)."""
    t = CALL_TIMEOUT_S
    if service == "ingest":
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        return lambda: ingest.CorrectActa(ingest_pb2.CorrectActaRequest(), timeout=t)
    if service == "aggregation":
        agg = aggregation_pb2_grpc.AggregationServiceStub(channel)
        return lambda: agg.GetResultsBlob(aggregation_pb2.GetResultsBlobRequest(), timeout=t)
    pub = publication_pb2_grpc.PublicationServiceStub(channel)
    return lambda: pub.GetTrustRoot(publication_pb2.GetTrustRootRequest(), timeout=t)


@pytest.mark.parametrize(
    ("service", "identity"),
    [
        ("ingest", "cc-01"),  # a capture centre skipping Envoy's rate limit
        ("ingest", "outlet-01"),  # a media outlet skipping RBAC
        ("aggregation", "outlet-01"),  # nobody but the mesh reads aggregation
        ("publication", "outlet-01"),  # an outlet skipping its rate limit
        ("publication", "publication"),  # even another service of ours
    ],
)
def test_services_refuse_certificates_other_than_envoys(
    stack: Stack, service: str, identity: str
) -> None:
    target = stack.endpoints.services[service]
    with grpc.secure_channel(target, stack.tls(identity).channel_credentials()) as channel:
        assert _code(_call(channel, service)) == grpc.StatusCode.PERMISSION_DENIED
        # Health stays open to any certificate of our CA (the supervisor asks it).
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
