"""The typed input of the Envoy rendering: where everything listens and dials, the TLS
files, and the limits that size a deployment (connection caps, circuit breakers,
timeouts, budgets).

Who may call what is not here but in the access policy, :mod:`veritally.mesh.policy`;
:mod:`veritally.mesh.envoy` renders a :class:`Topology` and that policy into Envoy's
bootstrap. Every name here is re-exported by :mod:`veritally.mesh.envoy`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veritally.mesh.policy import BUDGETS, SERVICE_FULL_NAMES
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
    "REFERENCE_STATE_DIR",
    "REFERENCE_TRUST_DOMAIN",
    "CircuitBreaker",
    "Endpoint",
    "HealthCheck",
    "JsonDict",
    "Limits",
    "MeshTls",
    "TokenBucket",
    "Topology",
    "default_topology",
    "reference_topology",
]

JsonDict = dict[str, Any]

# First port of the single-machine layout (see default_topology).
DEFAULT_BASE_PORT = 8440


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
            newsroom and capture-centre connections with a wide margin (11,000, so that
            the public listener's cap fits under ``max_connections`` too).
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
            (veritally.rpc.streams, 8 by default), so one identity holds only a few of
            these; sized for about a thousand identities each at its cap.
        mesh_unary: circuit breaker of each service's cluster for unary calls between
            services (publication's GetResultsBlob every cut).
        mesh_stream: circuit breaker of each service's cluster for the followers'
            streams (StreamRecords, StreamAggregatedRecords): one per follower, a few
            more while one reconnects. No edge call can take its slots.
        public_per_ip: per client IP address on the public bundle listener, GETs
            (answered 429 beyond). A reader polls ``latest`` every few seconds and a
            recount reads an entry bundle per 256 leaves (2,000 for a national night):
            a burst of a few hundred covers both; mirrors and CDNs get a budget of
            their own by copying the files (docs/operations.md), not by GETs here.
        public_total: every GET through the public listener, all addresses together:
            what the origin behind Envoy's cache may be asked at worst.
        public_max_connections: connections the public listener holds at once. The
            public at large reads through CDNs and mirrors; this listener serves them,
            newsrooms and the curious.

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
    edge_max_connections: int = 11_000
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

    public_per_ip: TokenBucket = field(
        default_factory=lambda: TokenBucket(burst=400, per_second=100)
    )
    public_total: TokenBucket = field(
        default_factory=lambda: TokenBucket(burst=20_000, per_second=10_000)
    )
    public_max_connections: int = 1_000

    def __post_init__(self) -> None:
        caps = (
            self.edge_max_connections,
            self.rest_max_connections,
            self.mesh_max_connections,
            self.public_max_connections,
        )
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
        public: listener for the static bundle (HTTPS, server certificate only: no
            client certificate; mirrors and the public read it); None for none.
        origin: the loopback static file server behind ``public`` (Envoy caches in
            front of it); required when ``public`` is set.
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
    public: Endpoint | None = None
    origin: Endpoint | None = None
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
        if (self.public is None) != (self.origin is None):
            raise ValueError("a public bundle listener and its origin go together")
        if self.origin is not None and not self.origin.is_loopback():
            # The origin speaks plain HTTP: only Envoy on the same host may reach it.
            raise ValueError(f"the bundle origin must listen on loopback, got {self.origin}")


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
    aggregation +11, publication +12, public bundle listener +6, its origin +13). The
    topology is still the multi-host one; only
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
        public=at(6),
        origin=at(13),
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
