"""The mesh through a REAL Envoy in front of real grpc.aio servers, over mutual TLS.

The three services are small in-test servers implementing the services' interfaces
(fixed answers, echoes); everything between client and server is the configuration
`veritally.mesh.envoy` renders, run by `veritally.mesh.process.EnvoyProcess`. What it
defends: mTLS refuses strangers (no certificate, another CA, another trust domain, a
revoked certificate), RBAC confines each role to its methods, one outlet's flood is
throttled without touching another's, the JSON view works, and a forged
x-forwarded-client-cert never reaches a service.
"""

# ruff: noqa: N802 - servicer methods carry the gRPC method names (GetLatestCut...)

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.http_support import CurlAnswer, curl_get
from veritally.mesh.envoy import (
    INGEST_MAX_REQUEST_BYTES,
    SERVICE_FULL_NAMES,
    Endpoint,
    Limits,
    MeshTls,
    TokenBucket,
    Topology,
    write,
)
from veritally.mesh.process import EnvoyProcess, free_port
from veritally.pki import Pki, init_pki, issue_foreign_identity
from veritally.rpc import TlsFiles, aio_channel
from veritally.rpc.peer import PeerIdentityInterceptor
from veritally_client._gen.veritally.v1 import (
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    log_pb2,
    publication_pb2,
    publication_pb2_grpc,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TRUST_DOMAIN = "veritally.example"
CALL_TIMEOUT_S = 5.0
# Small budgets so that a flood is quick to provoke: 10 calls at once, 2 a second after.
MEDIA_BUCKET = TokenBucket(burst=10, per_second=2)
LATEST_CHECKPOINT = b"veritally.example/test\n7\nAAAA\n"
# The cut the in-test publication answers with a results blob of BIG_RESULTS_BYTES: more
# than the transcoder held before it was given a limit, the stream's buffer (64 KiB on
# HTTP/2, 1 MiB on HTTP/1.1), where a national night's cut is ~470 KB and the answer with
# its named view ~1.9 MB.
BIG_CUT = 470
BIG_RESULTS_BYTES = 2 * 1024 * 1024


# --------------------------------------------------------------------------------------
# in-test services


@dataclass
class Seen:
    """What the in-test services received (shared with the tests)."""

    xfcc: list[str] = field(default_factory=list)
    fail_next_read: int = 0
    fail_next_write: int = 0
    read_calls: int = 0
    write_calls: int = 0


def _xfcc(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-forwarded-client-cert":
            return str(value)
    return ""


class FakePublication(publication_pb2_grpc.PublicationServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def GetLatestCut(
        self,
        request: publication_pb2.GetLatestCutRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> publication_pb2.GetLatestCutResponse:
        self.seen.read_calls += 1
        self.seen.xfcc.append(_xfcc(context))
        if self.seen.fail_next_read > 0:
            self.seen.fail_next_read -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica restarting")
        return publication_pb2.GetLatestCutResponse(
            cut=log_pb2.SignedCut(checkpoint=LATEST_CHECKPOINT, results=b"results")
        )

    async def GetCut(
        self, request: publication_pb2.GetCutRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> publication_pb2.GetCutResponse:
        results = b"\x07" * BIG_RESULTS_BYTES if request.cut_number == BIG_CUT else b""
        return publication_pb2.GetCutResponse(
            cut=log_pb2.SignedCut(checkpoint=f"cut {request.cut_number}".encode(), results=results)
        )

    async def WatchCuts(
        self,
        request: publication_pb2.WatchCutsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[publication_pb2.WatchCutsResponse]:
        for n in range(request.after_cut_number + 1, request.after_cut_number + 4):
            yield publication_pb2.WatchCutsResponse(
                cut=log_pb2.SignedCut(checkpoint=f"cut {n}".encode())
            )
            await asyncio.sleep(0.05)


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def SubmitActa(
        self, request: ingest_pb2.SubmitActaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.SubmitActaResponse:
        self.seen.write_calls += 1
        if self.seen.fail_next_write > 0:
            self.seen.fail_next_write -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica restarting")
        acta_id = f"{request.acta.casilla_id}/{request.acta.contest_id}"
        return ingest_pb2.SubmitActaResponse(outcome=ingest_pb2.ActaOutcome(acta_id=acta_id))

    async def StreamRecords(
        self,
        request: ingest_pb2.StreamRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[ingest_pb2.StreamRecordsResponse]:
        yield ingest_pb2.StreamRecordsResponse(
            first_sequence=request.from_sequence, leaves=[b"leaf"]
        )


class FakeAggregation(aggregation_pb2_grpc.AggregationServiceServicer):
    async def GetResultsBlob(
        self,
        request: aggregation_pb2.GetResultsBlobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsBlobResponse:
        return aggregation_pb2.GetResultsBlobResponse(acta_records=42, results=b"blob")


# --------------------------------------------------------------------------------------
# the mesh


@dataclass
class Mesh:
    pki: Pki
    topology: Topology
    envoy: EnvoyProcess
    seen: Seen
    tmp: Path

    ports: dict[str, int]

    def tls(self, name: str) -> TlsFiles:
        return _tls(self.pki, name)

    def edge(self, name: str) -> grpc.aio.Channel:
        return aio_channel(str(self.topology.edge), tls=self.tls(name))

    def internal(self, name: str) -> grpc.aio.Channel:
        return aio_channel(str(self.topology.mesh), tls=self.tls(name))

    def ssl_stats(self, listener: str) -> dict[str, int]:
        prefix = f"listener.{listener}.ssl."
        return {k[len(prefix) :]: v for k, v in self.envoy.stats(prefix).items()}


def _local(port: int) -> Endpoint:
    return Endpoint(host="127.0.0.1", port=port)


async def _start_services(pki: Pki, seen: Seen) -> tuple[list[grpc.aio.Server], dict[str, int]]:
    # The in-test services implement only what these tests call; the generated base
    # classes answer UNIMPLEMENTED for the rest, which the stubs declare abstract.
    ingest = FakeIngest(seen)  # type: ignore[abstract]
    aggregation = FakeAggregation()  # type: ignore[abstract]
    publication = FakePublication(seen)  # type: ignore[abstract]

    def add(name: str, server: grpc.aio.Server) -> None:
        if name == "ingest":
            ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)
        elif name == "aggregation":
            aggregation_pb2_grpc.add_AggregationServiceServicer_to_server(aggregation, server)
        else:
            publication_pb2_grpc.add_PublicationServiceServicer_to_server(publication, server)

    servers: list[grpc.aio.Server] = []
    ports: dict[str, int] = {}
    envoy_id = pki.identity("envoy").spiffe_id
    for name in ("ingest", "aggregation", "publication"):
        # As a deployed service: mTLS requiring our CA, and Envoy as the only caller.
        server = grpc.aio.server(interceptors=[PeerIdentityInterceptor({envoy_id})])
        add(name, server)
        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        ports[name] = server.add_secure_port("127.0.0.1:0", _tls(pki, name).server_credentials())
        await server.start()
        await checker.set(SERVICE_FULL_NAMES[name], health_pb2.HealthCheckResponse.SERVING)
        servers.append(server)
    return servers, ports


def _tls(pki: Pki, name: str) -> TlsFiles:
    identity = pki.identity(name)
    return TlsFiles(cert=identity.cert, key=identity.key, ca=pki.ca_cert)


def _topology(pki: Pki, tmp: Path, ports: dict[str, int], *, live_crl: bool = True) -> Topology:
    sds_file = tmp / "ca-secret.yaml" if live_crl else None
    return Topology(
        tls=MeshTls.from_pki(pki, sds_file=sds_file),
        edge=_local(free_port()),
        mesh=_local(free_port()),
        rest=_local(free_port()),
        admin=_local(free_port()),
        services={name: [_local(port)] for name, port in ports.items()},
        descriptor_set=tmp / "publication.binpb",
        access_log=tmp / "access.log",
        limits=Limits(media=MEDIA_BUCKET),
    )


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mesh")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(module_tmp: Path) -> AsyncIterator[Mesh]:
    pki = init_pki(module_tmp / "pki", trust_domain=TRUST_DOMAIN, media=5, capture_centres=2)
    # Revoked before Envoy starts: Envoy loads the CRL with its configuration.
    pki.revoke("outlet-03")
    seen = Seen()
    servers, ports = await _start_services(pki, seen)
    topology = _topology(pki, module_tmp, ports)
    config = write(topology, module_tmp / "envoy.yaml")
    envoy = EnvoyProcess(config=config, admin=topology.admin, log_path=module_tmp / "envoy.log")
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        yield Mesh(pki=pki, topology=topology, envoy=envoy, seen=seen, tmp=module_tmp, ports=ports)
    finally:
        await asyncio.to_thread(envoy.stop)
        for server in servers:
            await server.stop(0.5)


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _latest(channel: grpc.aio.Channel, **kw: Any) -> Any:
    stub = publication_pb2_grpc.PublicationServiceStub(channel)
    return stub.GetLatestCut(publication_pb2.GetLatestCutRequest(), timeout=CALL_TIMEOUT_S, **kw)


def _submit(channel: grpc.aio.Channel) -> Any:
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    request = ingest_pb2.SubmitActaRequest()
    request.acta.casilla_id = "01-0001-B"
    request.acta.contest_id = "PRES"
    return stub.SubmitActa(request, timeout=CALL_TIMEOUT_S)


# --------------------------------------------------------------------------------------
# mTLS


async def test_media_outlet_reads_latest_cut(mesh: Mesh) -> None:
    async with mesh.edge("outlet-04") as channel:
        response = await _latest(channel)
    assert response.cut.checkpoint == LATEST_CHECKPOINT


async def test_capture_centre_submits_acta(mesh: Mesh) -> None:
    async with mesh.edge("cc-01") as channel:
        response = await _submit(channel)
    assert response.outcome.acta_id == "01-0001-B/PRES"


async def test_refuses_client_without_certificate(mesh: Mesh) -> None:
    before = mesh.ssl_stats("edge").get("fail_verify_no_cert", 0)
    credentials = grpc.ssl_channel_credentials(root_certificates=mesh.pki.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(str(mesh.topology.edge), credentials) as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    assert mesh.ssl_stats("edge")["fail_verify_no_cert"] > before


async def test_refuses_certificate_from_another_ca(mesh: Mesh) -> None:
    foreign = issue_foreign_identity(
        mesh.tmp / "foreign", trust_domain=TRUST_DOMAIN, role="media", name="outlet-01"
    )
    before = mesh.ssl_stats("edge").get("fail_verify_error", 0)
    tls = TlsFiles(cert=foreign.cert, key=foreign.key, ca=mesh.pki.ca_cert)
    async with aio_channel(str(mesh.topology.edge), tls=tls) as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    assert mesh.ssl_stats("edge")["fail_verify_error"] > before


async def test_refuses_our_ca_outside_trust_domain(mesh: Mesh) -> None:
    stranger = issue_foreign_identity(
        mesh.tmp / "stranger",
        trust_domain="elsewhere.example",
        role="media",
        name="outlet-01",
        ca=mesh.pki,
    )
    before = mesh.ssl_stats("edge").get("fail_verify_san", 0)
    tls = TlsFiles(cert=stranger.cert, key=stranger.key, ca=mesh.pki.ca_cert)
    async with aio_channel(str(mesh.topology.edge), tls=tls) as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    assert mesh.ssl_stats("edge")["fail_verify_san"] > before


async def test_refuses_revoked_certificate(mesh: Mesh) -> None:
    assert mesh.pki.is_revoked("outlet-03")
    before = mesh.ssl_stats("edge").get("fail_verify_error", 0)
    async with mesh.edge("outlet-03") as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    assert mesh.ssl_stats("edge")["fail_verify_error"] > before


async def test_revocation_applies_without_restart(mesh: Mesh) -> None:
    async with mesh.edge("outlet-05") as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.OK
    pid = mesh.envoy.pid
    mesh.pki.revoke("outlet-05")
    code = grpc.StatusCode.OK
    for _ in range(50):  # Envoy reloads the CRL on the rename; bounded wait of 5 s
        async with mesh.edge("outlet-05") as channel:
            code = await _code(_latest(channel))
        if code != grpc.StatusCode.OK:
            break
        await asyncio.sleep(0.1)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert mesh.envoy.pid == pid
    assert (
        mesh.envoy.stats("sds.veritally_ca.update_success")["sds.veritally_ca.update_success"] >= 2
    )


async def test_static_crl_applies_after_restart(tmp_path: Path) -> None:
    pki = init_pki(tmp_path / "pki", trust_domain=TRUST_DOMAIN, media=1, capture_centres=0)
    servers, ports = await _start_services(pki, Seen())
    topology = _topology(pki, tmp_path, ports, live_crl=False)
    envoy = EnvoyProcess.from_topology(topology, directory=tmp_path)
    mesh = Mesh(pki=pki, topology=topology, envoy=envoy, seen=Seen(), tmp=tmp_path, ports=ports)
    try:
        envoy.start()
        await asyncio.to_thread(envoy.wait_ready)
        pki.revoke("outlet-01")
        async with mesh.edge("outlet-01") as channel:
            # The CRL was read at start: the revocation is not seen yet.
            assert await _code(_latest(channel)) == grpc.StatusCode.OK
        await asyncio.to_thread(envoy.restart)
        async with mesh.edge("outlet-01") as channel:
            assert await _code(_latest(channel)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await asyncio.to_thread(envoy.stop)
        for server in servers:
            await server.stop(0.5)


# --------------------------------------------------------------------------------------
# RBAC


async def test_media_calling_ingest_is_permission_denied(mesh: Mesh) -> None:
    calls = mesh.seen.write_calls
    async with mesh.edge("outlet-04") as channel:
        assert await _code(_submit(channel)) == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.seen.write_calls == calls  # never reached ingest


async def test_capture_centre_reading_publication_is_permission_denied(mesh: Mesh) -> None:
    async with mesh.edge("cc-02") as channel:
        assert await _code(_latest(channel)) == grpc.StatusCode.PERMISSION_DENIED


async def test_service_only_methods_are_denied_at_the_edge(mesh: Mesh) -> None:
    # Following ingest's log is aggregation's, and only on the internal listener.
    async with mesh.edge("ops-01") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        stream = stub.StreamRecords(ingest_pb2.StreamRecordsRequest(), timeout=CALL_TIMEOUT_S)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream:
                pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_internal_listener_lets_only_the_right_service_through(mesh: Mesh) -> None:
    request = aggregation_pb2.GetResultsBlobRequest()
    async with mesh.internal("publication") as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        response = await stub.GetResultsBlob(request, timeout=CALL_TIMEOUT_S)
    assert response.acta_records == 42
    async with mesh.internal("ingest") as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        code = await _code(stub.GetResultsBlob(request, timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    async with mesh.internal("aggregation") as channel:
        stub_i = ingest_pb2_grpc.IngestServiceStub(channel)
        records = [
            r
            async for r in stub_i.StreamRecords(
                ingest_pb2.StreamRecordsRequest(from_sequence=5), timeout=CALL_TIMEOUT_S
            )
        ]
    assert [r.first_sequence for r in records] == [5]


async def test_internal_listener_refuses_non_service_identities(mesh: Mesh) -> None:
    before = mesh.ssl_stats("mesh").get("fail_verify_san", 0)
    async with mesh.internal("outlet-04") as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        code = await _code(
            stub.GetResultsBlob(aggregation_pb2.GetResultsBlobRequest(), timeout=CALL_TIMEOUT_S)
        )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert mesh.ssl_stats("mesh")["fail_verify_san"] > before


async def test_services_refuse_callers_that_bypass_envoy(mesh: Mesh) -> None:
    calls = mesh.seen.write_calls
    # A capture centre with a valid certificate dials ingest directly.
    direct = aio_channel(f"127.0.0.1:{mesh.ports['ingest']}", tls=mesh.tls("cc-01"))
    async with direct as channel:
        assert await _code(_submit(channel)) == grpc.StatusCode.PERMISSION_DENIED
        # Health stays open to any peer of our CA (supervisors ask it directly).
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_FULL_NAMES["ingest"]),
            timeout=CALL_TIMEOUT_S,
        )
        assert (await check).status == health_pb2.HealthCheckResponse.SERVING
    async with aio_channel(
        f"127.0.0.1:{mesh.ports['publication']}", tls=mesh.tls("outlet-04")
    ) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        stream = stub.WatchCuts(publication_pb2.WatchCutsRequest(), timeout=CALL_TIMEOUT_S)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream:
                pass
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert mesh.seen.write_calls == calls


# --------------------------------------------------------------------------------------
# rate limits, retries, streams, headers


async def test_flooding_outlet_is_throttled_while_another_is_served(mesh: Mesh) -> None:
    flood = 4 * MEDIA_BUCKET.burst
    async with mesh.edge("outlet-01") as flooder, mesh.edge("outlet-02") as polite:
        started = time.monotonic()
        codes = await asyncio.gather(*(_code(_latest(flooder)) for _ in range(flood)))
        elapsed = time.monotonic() - started
        polite_codes = [await _code(_latest(polite)) for _ in range(MEDIA_BUCKET.burst // 2)]
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # The bucket holds `burst` tokens and gains `per_second` each second of the flood
    # (however slow this machine is): never more got through.
    refills = MEDIA_BUCKET.per_second * (math.ceil(elapsed) + 1)
    assert codes.count(grpc.StatusCode.OK) <= MEDIA_BUCKET.burst + refills
    assert polite_codes == [grpc.StatusCode.OK] * len(polite_codes)


async def test_oversized_request_never_reaches_the_service(mesh: Mesh) -> None:
    calls = mesh.seen.write_calls
    request = ingest_pb2.SubmitActaRequest()
    request.acta.casilla_id = "x" * (INGEST_MAX_REQUEST_BYTES + 1)
    async with mesh.edge("cc-01") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        code = await _code(stub.SubmitActa(request, timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert mesh.seen.write_calls == calls


async def test_gzip_request_is_refused_at_envoy_and_a_normal_one_still_works(
    mesh: Mesh,
) -> None:
    # Compressed, this request passes Envoy's size limit (~1 KiB on the wire) and would
    # reach the service at 4x that limit; 65 KiB of gzip inflate to 64 MiB. Envoy
    # answers compressed requests itself.
    calls = mesh.seen.write_calls
    request = ingest_pb2.SubmitActaRequest()
    request.acta.casilla_id = "0" * (INGEST_MAX_REQUEST_BYTES * 4)
    async with mesh.edge("cc-01") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        code = await _code(
            stub.SubmitActa(request, timeout=CALL_TIMEOUT_S, compression=grpc.Compression.Gzip)
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED
        # A stream is refused the same way (its messages are not buffered by Envoy).
        code = await _code(
            stub.SubmitActas(
                iter([ingest_pb2.SubmitActasRequest(actas=[request.acta])]),
                timeout=CALL_TIMEOUT_S,
                compression=grpc.Compression.Gzip,
            )
        )
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert mesh.seen.write_calls == calls
        # The same connection, uncompressed: served.
        response = await _submit(channel)
    assert response.outcome.acta_id == "01-0001-B/PRES"
    # The mesh listener refuses compression too.
    async with mesh.internal("aggregation") as channel:
        stub_i = ingest_pb2_grpc.IngestServiceStub(channel)
        stream = stub_i.StreamRecords(
            ingest_pb2.StreamRecordsRequest(from_sequence=5),
            timeout=CALL_TIMEOUT_S,
            compression=grpc.Compression.Gzip,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [r async for r in stream]
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_idempotent_read_is_retried_on_unavailable(mesh: Mesh) -> None:
    mesh.seen.fail_next_read = 1
    calls = mesh.seen.read_calls
    async with mesh.edge("outlet-04") as channel:
        response = await _latest(channel)
    assert response.cut.checkpoint == LATEST_CHECKPOINT
    assert mesh.seen.read_calls == calls + 2


async def test_submit_acta_is_never_retried(mesh: Mesh) -> None:
    mesh.seen.fail_next_write = 1
    calls = mesh.seen.write_calls
    async with mesh.edge("cc-01") as channel:
        assert await _code(_submit(channel)) == grpc.StatusCode.UNAVAILABLE
    assert mesh.seen.write_calls == calls + 1


async def test_watch_cuts_streams_through_the_edge(mesh: Mesh) -> None:
    async with mesh.edge("outlet-04") as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        request = publication_pb2.WatchCutsRequest(after_cut_number=10)
        cuts = [r.cut.checkpoint async for r in stub.WatchCuts(request, timeout=CALL_TIMEOUT_S)]
    assert cuts == [b"cut 11", b"cut 12", b"cut 13"]


async def test_spoofed_client_cert_header_is_replaced(mesh: Mesh) -> None:
    forged = f"By=spiffe://{TRUST_DOMAIN}/service/envoy;URI=spiffe://{TRUST_DOMAIN}/operator/ops-01"
    async with mesh.edge("outlet-04") as channel:
        await _latest(channel, metadata=(("x-forwarded-client-cert", forged),))
    received = mesh.seen.xfcc[-1]
    assert "operator/ops-01" not in received
    assert f"URI=spiffe://{TRUST_DOMAIN}/media/outlet-04" in received


async def test_access_log_records_peer_method_and_status(mesh: Mesh) -> None:
    async with mesh.edge("cc-02") as channel:
        await _code(_latest(channel))
    entries: list[dict[str, Any]] = []
    for _ in range(50):  # the file logger flushes on a timer
        lines = mesh.topology.access_log.read_text().splitlines()
        entries = [json.loads(line) for line in lines]
        if any(e["peer"].endswith("/capture/cc-02") for e in entries):
            break
        await asyncio.sleep(0.1)
    denied = [e for e in entries if e["peer"].endswith("/capture/cc-02")]
    assert denied
    assert denied[-1]["method"] == "/veritally.v1.PublicationService/GetLatestCut"
    assert denied[-1]["grpc_status"] == grpc.StatusCode.PERMISSION_DENIED.value[0]


# --------------------------------------------------------------------------------------
# REST/JSON view


def _rest_get(mesh: Mesh, path: str, identity: str, *, http: str = "2") -> CurlAnswer:
    who = mesh.pki.identity(identity)
    assert mesh.topology.rest is not None
    url = f"https://{mesh.topology.rest}{path}"
    return curl_get(url, ca=mesh.pki.ca_cert, cert=who.cert, key=who.key, http=http)


@pytest.mark.parametrize("http", ["2", "1.1"])
async def test_rest_view_answers_json(mesh: Mesh, http: str) -> None:
    answer = await asyncio.to_thread(_rest_get, mesh, "/v1/cuts/latest", "outlet-04", http=http)
    assert (answer.status, answer.http_version) == (200, http)
    cut = json.loads(answer.body)["cut"]
    assert base64.b64decode(cut["checkpoint"]) == LATEST_CHECKPOINT
    answer = await asyncio.to_thread(_rest_get, mesh, "/v1/cuts/7", "outlet-04", http=http)
    assert answer.status == 200
    assert base64.b64decode(json.loads(answer.body)["cut"]["checkpoint"]) == b"cut 7"


@pytest.mark.parametrize("http", ["2", "1.1"])
async def test_rest_view_answers_cuts_above_the_streams_buffer(mesh: Mesh, http: str) -> None:
    # Before the transcoder had a limit of its own, every cut of a federal night was
    # answered HTTP 500: "Response not transcoded because the transcoder's internal
    # buffer size exceeds the configured limit".
    path = f"/v1/cuts/{BIG_CUT}"
    answer = await asyncio.to_thread(_rest_get, mesh, path, "outlet-04", http=http)
    assert (answer.status, answer.http_version) == (200, http), answer.body[:200]
    results = base64.b64decode(json.loads(answer.body)["cut"]["results"])
    assert results == b"\x07" * BIG_RESULTS_BYTES


@pytest.mark.parametrize("path", ["/v1/cuts/latest", "/v1/cuts/latest/view", "/v1/cuts/3/view"])
async def test_rest_view_is_for_media_only(mesh: Mesh, path: str) -> None:
    for identity in ("cc-01", "ops-01"):
        answer = await asyncio.to_thread(_rest_get, mesh, path, identity)
        assert answer.status == 403, (identity, answer.body[:200])
