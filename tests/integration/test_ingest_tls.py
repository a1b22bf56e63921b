"""`veritally serve ingest` with mutual TLS: only the mesh (Envoy's identity, derived
from the service's own certificate) may call; any other certificate of the CA gets
PERMISSION_DENIED, except for health checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.write_path_support import make_acta, small_election
from veritally import serve
from veritally.cli import serve as serve_cli
from veritally.ingest.app import start_ingest
from veritally.pki import Pki, init_pki
from veritally.rpc import TlsFiles, aio_channel
from veritally_client._gen.veritally.v1 import ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
TRUST_DOMAIN = "veritally.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(
        tmp_path_factory.mktemp("pki"), trust_domain=TRUST_DOMAIN, media=0, capture_centres=1
    )


def _files(pki: Pki, name: str) -> TlsFiles:
    identity = pki.identity(name)
    return TlsFiles(cert=identity.cert, key=identity.key, ca=pki.ca_cert)


def _args(pki: Pki, tmp_path: Path) -> argparse.Namespace:
    definition = tmp_path / "definition.binpb"
    definition.write_bytes(ELECTION.definition_bytes)
    own = _files(pki, "ingest")
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return parser.parse_args(
        [
            *("ingest", "--definition-bytes", str(definition), "--db", str(tmp_path / "i.db")),
            *("--tls-cert", str(own.cert), "--tls-key", str(own.key), "--tls-ca", str(own.ca)),
        ]
    )


def test_default_allowed_peer_is_envoy_of_the_own_trust_domain(pki: Pki) -> None:
    expected = f"spiffe://{TRUST_DOMAIN}/service/envoy"
    assert serve.envoy_identity(pki.identity("ingest").cert) == expected


async def test_only_envoy_may_call_ingest_over_mtls(pki: Pki, tmp_path: Path) -> None:
    args = _args(pki, tmp_path)
    tls = serve_cli.tls_from_args(args)
    service = await start_ingest(
        election=serve_cli.load_election_from_args(args),
        db_path=args.db,
        address="127.0.0.1:0",
        tls=tls,
        double_capture=False,
        interceptors=serve_cli.interceptors_from_args(args, tls),
    )
    target = f"127.0.0.1:{service.port}"
    acta = make_acta(ELECTION, ELECTION.casillas[0].id, "SEN", [1, 2])
    try:
        async with aio_channel(target, tls=_files(pki, "envoy"), server_name="ingest") as ch:
            response = await ingest_pb2_grpc.IngestServiceStub(ch).SubmitActa(
                ingest_pb2.SubmitActaRequest(acta=acta)
            )
            assert response.outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
        async with aio_channel(target, tls=_files(pki, "cc-01"), server_name="ingest") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await ingest_pb2_grpc.IngestServiceStub(ch).SubmitActa(
                    ingest_pb2.SubmitActaRequest(acta=acta)
                )
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await service.stop()
