"""Run one service in this process from its launch configuration (``veritally serve``).

Each service loads the election definition (publication excepted), opens its own SQLite
store, listens (mutual TLS when the launch names certificate files) and drains on
SIGTERM or SIGINT: it reports NOT_SERVING, waits ``drain_seconds`` for health checkers
to stop routing to it, and lets calls in flight finish. With TLS, only the mesh may call
(``veritally.rpc.peer.PeerIdentityInterceptor``): Envoy's identity in the trust domain
of the service's own certificate, unless ``allowed_peers`` names others.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import grpc
from cryptography import x509

from veritally.aggregation.app import start_aggregation
from veritally.election import load_definition
from veritally.ingest.app import start_ingest
from veritally.launch import (
    AggregationLaunch,
    ElectionSource,
    IngestLaunch,
    PublicationLaunch,
    ServiceLaunch,
)
from veritally.metrics.exposition import MetricsServer
from veritally.metrics.families import ServiceMetrics
from veritally.publication.app import PublicationConfig, PublicationService, start_publication
from veritally.publication.errors import LeaseLostError
from veritally.publication.witnesses import WitnessEndpoint
from veritally.rpc import TlsFiles, run_until_signalled
from veritally.rpc.peer import PeerIdentityInterceptor
from veritally_client.protocol import CosignatureVerifier, ElectionIndex

__all__ = [
    "envoy_identity",
    "expose_metrics",
    "load_election",
    "peer_interceptors",
    "publication_config",
    "run_publication",
    "serve",
    "write_port",
]


class _Running(Protocol):
    @property
    def port(self) -> int: ...

    @property
    def metrics(self) -> ServiceMetrics: ...

    async def stop(self, *, drain_seconds: float = ..., grace: float = ...) -> None: ...


def load_election(source: ElectionSource) -> ElectionIndex:
    """The election ``source`` names.

    Raises:
        veritally.election.DefinitionError: if the YAML definition is invalid.
        veritally_client.MalformedDataError: if the serialized definition is invalid.
    """
    if source.definition_bytes is not None:
        return ElectionIndex.from_bytes(source.definition_bytes.read_bytes())
    assert source.yaml is not None  # ElectionSource holds exactly one of the two
    return load_definition(source.yaml)


def envoy_identity(cert: Path) -> str:
    """Envoy's SPIFFE ID in the trust domain of the certificate at ``cert``.

    Raises:
        ValueError: if the certificate carries no spiffe:// URI SAN.
    """
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound as e:
        raise ValueError(f"{cert} has no subject alternative name") from e
    for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        parts = urlsplit(uri)
        if parts.scheme == "spiffe" and parts.netloc:
            return f"spiffe://{parts.netloc}/service/envoy"
    raise ValueError(f"{cert} has no spiffe:// URI SAN")


def peer_interceptors(
    tls: TlsFiles | None, allowed_peers: tuple[str, ...] = ()
) -> list[grpc.aio.ServerInterceptor]:
    """The mesh's peer check: with TLS, only ``allowed_peers`` (default: Envoy's
    identity) may call; health checks stay open to any certificate of the CA. Plaintext
    (tests on loopback) has no peer identity, so no check."""
    if tls is None:
        return []
    allowed = list(allowed_peers) or [envoy_identity(tls.cert)]
    return [PeerIdentityInterceptor(allowed)]


def write_port(path: Path | None, port: int) -> None:
    """Write ``port`` to ``path`` atomically; nothing if ``path`` is None."""
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a partial file


def publication_config(launch: PublicationLaunch) -> PublicationConfig:
    """Publication's service configuration for ``launch``."""
    return PublicationConfig(
        db_path=launch.db,
        key_files=launch.key_files,
        passphrase_file=launch.passphrase_file,
        trust_root_dir=launch.trust_root_dir,
        aggregation_target=launch.aggregation,
        aggregation_tls=launch.aggregation_tls,
        aggregation_server_name=launch.aggregation_server_name,
        listen=launch.listen,
        listen_tls=launch.tls,
        interceptors=tuple(peer_interceptors(launch.tls, launch.allowed_peers)),
        interval_seconds=launch.interval_seconds,
        origin=launch.origin,
        bundle_dir=launch.bundle_dir,
        witnesses=tuple(
            WitnessEndpoint(key=CosignatureVerifier.from_key_string(vkey), url=url)
            for vkey, url in launch.witnesses
        ),
        witness_timeout_seconds=launch.witness_timeout_seconds,
        lease=launch.lease,
    )


async def _start(launch: ServiceLaunch) -> _Running:
    if isinstance(launch, PublicationLaunch):
        return await start_publication(publication_config(launch))
    interceptors = peer_interceptors(launch.tls, launch.allowed_peers)
    if isinstance(launch, IngestLaunch):
        return await start_ingest(
            election=load_election(launch.election),
            db_path=launch.db,
            address=launch.listen,
            tls=launch.tls,
            double_capture=not launch.single_capture,
            interceptors=interceptors,
        )
    if isinstance(launch, AggregationLaunch):
        return await start_aggregation(
            election=load_election(launch.election),
            db_path=launch.db,
            address=launch.listen,
            ingest_target=launch.ingest,
            tls=launch.tls,
            ingest_tls=launch.ingest_tls,
            ingest_server_name=launch.ingest_server_name,
            interceptors=interceptors,
        )
    raise TypeError(f"no service runs {type(launch).__name__}")


def expose_metrics(
    metrics: ServiceMetrics, *, listen: str | None, tls: TlsFiles | None
) -> MetricsServer | None:
    """Serve ``metrics`` on ``listen`` (None: not at all), with the expiry of the
    service's own certificate when it has one.

    Raises:
        OSError: the address cannot be bound.
    """
    if listen is None:
        return None
    if tls is not None:
        metrics.watch_certificate(tls.cert)
    return MetricsServer(metrics.registry, listen=listen)


async def _run(
    start: _Starter,
    port_file: Path | None,
    drain: float,
    grace: float,
    metrics: Callable[[ServiceMetrics], MetricsServer | None] = lambda _: None,
) -> None:
    service: _Running | None = None
    exposed: MetricsServer | None = None

    async def started() -> None:
        nonlocal service, exposed
        service = await start()
        exposed = metrics(service.metrics)
        write_port(port_file, service.port)

    async def stop() -> None:
        if service is not None:
            await service.stop(drain_seconds=drain, grace=grace)
        if exposed is not None:
            exposed.stop()

    async def ended() -> None:
        # Only a publisher ends by itself: when another takes the lease from it.
        if isinstance(service, PublicationService):
            await service.ended()
        else:
            await asyncio.Event().wait()

    await run_until_signalled(started, stop, ended=ended)
    if isinstance(service, PublicationService) and service.deposed.is_set():
        raise LeaseLostError("this publisher lost the publication lease and stopped")


class _Starter(Protocol):
    async def __call__(self) -> _Running: ...


async def serve(launch: ServiceLaunch) -> None:
    """Run the service ``launch`` describes until SIGTERM or SIGINT, then drain and stop.

    Raises:
        veritally.publication.errors.LeaseLostError: publication lost its lease to another
            publisher and stopped.
        veritally.publication.errors.PublicationError: publication refused to start (an
            unusable key, a trust root that does not vouch for the keys, a store that
            does not match its checkpoints).
        veritally.election.DefinitionError: the election definition is invalid.
        OSError: the address cannot be bound or a file cannot be read.
    """

    async def start() -> _Running:
        return await _start(launch)

    def metrics(registry: ServiceMetrics) -> MetricsServer | None:
        return expose_metrics(registry, listen=launch.metrics_listen, tls=launch.tls)

    await _run(start, launch.port_file, launch.drain_seconds, launch.grace_seconds, metrics)


async def run_publication(
    config: PublicationConfig,
    *,
    port_file: Path | None = None,
    drain_seconds: float = 0.0,
    grace_seconds: float = 5.0,
) -> None:
    """Run publication from a :class:`PublicationConfig` until SIGTERM or SIGINT, then
    drain and stop (for code that already holds one).

    Raises:
        KeyFileError: if a signing key is unusable (the service does not start).
        TrustRootFileError: if the trust root does not vouch for the keys.
        StoreIntegrityError: if the store does not match its checkpoints.
    """

    async def start() -> _Running:
        return await start_publication(config)

    await _run(start, port_file, drain_seconds, grace_seconds)
