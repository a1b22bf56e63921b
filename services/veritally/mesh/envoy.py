"""Render the Envoy configuration of a veritally deployment from a typed topology.

The topology is a multi-host deployment's: every service is a list of ``host:port``
endpoints (replicas) that Envoy dials over mutual TLS, external parties reach an edge
listener, and the services reach each other only through an internal mesh listener.
One function, :func:`render`, turns a :class:`Topology` into the bootstrap as plain
data; :func:`write` dumps it with PyYAML (and writes the REST view's descriptor set);
:func:`validate` runs ``envoy --mode validate`` on the result.

Who may call which method, the method table and the default budgets per role are not
here: they are the access policy, :mod:`veritally.mesh.policy`, the file to audit. This
module renders that policy into RBAC, routes and rate-limit descriptors and adds no
grant of its own; the names it used to define (``METHODS``, ``REST_ROUTES``,
``SERVICE_FULL_NAMES``, the request size limits, ``Method``) are re-exported.

What the rendered configuration enforces, listener by listener:

1. **edge** (capture centres, media, operators; gRPC over HTTP/2 only):
   (a) mTLS: a client certificate from our CA, URI SAN under ``spiffe://<td>/``, not on
   the CRL; (b) a token bucket per verified identity, one budget per role, answering
   RESOURCE_EXHAUSTED; (c) RBAC by identity and exact gRPC method path, everything
   else PERMISSION_DENIED; (d) request size limits per unary method, and compressed
   requests (``grpc-encoding`` other than ``identity``) answered UNIMPLEMENTED by Envoy
   so that every limit is on real bytes; (e) the verified identity
   forwarded in ``x-forwarded-client-cert`` (a client-supplied one is replaced);
   (f) a JSON access log line per call.
2. **mesh** (service to service): mTLS restricted to ``spiffe://<td>/service/``; RBAC:
   only aggregation may follow ingest's log, only publication may read aggregation;
   compressed requests refused as on the edge.
3. **rest** (optional): the read-only JSON view of PublicationService through the
   gRPC-JSON transcoder, for media without gRPC; same mTLS, rate limits and RBAC.
4. **clusters**: one per service, traffic (edge or mesh) and call kind (unary or
   stream), each with its own connection pool and circuit breaker; HTTP/2 with mTLS to
   every replica (Envoy presents ``service/envoy`` and checks the service's URI SAN),
   gRPC health checks, outlier detection; retries on UNAVAILABLE only for idempotent
   reads.
5. **connections**: on every listener a cap (``connection_limit`` filter) and a TLS
   handshake timeout (``transport_socket_connect_timeout``); a global cap (overload
   manager) above their sum; Envoy's file-descriptor limit above that
   (:attr:`Limits.open_files_needed`, raised by ``veritally.mesh.process``).
6. **admin** on loopback only.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from veritally.mesh.policy import (
    BUDGETS,
    EDGE_GRANTS,
    HEALTH_CHECK_PATH,
    INGEST_MAX_REQUEST_BYTES,
    MESH_GRANTS,
    METHODS,
    READ_MAX_REQUEST_BYTES,
    REST_GRANTS,
    REST_ROUTES,
    SERVICE_FULL_NAMES,
    Grants,
    Method,
)
from veritally.pki import (
    ENVOY_NAME,
    ROLE_CAPTURE,
    ROLE_MEDIA,
    ROLE_OPERATOR,
    ROLE_SERVICE,
    Pki,
    PkiLayout,
    layout,
)

__all__ = [
    "DEFAULT_BASE_PORT",
    "INGEST_MAX_REQUEST_BYTES",
    "METHODS",
    "READ_MAX_REQUEST_BYTES",
    "REST_ROUTES",
    "SERVICE_FULL_NAMES",
    "CircuitBreaker",
    "Endpoint",
    "EnvoyConfigError",
    "HealthCheck",
    "Limits",
    "MeshTls",
    "Method",
    "TokenBucket",
    "Topology",
    "build_descriptor_set",
    "default_topology",
    "envoy_binary",
    "reference_topology",
    "render",
    "render_ca_secret",
    "render_ca_secret_yaml",
    "render_yaml",
    "validate",
    "write",
    "write_reference",
]

JsonDict = dict[str, Any]

# gRPC status of a compressed request: UNIMPLEMENTED is what gRPC itself answers for a
# message encoding the server does not support.
_GRPC_UNIMPLEMENTED = "12"

# First port of the single-machine layout (see default_topology).
DEFAULT_BASE_PORT = 8440

_BY_NAME = {(m.service, m.name): m for m in METHODS}
_BY_PATH = {m.path: m for m in METHODS}


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A ``host:port``; host is a DNS name or an IP address.

    Raises:
        ValueError: empty host or a port outside 0..65535 (0 only where a caller
            fills it in later).
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("endpoint host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"endpoint port must be in 0..65535, got {self.port}")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``host:port`` → Endpoint.

        Raises:
            ValueError: not ``host:port``.
        """
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def is_loopback(self) -> bool:
        """Whether the host is a loopback address or ``localhost``."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, kw_only=True)
class MeshTls:
    """The files Envoy needs for mutual TLS, and the trust domain it checks.

    Attributes:
        trust_domain: SPIFFE trust domain of every accepted identity.
        ca: the CA certificate every peer must chain to.
        cert: Envoy's own certificate (``service/envoy``), used on every listener and
            as the client certificate towards the services.
        key: its private key.
        crl: the CA's revocation list; None to render without revocation checking.
        sds_file: where to write the CA and CRL as a file-based SDS resource, so that
            Envoy reloads them when the CRL is replaced (no restart); None to embed them
            statically (a new CRL then needs an Envoy restart).
    """

    trust_domain: str
    ca: Path
    cert: Path
    key: Path
    crl: Path | None = None
    sds_file: Path | None = None

    @classmethod
    def from_layout(
        cls,
        files: PkiLayout,
        *,
        trust_domain: str,
        with_crl: bool = True,
        sds_file: Path | None = None,
    ) -> MeshTls:
        """Envoy's files in a PKI directory laid out by :mod:`veritally.pki`, which
        need not exist yet (for rendering a reference configuration)."""
        return cls(
            trust_domain=trust_domain,
            ca=files.ca_cert,
            cert=files.cert(ROLE_SERVICE, ENVOY_NAME),
            key=files.key(ROLE_SERVICE, ENVOY_NAME),
            crl=files.crl if with_crl else None,
            sds_file=sds_file,
        )

    @classmethod
    def from_pki(cls, pki: Pki, *, with_crl: bool = True, sds_file: Path | None = None) -> MeshTls:
        """Envoy's files from a PKI directory (see the attributes for ``sds_file``).

        Raises:
            PkiError: the PKI has no ``envoy`` identity.
        """
        identity = pki.identity(ENVOY_NAME)
        return cls(
            trust_domain=pki.trust_domain,
            ca=pki.ca_cert,
            cert=identity.cert,
            key=identity.key,
            crl=pki.crl if with_crl else None,
            sds_file=sds_file,
        )

    def spiffe(self, role: str, name: str | None = None) -> str:
        """``spiffe://<td>/<role>/`` or ``spiffe://<td>/<role>/<name>``."""
        base = f"spiffe://{self.trust_domain}/{role}/"
        return base if name is None else base + name


@dataclass(frozen=True, kw_only=True)
class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled by ``per_second`` each second.

    Raises:
        ValueError: non-positive sizes.
    """

    burst: int
    per_second: int

    def __post_init__(self) -> None:
        if self.burst <= 0 or self.per_second <= 0:
            raise ValueError("token bucket sizes must be positive")

    def render(self) -> JsonDict:
        """Envoy's ``TokenBucket``: refilled every 1 s by ``per_second``."""
        return {"max_tokens": self.burst, "tokens_per_fill": self.per_second, "fill_interval": "1s"}


def _budget(role: str) -> TokenBucket:
    """The access policy's default budget of ``role`` as a token bucket."""
    budget = BUDGETS[role]
    return TokenBucket(burst=budget.burst, per_second=budget.per_second)


@dataclass(frozen=True, kw_only=True)
class CircuitBreaker:
    """Envoy's bounds on what it asks of one upstream cluster (counts, all replicas of
    the cluster together); overflow answers UNAVAILABLE at once.

    Attributes:
        max_connections: upstream connections.
        max_pending_requests: requests waiting for a connection or stream.
        max_requests: requests (streams) in flight.
        max_retries: retries in flight.

    Raises:
        ValueError: a negative bound, or no request allowed.
    """

    max_connections: int
    max_pending_requests: int
    max_requests: int
    max_retries: int

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_pending_requests, self.max_requests) <= 0:
            raise ValueError("circuit breaker bounds must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")

    def render(self) -> JsonDict:
        """Envoy's ``circuit_breakers`` for the DEFAULT priority."""
        return {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": self.max_connections,
                    "max_pending_requests": self.max_pending_requests,
                    "max_requests": self.max_requests,
                    "max_retries": self.max_retries,
                }
            ]
        }


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-identity request budgets and connection-level limits.

    Attributes:
        media: per outlet, calls (a stream counts once when opened); by default the
            media budget of the access policy (:data:`veritally.mesh.policy.BUDGETS`,
            which says why).
        capture: per capture centre, calls; by default the policy's capture budget.
        operator: per operator, calls; by default the policy's operator budget.
        total: every call through the listener, all identities together. Envoy consumes
            a token from this bucket as well as from the caller's own, so it caps what
            the services behind it are asked to do; sized well above the sum of honest
            use and well below what a flood of many identities could send.
        max_identities: token buckets Envoy keeps per role (LRU beyond that). Above the
            number of accredited parties with a wide margin.
        max_concurrent_streams: HTTP/2 streams per downstream connection.
        stream_idle_timeout_s: a stream with no traffic for this long is closed
            (seconds). WatchCuts receives a heartbeat cut every publication interval
            (seconds), StreamRecords a record or a keep-alive well within this.
        unary_timeout_s: route timeout of unary calls (seconds).
        max_connections: downstream connections Envoy accepts in total (overload
            manager), so a flood cannot exhaust file descriptors. At least the sum of
            the per-listener caps below, so that a flood on one listener meets its own
            cap first and never the global one the others share.
        max_connection_duration_s: a connection is drained after this long (seconds);
            bounds how long a certificate revoked mid-connection keeps working.
        tls_handshake_timeout_s: a downstream connection that has not completed its
            TLS handshake this long after it was accepted is closed (seconds;
            ``transport_socket_connect_timeout``). A handshake takes milliseconds; the
            margin covers a loaded machine and a slow link. Without it, TCP connections
            that never start TLS were held until Envoy ran out of file descriptors.
        edge_max_connections: connections the edge listener holds at once (the
            ``connection_limit`` filter; the next is closed at once). Thousands of
            newsroom and capture-centre connections with a wide margin.
        rest_max_connections: the same for the JSON view (media without gRPC only).
        mesh_max_connections: the same for the internal listener: three services
            hold a few connections each, so a small cap; a flood of the edge never
            reaches it.
        open_files_headroom: file descriptors Envoy needs beside downstream
            connections: upstream connections (every cluster's breaker
            ``max_connections`` per replica), the configuration, certificates, logs
            and the admin listener. Envoy's RLIMIT_NOFILE is raised to
            :attr:`open_files_needed` at start, or Envoy is not started.
        edge_unary: circuit breaker of each service's cluster for unary calls from
            the edge (and the JSON view).
        edge_stream: circuit breaker of each service's cluster for streams from the
            edge (WatchCuts, SubmitActas). Each service caps streams per identity
            (veritally.streams, 8 by default), so one identity holds only a few of
            these; sized for about a thousand identities each at its cap.
        mesh_unary: circuit breaker of each service's cluster for unary calls between
            services (publication's GetResultsBlob every cut).
        mesh_stream: circuit breaker of each service's cluster for the followers'
            streams (StreamRecords, StreamAggregatedRecords): one per follower, a few
            more while one reconnects. No edge call can take its slots.

    Raises:
        ValueError: per-listener caps whose sum exceeds ``max_connections``, or a
            non-positive cap or timeout.
    """

    media: TokenBucket = field(default_factory=lambda: _budget(ROLE_MEDIA))
    capture: TokenBucket = field(default_factory=lambda: _budget(ROLE_CAPTURE))
    operator: TokenBucket = field(default_factory=lambda: _budget(ROLE_OPERATOR))
    total: TokenBucket = field(default_factory=lambda: TokenBucket(burst=4000, per_second=2000))
    max_identities: int = 10_000
    max_concurrent_streams: int = 100
    stream_idle_timeout_s: int = 300
    unary_timeout_s: int = 15
    max_connections: int = 16_000
    max_connection_duration_s: int = 900
    tls_handshake_timeout_s: float = 10.0
    edge_max_connections: int = 12_000
    rest_max_connections: int = 2_000
    mesh_max_connections: int = 1_000
    open_files_headroom: int = 2_048
    edge_unary: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(
            max_connections=64, max_pending_requests=1024, max_requests=4096, max_retries=16
        )
    )
    edge_stream: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(
            max_connections=64, max_pending_requests=1024, max_requests=8192, max_retries=0
        )
    )
    mesh_unary: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(
            max_connections=16, max_pending_requests=64, max_requests=256, max_retries=4
        )
    )
    mesh_stream: CircuitBreaker = field(
        default_factory=lambda: CircuitBreaker(
            max_connections=16, max_pending_requests=16, max_requests=64, max_retries=0
        )
    )

    def __post_init__(self) -> None:
        caps = (self.edge_max_connections, self.rest_max_connections, self.mesh_max_connections)
        if min(caps) <= 0 or self.tls_handshake_timeout_s <= 0 or self.open_files_headroom < 0:
            raise ValueError("connection caps and the handshake timeout must be positive")
        if sum(caps) > self.max_connections:
            raise ValueError(
                f"per-listener connection caps {caps} add up to more than max_connections "
                f"({self.max_connections}): a flood of one listener would reach the global "
                "cap that the others share"
            )

    @property
    def open_files_needed(self) -> int:
        """The RLIMIT_NOFILE Envoy needs: every downstream connection it may accept
        plus :attr:`open_files_headroom`."""
        return self.max_connections + self.open_files_headroom


@dataclass(frozen=True, kw_only=True)
class HealthCheck:
    """Active gRPC health checking of every replica (seconds and counts).

    Attributes:
        interval_s: between checks of a replica in use.
        no_traffic_interval_s: between checks of a replica with no traffic; kept short
            so that a replica that failed its first check recovers fast.
        timeout_s: a check that takes longer fails.
        unhealthy_threshold: consecutive failures before a replica leaves rotation; a
            draining service waits interval × this before stopping.
        healthy_threshold: consecutive successes before it returns.
    """

    interval_s: float = 2.0
    no_traffic_interval_s: float = 2.0
    timeout_s: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1


@dataclass(frozen=True, kw_only=True)
class Topology:
    """Everything the rendered configuration depends on.

    Attributes:
        tls: certificate files and trust domain.
        edge: listener for external parties (gRPC, mTLS).
        mesh: listener for service-to-service calls (gRPC, mTLS, services only).
        admin: Envoy's admin interface; must be loopback.
        services: service name → replicas (``ingest``, ``aggregation``,
            ``publication``).
        rest: listener for the read-only JSON view; None for none.
        descriptor_set: where the REST view's protobuf descriptor set is (written by
            :func:`write`); required when ``rest`` is set.
        access_log: JSON access log file.
        limits: rate and size limits.
        health: health-check settings.

    Raises:
        ValueError: a non-loopback admin, a missing or unknown service, no replicas, or
            a REST listener without a descriptor set.
    """

    tls: MeshTls
    edge: Endpoint
    mesh: Endpoint
    admin: Endpoint
    services: Mapping[str, Sequence[Endpoint]]
    rest: Endpoint | None = None
    descriptor_set: Path | None = None
    access_log: Path = Path("/dev/stdout")
    limits: Limits = field(default_factory=Limits)
    health: HealthCheck = field(default_factory=HealthCheck)

    def __post_init__(self) -> None:
        if not self.admin.is_loopback():
            # The admin interface can drain listeners and dump certificates: never
            # reachable from the network.
            raise ValueError(f"admin must listen on loopback, got {self.admin}")
        for name in SERVICE_FULL_NAMES:
            if not self.services.get(name):
                raise ValueError(f"topology needs at least one endpoint for {name}")
        unknown = set(self.services) - set(SERVICE_FULL_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}")
        if self.rest is not None and self.descriptor_set is None:
            raise ValueError("a REST listener needs descriptor_set")


def default_topology(
    *,
    pki_dir: Path,
    trust_domain: str,
    state_dir: Path,
    with_crl: bool = True,
    base_port: int = DEFAULT_BASE_PORT,
) -> Topology:
    """The single-machine layout of ``veritally up``: every listener and service on
    127.0.0.1 from ``base_port`` (edge +3, mesh +4, rest +5, admin +1, ingest +10,
    aggregation +11, publication +12). The topology is still the multi-host one; only
    the addresses are local. Paths are built from ``pki_dir`` and ``state_dir`` as
    given (relative ones stay relative, as in the committed reference rendering).
    """

    def at(offset: int) -> Endpoint:
        return Endpoint(host="127.0.0.1", port=base_port + offset)

    return Topology(
        tls=MeshTls.from_layout(
            layout(pki_dir),
            trust_domain=trust_domain,
            with_crl=with_crl,
            sds_file=state_dir / "envoy" / "ca-secret.yaml",
        ),
        edge=at(3),
        mesh=at(4),
        rest=at(5),
        admin=at(1),
        services={"ingest": [at(10)], "aggregation": [at(11)], "publication": [at(12)]},
        descriptor_set=state_dir / "envoy" / "publication.binpb",
        access_log=state_dir / "envoy" / "access.log",
    )


# The committed reference rendering (envoy/envoy.yaml) is the default topology with the
# paths `make demo` uses, relative to the repository root.
REFERENCE_STATE_DIR = Path("state")
REFERENCE_TRUST_DOMAIN = "veritally.example"


def reference_topology() -> Topology:
    """The topology of the committed reference rendering in ``envoy/``."""
    return default_topology(
        pki_dir=REFERENCE_STATE_DIR / "pki",
        trust_domain=REFERENCE_TRUST_DOMAIN,
        state_dir=REFERENCE_STATE_DIR,
    )


def write_reference(directory: Path) -> list[Path]:
    """Write the reference rendering (``envoy.yaml``, ``ca-secret.yaml``) into
    ``directory``; the descriptor set is produced by ``veritally envoy render``."""
    topology = reference_topology()
    assert topology.tls.sds_file is not None  # default_topology always sets it
    config = directory / "envoy.yaml"
    secret = directory / topology.tls.sds_file.name
    _atomic_write(config, render_yaml(topology).encode())
    _atomic_write(secret, render_ca_secret_yaml(topology.tls).encode())
    return [config, secret]


# --------------------------------------------------------------------------------------
# pieces


def _seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _address(ep: Endpoint) -> JsonDict:
    return {"socket_address": {"address": ep.host, "port_value": ep.port}}


def _file(path: Path) -> JsonDict:
    return {"filename": str(path)}


_CA_SDS_NAME = "veritally_ca"


def _validation_context(tls: MeshTls) -> JsonDict:
    """The CA and CRL part of a downstream validation context."""
    ctx: JsonDict = {"trusted_ca": _file(tls.ca)}
    if tls.crl is not None:
        ctx["crl"] = _file(tls.crl)
        # Our CA is the trust anchor and issues every leaf: only leaves are revocable.
        ctx["only_verify_leaf_cert_crl"] = True
    return ctx


def render_ca_secret(tls: MeshTls) -> JsonDict:
    """The SDS resource file holding the CA and CRL (see :attr:`MeshTls.sds_file`)."""
    return {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": _CA_SDS_NAME,
                "validation_context": _validation_context(tls),
            }
        ]
    }


def _downstream_validation(tls: MeshTls, *, san_prefix: str) -> tuple[str, JsonDict]:
    sans = [{"san_type": "URI", "matcher": {"prefix": san_prefix}}]
    if tls.sds_file is None:
        return "validation_context", {
            **_validation_context(tls),
            "match_typed_subject_alt_names": sans,
        }
    # CA and CRL come from a file-based SDS resource. Envoy re-reads it, and the files it
    # names, whenever a file is renamed into the watched directory; `veritally pki
    # revoke` writes the new CRL that way, so a revocation applies to new connections
    # without a restart. The SAN rule stays here, per listener.
    watched = (tls.crl if tls.crl is not None else tls.ca).parent
    return "combined_validation_context", {
        "default_validation_context": {"match_typed_subject_alt_names": sans},
        "validation_context_sds_secret_config": {
            "name": _CA_SDS_NAME,
            "sds_config": {
                "path_config_source": {
                    "path": str(tls.sds_file),
                    "watched_directory": {"path": str(watched)},
                },
                "resource_api_version": "V3",
            },
        },
    }


def _downstream_tls(tls: MeshTls, *, san_prefix: str, alpn: Sequence[str]) -> JsonDict:
    key, validation = _downstream_validation(tls, san_prefix=san_prefix)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": list(alpn),
                "tls_certificates": [
                    {"certificate_chain": _file(tls.cert), "private_key": _file(tls.key)}
                ],
                key: validation,
            },
        },
    }


def _upstream_tls(tls: MeshTls, service: str) -> JsonDict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".UpstreamTlsContext",
            "sni": service,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "alpn_protocols": ["h2"],
                "tls_certificates": [
                    {"certificate_chain": _file(tls.cert), "private_key": _file(tls.key)}
                ],
                # The service must prove it is THAT service, not just any holder of a
                # certificate from our CA.
                "validation_context": {
                    "trusted_ca": _file(tls.ca),
                    "match_typed_subject_alt_names": [
                        {
                            "san_type": "URI",
                            "matcher": {"exact": tls.spiffe(ROLE_SERVICE, service)},
                        }
                    ],
                },
            },
        },
    }


def _access_log(path: Path, listener: str) -> list[JsonDict]:
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3"
                ".FileAccessLog",
                "path": str(path),
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "listener": listener,
                        "peer": "%DOWNSTREAM_PEER_URI_SAN%",
                        "client": "%DOWNSTREAM_REMOTE_ADDRESS%",
                        "method": "%REQ(:PATH)%",
                        "http_status": "%RESPONSE_CODE%",
                        "grpc_status": "%GRPC_STATUS(NUMBER)%",
                        "flags": "%RESPONSE_FLAGS%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "duration_ms": "%DURATION%",
                        "bytes_in": "%BYTES_RECEIVED%",
                        "bytes_out": "%BYTES_SENT%",
                        "upstream": "%UPSTREAM_HOST%",
                    },
                },
            },
        }
    ]


def _path_rule(path: str) -> JsonDict:
    return {"url_path": {"path": {"exact": path}}}


def _rbac_filter(policies: Mapping[str, tuple[str, Sequence[str]]]) -> JsonDict:
    """An RBAC filter that ALLOWs ``policy -> (principal prefix, method paths)`` and
    denies everything else (PERMISSION_DENIED)."""
    rendered: JsonDict = {}
    for name, (principal, paths) in policies.items():
        rendered[name] = {
            "permissions": [{"or_rules": {"rules": [_path_rule(p) for p in paths]}}],
            "principals": [
                {
                    "authenticated": {
                        "principal_name": (
                            {"exact": principal}
                            if not principal.endswith("/")
                            else {"prefix": principal}
                        )
                    }
                }
            ],
        }
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": rendered},
        },
    }


def _rate_limit_filter(tls: MeshTls, limits: Limits, stat_prefix: str) -> JsonDict:
    """One token bucket per verified identity, budget by role.

    The descriptor is built from the verified peer certificate only (CEL), never from a
    header: ``(role, <uri san>)``. The role entry selects the budget; the wildcard URI
    entry gives each identity its own bucket (up to ``max_identities``).
    """
    role_expr = " : ".join(
        [
            f"connection.uri_san_peer_certificate.startsWith('{tls.spiffe(role)}') ? '{role}'"
            for role in (ROLE_MEDIA, ROLE_CAPTURE, ROLE_OPERATOR, ROLE_SERVICE)
        ]
        + ["'other'"]
    )
    budgets = {
        ROLE_MEDIA: limits.media,
        ROLE_CAPTURE: limits.capture,
        ROLE_OPERATOR: limits.operator,
    }
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
            ".LocalRateLimit",
            "stat_prefix": stat_prefix,
            # Shared by every call (see Limits.total); the per-identity buckets below
            # come on top of it.
            "token_bucket": limits.total.render(),
            "filter_enabled": {
                "runtime_key": f"{stat_prefix}.enabled",
                "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            },
            "filter_enforced": {
                "runtime_key": f"{stat_prefix}.enforced",
                "default_value": {"numerator": 100, "denominator": "HUNDRED"},
            },
            "rate_limited_as_resource_exhausted": True,
            "max_dynamic_descriptors": limits.max_identities * len(budgets),
            "descriptors": [
                {
                    "entries": [{"key": "role", "value": role}, {"key": "peer", "value": ""}],
                    "token_bucket": bucket.render(),
                }
                for role, bucket in budgets.items()
            ],
            "rate_limits": [
                {
                    "actions": [
                        {
                            "extension": {
                                "name": "envoy.rate_limit_descriptors.expr",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions"
                                    ".rate_limit_descriptors.expr.v3.Descriptor",
                                    "descriptor_key": "role",
                                    "text": role_expr,
                                },
                            }
                        },
                        {
                            "extension": {
                                "name": "envoy.rate_limit_descriptors.expr",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions"
                                    ".rate_limit_descriptors.expr.v3.Descriptor",
                                    "descriptor_key": "peer",
                                    "text": "connection.uri_san_peer_certificate",
                                },
                            }
                        },
                    ]
                }
            ],
        },
    }


def _buffer_filter() -> JsonDict:
    # The largest size any route allows; each route narrows it (or disables buffering
    # for streams, whose messages the services bound themselves).
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": INGEST_MAX_REQUEST_BYTES,
        },
    }


_BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"


def _route(method: Method, *, cluster: str, limits: Limits, path: str | None = None) -> JsonDict:
    action: JsonDict = {"cluster": cluster}
    per_filter: JsonDict
    if method.streaming:
        # Streams live as long as the election night: no route timeout; the stream idle
        # timeout of the connection manager still closes dead ones.
        action["timeout"] = "0s"
        action["idle_timeout"] = _seconds(limits.stream_idle_timeout_s)
        per_filter = {"@type": _BUFFER_PER_ROUTE, "disabled": True}
    else:
        action["timeout"] = _seconds(limits.unary_timeout_s)
        per_filter = {
            "@type": _BUFFER_PER_ROUTE,
            "buffer": {"max_request_bytes": method.max_request_bytes},
        }
    if method.idempotent:
        action["retry_policy"] = {
            # Only when the service answered UNAVAILABLE as trailers-only (nothing was
            # sent yet) or the request never reached it: a read is safe to repeat.
            "retry_on": "unavailable,connect-failure,refused-stream,reset",
            "num_retries": 2,
            "per_try_timeout": _seconds(max(1.0, limits.unary_timeout_s / 3)),
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host"
                        ".previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 3,
        }
    elif not method.streaming:
        # Writes are retried only when the request provably never reached a service
        # (no connection, or the stream refused before any processing).
        action["retry_policy"] = {"retry_on": "connect-failure,refused-stream", "num_retries": 2}
    return {
        "name": method.path,
        "match": {"path": path or method.path, "grpc": {}},
        "route": action,
        "typed_per_filter_config": {"envoy.filters.http.buffer": per_filter},
    }


def _compressed_request_route() -> JsonDict:
    """First route of the gRPC listeners: a request whose ``grpc-encoding`` is anything
    but ``identity`` is answered UNIMPLEMENTED by Envoy itself, before any buffering.

    A compressed message is bounded by Envoy's buffer limit *before* inflation only: 65
    KiB of gzip inflate to 64 MiB in the service. Our clients never compress (actas are
    small); refusing compression keeps every size limit a limit on real bytes.
    """
    return {
        "name": "compressed-request",
        "match": {
            "prefix": "/",
            "headers": [
                {"name": "grpc-encoding", "present_match": True},
                {
                    "name": "grpc-encoding",
                    "string_match": {"exact": "identity"},
                    "invert_match": True,
                },
            ],
        },
        # A trailers-only gRPC answer: status and message in the response headers.
        "direct_response": {"status": 200},
        "response_headers_to_add": [
            {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for key, value in (
                ("content-type", "application/grpc"),
                ("grpc-status", _GRPC_UNIMPLEMENTED),
                ("grpc-message", "compressed requests are refused; send grpc-encoding identity"),
                ("grpc-accept-encoding", "identity"),
            )
        ],
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {"@type": _BUFFER_PER_ROUTE, "disabled": True}
        },
    }


def _health_route(limits: Limits) -> JsonDict:
    return {
        "name": HEALTH_CHECK_PATH,
        "match": {"path": HEALTH_CHECK_PATH, "grpc": {}},
        "route": {
            "cluster": _cluster_name("ingest", _EDGE, streaming=False),
            "timeout": _seconds(limits.unary_timeout_s),
        },
        "typed_per_filter_config": {
            "envoy.filters.http.buffer": {
                "@type": _BUFFER_PER_ROUTE,
                "buffer": {"max_request_bytes": READ_MAX_REQUEST_BYTES},
            }
        },
    }


def _hcm(
    *,
    stat_prefix: str,
    topology: Topology,
    routes: list[JsonDict],
    filters: list[JsonDict],
    codec: str = "HTTP2",
) -> JsonDict:
    limits = topology.limits
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network"
            ".http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "codec_type": codec,
            "use_remote_address": True,
            # Replace whatever x-forwarded-client-cert a client sent with the identity
            # Envoy verified, so services can trust the header.
            "forward_client_cert_details": "SANITIZE_SET",
            "set_current_client_cert_details": {"uri": True},
            "stream_idle_timeout": _seconds(limits.stream_idle_timeout_s),
            "common_http_protocol_options": {
                # Idle connections are closed after an hour (seconds).
                "idle_timeout": "3600s",
                # Every connection is drained (GOAWAY) after this long, so that a
                # certificate revoked while connected stops working within it: the
                # CRL is checked at the handshake only. gRPC clients reconnect on their
                # own (seconds).
                "max_connection_duration": _seconds(limits.max_connection_duration_s),
                "headers_with_underscores_action": "REJECT_REQUEST",
            },
            "http2_protocol_options": {
                "max_concurrent_streams": limits.max_concurrent_streams,
                # 64 KiB per stream, 1 MiB per connection (bytes): flow control keeps a
                # slow reader from making Envoy buffer a lot.
                "initial_stream_window_size": 65536,
                "initial_connection_window_size": 1048576,
            },
            "access_log": _access_log(topology.access_log, stat_prefix),
            "local_reply_config": {
                "mappers": [
                    {
                        # The buffer filter refuses an oversized request with HTTP 413,
                        # which gRPC would read as UNKNOWN; a size limit is
                        # RESOURCE_EXHAUSTED (8) in gRPC's terms.
                        "filter": {
                            "status_code_filter": {
                                "comparison": {
                                    "op": "EQ",
                                    "value": {
                                        "default_value": 413,
                                        "runtime_key": f"{stat_prefix}.payload_too_large",
                                    },
                                }
                            }
                        },
                        "headers_to_add": [
                            {
                                "header": {"key": "grpc-status", "value": "8"},
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            }
                        ],
                    }
                ]
            },
            "route_config": {
                "name": stat_prefix,
                "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                *filters,
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3"
                        ".Router"
                    },
                },
            ],
        },
    }


def _listener(
    name: str,
    ep: Endpoint,
    hcm: JsonDict,
    transport: JsonDict,
    *,
    limits: Limits,
    max_connections: int,
) -> JsonDict:
    connection_limit = {
        # First in the chain: it counts a connection when it is accepted, before the
        # TLS handshake, and closes the one over the cap at once.
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network"
            ".connection_limit.v3.ConnectionLimit",
            "stat_prefix": f"{name}_connection_limit",
            "max_connections": max_connections,
        },
    }
    return {
        "name": name,
        "stat_prefix": name,
        "address": _address(ep),
        # Bytes buffered per connection before reads pause (flow control), 1 MiB.
        "per_connection_buffer_limit_bytes": 1048576,
        "filter_chains": [
            {
                "filters": [connection_limit, hcm],
                "transport_socket": transport,
                # A connection that has not finished its TLS handshake by then is
                # closed: TCP connections that never start TLS cannot pile up.
                "transport_socket_connect_timeout": _seconds(limits.tls_handshake_timeout_s),
            }
        ],
    }


# Upstream clusters: one per service, per traffic (edge: external parties; mesh: the
# services themselves) and per call kind (unary or stream), each with its own
# connection pool and circuit breaker, so that streams held open by one party cannot
# fill the breaker that unary calls or the followers' mesh streams need.
_EDGE, _MESH = "edge", "mesh"


def _cluster_name(service: str, traffic: str, *, streaming: bool) -> str:
    return f"{service}_{traffic}_{'stream' if streaming else 'unary'}"


def _upstream_clusters() -> list[tuple[str, str, bool]]:
    """(service, traffic, streaming) of every cluster a route uses, in a stable order."""
    keys: set[tuple[str, str, bool]] = {("ingest", _EDGE, False)}  # the health route
    for traffic, grants in ((_EDGE, EDGE_GRANTS), (_MESH, MESH_GRANTS)):
        for granted in grants.values():
            for path in granted:
                method = _BY_PATH.get(path)
                if method is not None:  # not the health check, routed to ingest above
                    keys.add((method.service, traffic, method.streaming))
    order = list(SERVICE_FULL_NAMES)
    return sorted(keys, key=lambda k: (order.index(k[0]), k[1], k[2]))


def _breaker(limits: Limits, traffic: str, *, streaming: bool) -> CircuitBreaker:
    if traffic == _EDGE:
        return limits.edge_stream if streaming else limits.edge_unary
    return limits.mesh_stream if streaming else limits.mesh_unary


def _cluster(
    name: str,
    service: str,
    endpoints: Sequence[Endpoint],
    topology: Topology,
    breaker: CircuitBreaker,
) -> JsonDict:
    hc = topology.health
    return {
        "name": name,
        # STRICT_DNS: replicas may be host names in a multi-host deployment; each name
        # is re-resolved and every address it yields becomes a host.
        "type": "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3"
                ".HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Detect a dead replica on an idle connection (seconds).
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                    }
                },
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _address(ep)}} for ep in endpoints]}
            ],
        },
        "transport_socket": _upstream_tls(topology.tls, service),
        "health_checks": [
            {
                "timeout": _seconds(hc.timeout_s),
                "interval": _seconds(hc.interval_s),
                "no_traffic_interval": _seconds(hc.no_traffic_interval_s),
                "unhealthy_threshold": hc.unhealthy_threshold,
                "healthy_threshold": hc.healthy_threshold,
                "grpc_health_check": {"service_name": SERVICE_FULL_NAMES[service]},
            }
        ],
        "outlier_detection": {
            # Eject a replica after 5 consecutive failures (UNAVAILABLE and resets
            # count), for 15 s doubling on each repeat; never more than half of them.
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 5,
            "interval": "5s",
            "base_ejection_time": "15s",
            "max_ejection_percent": 50,
        },
        # Bounds on what this cluster (one kind of traffic) asks of a service:
        # connections, queued requests, requests in flight, concurrent retries.
        "circuit_breakers": breaker.render(),
        # Below this share of healthy replicas Envoy would spread load over unhealthy
        # ones too; 0 means it never routes to a replica known to be down.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
    }


def _policies(tls: MeshTls, grants: Grants) -> dict[str, tuple[str, list[str]]]:
    """The RBAC policies of a listener: caller -> (its SPIFFE URI or prefix, the method
    paths it is granted)."""
    return {
        caller.policy: (tls.spiffe(caller.role, caller.name), list(paths))
        for caller, paths in grants.items()
    }


def _served(grants: Grants) -> set[str]:
    return {path for paths in grants.values() for path in paths}


def _edge_listener(topology: Topology) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    served = _served(EDGE_GRANTS)
    routes = [_compressed_request_route()]
    routes += [
        _route(m, cluster=_cluster_name(m.service, _EDGE, streaming=m.streaming), limits=limits)
        for m in METHODS
        if m.path in served
    ]
    if HEALTH_CHECK_PATH in served:
        routes.append(_health_route(limits))
    policies = _policies(tls, EDGE_GRANTS)
    hcm = _hcm(
        stat_prefix="edge",
        topology=topology,
        routes=routes,
        filters=[
            # Rate limit first: a flood is cut by identity before anything else runs.
            _rate_limit_filter(tls, limits, "edge_rate_limit"),
            _rbac_filter(policies),
            _buffer_filter(),
        ],
    )
    transport = _downstream_tls(tls, san_prefix=f"spiffe://{tls.trust_domain}/", alpn=["h2"])
    return _listener(
        "edge",
        topology.edge,
        hcm,
        transport,
        limits=limits,
        max_connections=limits.edge_max_connections,
    )


def _mesh_listener(topology: Topology) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    served = _served(MESH_GRANTS)
    routes = [_compressed_request_route()]
    routes += [
        _route(m, cluster=_cluster_name(m.service, _MESH, streaming=m.streaming), limits=limits)
        for m in METHODS
        if m.path in served
    ]
    policies = _policies(tls, MESH_GRANTS)
    hcm = _hcm(
        stat_prefix="mesh",
        topology=topology,
        routes=routes,
        filters=[_rbac_filter(policies), _buffer_filter()],
    )
    transport = _downstream_tls(tls, san_prefix=tls.spiffe(ROLE_SERVICE), alpn=["h2"])
    return _listener(
        "mesh",
        topology.mesh,
        hcm,
        transport,
        limits=limits,
        max_connections=limits.mesh_max_connections,
    )


def _rest_listener(topology: Topology, rest: Endpoint) -> JsonDict:
    tls, limits = topology.tls, topology.limits
    assert topology.descriptor_set is not None  # checked in Topology.__post_init__
    methods = [_BY_NAME[("publication", n)] for n in REST_ROUTES]
    cluster = _cluster_name("publication", _EDGE, streaming=False)
    routes = [_route(m, cluster=cluster, limits=limits) for m in methods]
    for r in routes:
        # The transcoder turns the JSON GET into a gRPC call before routing; the match
        # on the gRPC content type would refuse the original request otherwise.
        r["match"].pop("grpc")
        r["route"].pop("retry_policy", None)
    transcoder = {
        "name": "envoy.filters.http.grpc_json_transcoder",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http"
            ".grpc_json_transcoder.v3.GrpcJsonTranscoder",
            "proto_descriptor": str(topology.descriptor_set),
            "services": [SERVICE_FULL_NAMES["publication"]],
            "print_options": {
                "add_whitespace": False,
                "always_print_primitive_fields": True,
                "preserve_proto_field_names": True,
            },
            "request_validation_options": {
                # Only the mapped GETs exist on this listener.
                "reject_unknown_method": True,
                "reject_unknown_query_parameters": True,
            },
            "convert_grpc_status": True,
        },
    }
    policies = _policies(tls, REST_GRANTS)
    hcm = _hcm(
        stat_prefix="rest",
        topology=topology,
        routes=routes,
        codec="AUTO",
        filters=[
            _rate_limit_filter(tls, limits, "rest_rate_limit"),
            # After the transcoder, so that RBAC sees the gRPC method path.
            transcoder,
            _rbac_filter(policies),
        ],
    )
    transport = _downstream_tls(
        tls, san_prefix=f"spiffe://{tls.trust_domain}/", alpn=["h2", "http/1.1"]
    )
    return _listener(
        "rest", rest, hcm, transport, limits=limits, max_connections=limits.rest_max_connections
    )


def render(topology: Topology) -> JsonDict:
    """The Envoy bootstrap for ``topology``, as plain data (dump it with PyYAML).

    Pure: reads no files (the descriptor set is referenced by path).
    """
    listeners = [_edge_listener(topology), _mesh_listener(topology)]
    if topology.rest is not None:
        listeners.append(_rest_listener(topology, topology.rest))
    clusters = [
        _cluster(
            _cluster_name(service, traffic, streaming=streaming),
            service,
            topology.services[service],
            topology,
            _breaker(topology.limits, traffic, streaming=streaming),
        )
        for service, traffic, streaming in _upstream_clusters()
    ]
    return {
        "node": {"id": "veritally-envoy", "cluster": "veritally"},
        "admin": {"address": _address(topology.admin)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors"
                        ".downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": topology.limits.max_connections,
                    },
                }
            ]
        },
    }


_HEADER = """\
# Envoy configuration of a veritally deployment, rendered by veritally.mesh.envoy.
# Do not edit: change the topology and render again (`veritally envoy render`).
"""


def render_yaml(topology: Topology) -> str:
    """:func:`render` as YAML text, keys in the order they were built."""
    body = yaml.safe_dump(render(topology), sort_keys=False, default_flow_style=False, width=100)
    return _HEADER + body


def render_ca_secret_yaml(tls: MeshTls) -> str:
    """:func:`render_ca_secret` as YAML text."""
    return _HEADER + yaml.safe_dump(render_ca_secret(tls), sort_keys=False)


def build_descriptor_set() -> bytes:
    """The protobuf descriptor set of PublicationService with its JSON GET mappings.

    The contracts in ``proto/`` carry no ``google.api.http`` annotations (the SDK would
    then need googleapis-common-protos at run time); the mapping is a mesh concern, so
    it lives here (:data:`REST_ROUTES`) and is added to the method options of a copy of
    the descriptors when the set is built. The result is deterministic.
    """
    # googleapis-common-protos ships .pyi stubs but no py.typed marker.
    from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
    from google.protobuf import descriptor as _descriptor
    from google.protobuf import descriptor_pb2

    from veritally_client._gen.veritally.v1 import publication_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: _descriptor.FileDescriptor) -> None:
        if fd.name in files:
            return
        for dep in fd.dependencies:
            add(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(proto)
        files[fd.name] = proto

    add(annotations_pb2.DESCRIPTOR)
    add(publication_pb2.DESCRIPTOR)
    publication = files[publication_pb2.DESCRIPTOR.name]
    publication.dependency.append(annotations_pb2.DESCRIPTOR.name)
    (service,) = [s for s in publication.service if s.name == "PublicationService"]
    for method in service.method:
        if method.name in REST_ROUTES:
            rule = http_pb2.HttpRule(get=REST_ROUTES[method.name])
            method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString(
        deterministic=True
    )


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write(topology: Topology, path: Path) -> Path:
    """Write the YAML configuration to ``path``, atomically, with the files it refers
    to that we produce: the REST view's descriptor set and the CA/CRL SDS resource,
    when the topology has them. Returns ``path``."""
    if topology.rest is not None and topology.descriptor_set is not None:
        _atomic_write(topology.descriptor_set, build_descriptor_set())
    if topology.tls.sds_file is not None:
        _atomic_write(topology.tls.sds_file, render_ca_secret_yaml(topology.tls).encode())
    _atomic_write(path, render_yaml(topology).encode())
    return path


class EnvoyConfigError(Exception):
    """Envoy refused a configuration; the message holds Envoy's own output."""


def envoy_binary() -> Path:
    """The Envoy binary: the one in this virtualenv, else the one on PATH.

    Raises:
        FileNotFoundError: no Envoy binary.
    """
    candidate = Path(sys.prefix) / "bin" / "envoy"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary in the virtualenv or on PATH")
    return Path(found)


def validate(path: Path, *, timeout_s: float = 60.0) -> str:
    """Run ``envoy --mode validate -c path``; returns Envoy's warnings (usually none).

    Raises:
        EnvoyConfigError: Envoy refused the configuration (its output in the message).
        FileNotFoundError: no Envoy binary.
    """
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise EnvoyConfigError(
            f"envoy refused {path} (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout + result.stderr
