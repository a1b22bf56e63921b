"""How one service process is launched: a typed configuration and its command line.

:class:`IngestLaunch`, :class:`AggregationLaunch` and :class:`PublicationLaunch` hold
exactly the options of ``veritally serve ingest|aggregation|publication``; their
:meth:`~ServiceLaunch.argv` is that command line (after ``veritally``), and
``veritally.cli.serve`` parses it back into an equal configuration. The stack
(:mod:`veritally.stack`) builds these, never lists of strings; :mod:`veritally.serve`
runs one in the current process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from veritally.errors import ServiceError
from veritally.rpc import TlsFiles
from veritally.storage import DbLocation, LeaseHolder
from veritally_client import VerificationError
from veritally_client.protocol import CosignatureVerifier

__all__ = [
    "DEFAULT_DRAIN_SECONDS",
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_LISTEN",
    "AggregationLaunch",
    "ElectionSource",
    "IngestLaunch",
    "LaunchError",
    "PublicationLaunch",
    "ServiceLaunch",
]

DEFAULT_LISTEN = "127.0.0.1:0"
# Seconds a stopping service reports NOT_SERVING before it stops (health checks notice).
DEFAULT_DRAIN_SECONDS = 0.0
# Seconds calls in flight may take to finish when a service stops.
DEFAULT_GRACE_SECONDS = 5.0
# Seconds between publication's cuts (heartbeat included): the SDK's freshness check and
# the demo's table refresh both follow it.
DEFAULT_INTERVAL_SECONDS = 2.0
# Each witness's deadline per checkpoint (publication's default, ADR 0091): the most a
# slow or dead witness delays serving a cut.
DEFAULT_WITNESS_TIMEOUT_SECONDS = 0.5
#: Seconds a renewal of the publication lease holds it: five default intervals.
DEFAULT_LEASE_SECONDS = 10.0
# Longer than a cut interval is never useful: a cut waits for its witnesses.
MAX_WITNESS_TIMEOUT_SECONDS = 60.0
# A trust root lists at most this many witnesses (the SDK's bound, _trustroot).
MAX_WITNESSES = 32
# Bound on a witness's base URL, so a configuration line stays printable in logs.
MAX_URL_CHARS = 2048


class LaunchError(ServiceError, ValueError):
    """A launch configuration that no service could run (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class ElectionSource:
    """Where a service reads the election definition: exactly one of the two.

    Attributes:
        yaml: an ``election.yaml`` (``--election``).
        definition_bytes: a file holding a serialized ElectionDefinition
            (``--definition-bytes``).
    """

    yaml: Path | None = None
    definition_bytes: Path | None = None

    def __post_init__(self) -> None:
        if (self.yaml is None) == (self.definition_bytes is None):
            raise LaunchError("one of --election or --definition-bytes is required")

    def argv(self) -> list[str]:
        """``--election PATH`` or ``--definition-bytes PATH``."""
        if self.definition_bytes is not None:
            return ["--definition-bytes", str(self.definition_bytes)]
        return ["--election", str(self.yaml)]


def _tls_argv(tls: TlsFiles | None, prefix: str) -> list[str]:
    if tls is None:
        return []
    return [
        *(f"--{prefix}-cert", str(tls.cert)),
        *(f"--{prefix}-key", str(tls.key)),
        *(f"--{prefix}-ca", str(tls.ca)),
    ]


def _optional(option: str, value: object | None) -> list[str]:
    return [] if value is None else [option, str(value)]


@dataclass(frozen=True, kw_only=True)
class ServiceLaunch:
    """What every service process takes.

    Attributes:
        db: its store: a SQLite file, or a PostgreSQL database (ingest and aggregation;
            publication's store is SQLite only for now, docs/adr/0093).
        listen: ``host:port`` to serve on (port 0: any free one).
        tls: its server certificate, key and the CA callers chain to (None: plaintext).
        allowed_peers: SPIFFE IDs that may call it with mTLS; empty: Envoy's identity in
            the trust domain of ``tls.cert``.
        port_file: where to write the bound port once serving.
        drain_seconds: seconds to report NOT_SERVING before stopping.
        grace_seconds: seconds calls in flight may take to finish when stopping.
        metrics_listen: ``host:port`` of its Prometheus ``/metrics`` (plain HTTP, a
            loopback or internal address, never one Envoy exposes); None for none.
    """

    service: ClassVar[str]

    db: DbLocation
    listen: str = DEFAULT_LISTEN
    tls: TlsFiles | None = None
    allowed_peers: tuple[str, ...] = ()
    port_file: Path | None = None
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    metrics_listen: str | None = None

    def __post_init__(self) -> None:
        if self.allowed_peers and self.tls is None:
            raise LaunchError("--allow-peer needs --tls-cert/--tls-key/--tls-ca")

    def common_argv(self) -> list[str]:
        """The options every service takes, in a fixed order."""
        argv = ["--db", str(self.db), "--listen", self.listen]
        argv += _optional("--port-file", self.port_file)
        argv += ["--drain-seconds", repr(self.drain_seconds)]
        argv += ["--grace-seconds", repr(self.grace_seconds)]
        argv += _optional("--metrics-listen", self.metrics_listen)
        argv += _tls_argv(self.tls, "tls")
        for peer in self.allowed_peers:
            argv += ["--allow-peer", peer]
        return argv

    def own_argv(self) -> list[str]:
        """The options of this service only."""
        return []

    def argv(self) -> list[str]:
        """The command line after ``veritally``: ``serve <service> ...``."""
        return ["serve", self.service, *self.common_argv(), *self.own_argv()]


@dataclass(frozen=True, kw_only=True)
class IngestLaunch(ServiceLaunch):
    """``veritally serve ingest``.

    Attributes:
        election: the election definition.
        single_capture: accept an acta on its first valid capture.
    """

    service: ClassVar[str] = "ingest"

    election: ElectionSource
    single_capture: bool = False

    def own_argv(self) -> list[str]:
        """``--election``/``--definition-bytes`` and ``--single-capture``."""
        return [*self.election.argv(), *(["--single-capture"] if self.single_capture else [])]


@dataclass(frozen=True, kw_only=True)
class AggregationLaunch(ServiceLaunch):
    """``veritally serve aggregation``.

    Attributes:
        election: the election definition.
        ingest: ``host:port`` of ingest (through the mesh).
        ingest_server_name: TLS name of ingest, when it differs from the host.
        ingest_tls: client certificate for the ingest channel (mTLS).
    """

    service: ClassVar[str] = "aggregation"

    election: ElectionSource
    ingest: str
    ingest_server_name: str | None = None
    ingest_tls: TlsFiles | None = None

    def own_argv(self) -> list[str]:
        """The election, ``--ingest`` and its TLS options."""
        return [
            *self.election.argv(),
            *("--ingest", self.ingest),
            *_optional("--ingest-server-name", self.ingest_server_name),
            *_tls_argv(self.ingest_tls, "ingest-tls"),
        ]


@dataclass(frozen=True, kw_only=True)
class PublicationLaunch(ServiceLaunch):
    """``veritally serve publication``.

    Attributes:
        key_files: publisher signing keys (all sign every checkpoint).
        passphrase_file: passphrase of encrypted keys.
        trust_root_dir: directory of ``trust-root-v<N>.binpb``.
        aggregation: ``host:port`` of aggregation.
        aggregation_server_name: TLS name of aggregation, if not the host.
        aggregation_tls: client certificate for the aggregation channel (mTLS).
        interval_seconds: seconds between cuts (heartbeat included).
        origin: checkpoint origin line (None: the trust root's).
        bundle_dir: where to write the static bundle (None: no bundle).
        witnesses: (cosignature/v1 verifier key, base URL) of each witness every
            committed checkpoint is sent to (docs/adr/0091-publication-and-witnesses.md).
        witness_timeout_seconds: each witness's deadline per checkpoint, in seconds.
        lease_holder: this publisher's name for the publication lease, when several
            share one database (docs/adr/0094-publication-lease.md); None: no lease.
        lease_seconds: how long each renewal of the lease holds it.
    """

    service: ClassVar[str] = "publication"

    key_files: tuple[Path, ...]
    trust_root_dir: Path
    aggregation: str
    passphrase_file: Path | None = None
    aggregation_server_name: str | None = None
    aggregation_tls: TlsFiles | None = None
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    origin: str | None = None
    bundle_dir: Path | None = None
    witnesses: tuple[tuple[str, str], ...] = ()
    witness_timeout_seconds: float = DEFAULT_WITNESS_TIMEOUT_SECONDS
    lease_holder: str | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.key_files:
            raise LaunchError("publication needs at least one --key-file")
        if len(self.witnesses) > MAX_WITNESSES:
            raise LaunchError(f"--witness: at most {MAX_WITNESSES} witnesses")
        for vkey, url in self.witnesses:
            try:
                CosignatureVerifier.from_key_string(vkey)
            except VerificationError as e:
                raise LaunchError(f"--witness: not a cosignature/v1 verifier key: {e}") from e
            if not url.startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
                raise LaunchError(
                    f"--witness: the witness URL must be http(s) and at most {MAX_URL_CHARS} "
                    "characters"
                )
        if not 0 < self.witness_timeout_seconds <= MAX_WITNESS_TIMEOUT_SECONDS:
            raise LaunchError(
                f"--witness-timeout must be in (0, {MAX_WITNESS_TIMEOUT_SECONDS:g}] seconds"
            )
        if self.lease_holder is not None:
            try:
                LeaseHolder(self.lease_holder, self.lease_seconds)
            except ValueError as e:
                raise LaunchError(f"--lease-holder/--lease-seconds: {e}") from e
            if self.lease_seconds < 2 * self.interval_seconds:
                raise LaunchError(
                    f"--lease-seconds ({self.lease_seconds:g}) must be at least twice "
                    f"--interval ({self.interval_seconds:g}): every cut renews the lease"
                )

    @property
    def lease(self) -> LeaseHolder | None:
        """This publisher's claim to the lease (None: the only publisher)."""
        if self.lease_holder is None:
            return None
        return LeaseHolder(self.lease_holder, self.lease_seconds)

    def own_argv(self) -> list[str]:
        """Keys, trust root, aggregation and the cut options."""
        argv: list[str] = []
        for key in self.key_files:
            argv += ["--key-file", str(key)]
        argv += _optional("--passphrase-file", self.passphrase_file)
        argv += ["--trust-root-dir", str(self.trust_root_dir)]
        argv += ["--aggregation", self.aggregation]
        argv += _optional("--aggregation-server-name", self.aggregation_server_name)
        argv += _tls_argv(self.aggregation_tls, "aggregation-tls")
        argv += ["--interval", repr(self.interval_seconds)]
        argv += _optional("--origin", self.origin)
        argv += _optional("--bundle-dir", self.bundle_dir)
        for vkey, url in self.witnesses:
            argv += ["--witness", vkey, url]
        if self.witnesses:
            argv += ["--witness-timeout", repr(self.witness_timeout_seconds)]
        return argv
