"""``veritally serve ingest|aggregation|publication``: run one service process.

The options are those of the launch configurations in :mod:`veritally.launch`
(:func:`launch_from_args` parses them into one, whose ``argv()`` writes them back);
:func:`veritally.serve.serve` runs it until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

from veritally.launch import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_WITNESS_TIMEOUT_SECONDS,
    AggregationLaunch,
    ElectionSource,
    IngestLaunch,
    LaunchError,
    PublicationLaunch,
    ServiceLaunch,
)
from veritally.publication.errors import LeaseLostError, PublicationError
from veritally.rpc import TlsFiles
from veritally.serve import load_election, peer_interceptors, serve
from veritally.storage import DbLocation, parse_location
from veritally_client.protocol import ElectionIndex

#: Exit status of a publisher that lost the publication lease to another (EX_TEMPFAIL:
#: a supervisor restarts it, and it waits as a standby).
EXIT_DEPOSED = 75

__all__ = [
    "EXIT_DEPOSED",
    "add_arguments",
    "add_tls_arguments",
    "interceptors_from_args",
    "launch_from_args",
    "load_election_from_args",
    "run",
    "tls_from_args",
]


def add_tls_arguments(parser: argparse.ArgumentParser, *, prefix: str = "tls") -> None:
    """Add ``--<prefix>-cert``, ``--<prefix>-key`` and ``--<prefix>-ca``."""
    parser.add_argument(f"--{prefix}-cert", type=Path, help="PEM certificate chain")
    parser.add_argument(f"--{prefix}-key", type=Path, help="PEM private key")
    parser.add_argument(f"--{prefix}-ca", type=Path, help="PEM CA that peers must chain to")


def tls_from_args(args: argparse.Namespace, *, prefix: str = "tls") -> TlsFiles | None:
    """The TLS files named on the command line, or None for plaintext.

    Raises:
        SystemExit: if only some of the three files are given.
    """
    key = prefix.replace("-", "_")
    cert, pkey, ca = (getattr(args, f"{key}_{x}") for x in ("cert", "key", "ca"))
    given = [x is not None for x in (cert, pkey, ca)]
    if not any(given):
        return None
    if not all(given):
        raise SystemExit(f"--{prefix}-cert, --{prefix}-key and --{prefix}-ca go together")
    return TlsFiles(cert=cert, key=pkey, ca=ca)


def _election_source(args: argparse.Namespace) -> ElectionSource:
    try:
        return ElectionSource(yaml=args.election, definition_bytes=args.definition_bytes)
    except LaunchError as e:
        raise SystemExit(str(e)) from e


def load_election_from_args(args: argparse.Namespace) -> ElectionIndex:
    """The election named by ``--election`` or ``--definition-bytes``.

    Raises:
        SystemExit: if neither is given.
        veritally.election.DefinitionError: if the YAML definition is invalid.
        veritally_client.MalformedDataError: if the serialized definition is invalid.
    """
    return load_election(_election_source(args))


def interceptors_from_args(
    args: argparse.Namespace, tls: TlsFiles | None
) -> list[grpc.aio.ServerInterceptor]:
    """The mesh's peer check named by ``--allow-peer`` (see
    :func:`veritally.serve.peer_interceptors`).

    Raises:
        SystemExit: if --allow-peer is given without TLS.
    """
    if tls is None and args.allow_peer:
        raise SystemExit("--allow-peer needs --tls-cert/--tls-key/--tls-ca")
    return peer_interceptors(tls, tuple(args.allow_peer or ()))


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--election", type=Path, help="election.yaml of the definition")
    source.add_argument(
        "--definition-bytes", type=Path, help="file holding a serialized ElectionDefinition"
    )


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--listen``, ``--port-file``, ``--drain-seconds`` and ``--grace-seconds``."""
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help="HOST:PORT to serve on (port 0: any free one)"
    )
    parser.add_argument(
        "--port-file", type=Path, help="write the bound port here once serving (for port 0)"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=DEFAULT_DRAIN_SECONDS,
        help="seconds to report NOT_SERVING before stopping (let health checks notice)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="seconds calls in flight may take to finish when stopping",
    )
    parser.add_argument(
        "--metrics-listen",
        help="HOST:PORT of the Prometheus /metrics listener (plain HTTP: loopback or an "
        "internal address only); default none",
    )


def add_peer_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-peer``: who may call the service when it listens with mTLS."""
    parser.add_argument(
        "--allow-peer",
        action="append",
        metavar="SPIFFE_ID",
        help="caller identity accepted (repeatable); with TLS the default is the mesh's "
        "Envoy, spiffe://<trust domain of --tls-cert>/service/envoy",
    )


def _location(text: str) -> DbLocation:
    try:
        return parse_location(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _common(parser: argparse.ArgumentParser) -> None:
    _source_arguments(parser)
    parser.add_argument(
        "--db",
        type=_location,
        required=True,
        help="store of this service: a SQLite file, or a postgresql:// URL (docs/operations.md)",
    )
    add_listen_arguments(parser)
    add_tls_arguments(parser)
    add_peer_arguments(parser)


def _publication_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=_location,
        required=True,
        help="store of publication: a SQLite file, or a postgresql:// URL (docs/operations.md)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        action="append",
        required=True,
        help="publisher signing key (repeat for several keys; all sign every checkpoint)",
    )
    parser.add_argument("--passphrase-file", type=Path, help="passphrase of encrypted keys")
    parser.add_argument(
        "--trust-root-dir", type=Path, required=True, help="directory of trust-root-v<N>.binpb"
    )
    parser.add_argument("--aggregation", required=True, help="HOST:PORT of aggregation")
    parser.add_argument(
        "--aggregation-server-name", help="TLS name of aggregation, if not the host"
    )
    add_tls_arguments(parser, prefix="aggregation-tls")
    add_listen_arguments(parser)
    add_tls_arguments(parser)
    add_peer_arguments(parser)
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between cuts (heartbeat included)",
    )
    parser.add_argument("--origin", help="checkpoint origin line (default: the trust root's)")
    parser.add_argument("--bundle-dir", type=Path, help="write the static bundle here")
    parser.add_argument(
        "--witness",
        nargs=2,
        action="append",
        default=[],
        metavar=("VKEY", "URL"),
        help="a witness (its cosignature/v1 verifier key and base URL) every committed "
        "checkpoint is sent to; repeat for each witness",
    )
    parser.add_argument(
        "--witness-timeout",
        type=float,
        default=DEFAULT_WITNESS_TIMEOUT_SECONDS,
        help="seconds each witness has per checkpoint before the cut is served without it",
    )
    parser.add_argument(
        "--lease-holder",
        metavar="NAME",
        help="with several publishers on one --db: this one's name for the publication "
        "lease; it waits as a standby until it holds the lease, and exits with status "
        f"{EXIT_DEPOSED} when it loses it (docs/operations.md)",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        help="how long each renewal holds the lease: a dead publisher is replaced this "
        "long after its last renewal (at least twice --interval)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` subcommands."""
    sub = parser.add_subparsers(dest="service", required=True, metavar="SERVICE")
    ingest = sub.add_parser("ingest", help="validate, double-capture and log actas")
    _common(ingest)
    ingest.add_argument(
        "--single-capture",
        action="store_true",
        help="accept an acta on its first valid capture (default: two operators must agree)",
    )
    aggregation = sub.add_parser("aggregation", help="follow ingest's log and keep totals")
    _common(aggregation)
    aggregation.add_argument(
        "--ingest", required=True, help="HOST:PORT of ingest (through the mesh)"
    )
    aggregation.add_argument(
        "--ingest-server-name", help="TLS name of ingest, when it differs from the host"
    )
    add_tls_arguments(aggregation, prefix="ingest-tls")
    publication = sub.add_parser("publication", help="sign and serve cuts of the log")
    _publication_arguments(publication)


def launch_from_args(args: argparse.Namespace) -> ServiceLaunch:
    """The launch configuration named on the command line.

    Raises:
        SystemExit: incomplete TLS options, or --allow-peer without TLS.
    """
    common: dict[str, Any] = {
        "db": args.db,
        "listen": args.listen,
        "tls": tls_from_args(args),
        "allowed_peers": tuple(args.allow_peer or ()),
        "port_file": args.port_file,
        "drain_seconds": args.drain_seconds,
        "grace_seconds": args.grace_seconds,
        "metrics_listen": args.metrics_listen,
    }
    try:
        if args.service == "ingest":
            return IngestLaunch(
                **common, election=_election_source(args), single_capture=args.single_capture
            )
        if args.service == "aggregation":
            return AggregationLaunch(
                **common,
                election=_election_source(args),
                ingest=args.ingest,
                ingest_server_name=args.ingest_server_name,
                ingest_tls=tls_from_args(args, prefix="ingest-tls"),
            )
        return PublicationLaunch(
            **common,
            key_files=tuple(args.key_file),
            passphrase_file=args.passphrase_file,
            trust_root_dir=args.trust_root_dir,
            aggregation=args.aggregation,
            aggregation_server_name=args.aggregation_server_name,
            aggregation_tls=tls_from_args(args, prefix="aggregation-tls"),
            interval_seconds=args.interval,
            origin=args.origin,
            bundle_dir=args.bundle_dir,
            witnesses=tuple((vkey, url) for vkey, url in args.witness),
            witness_timeout_seconds=args.witness_timeout,
            lease_holder=args.lease_holder,
            lease_seconds=args.lease_seconds,
        )
    except LaunchError as e:
        raise SystemExit(str(e)) from e


def run(args: argparse.Namespace) -> int:
    """Run the chosen service until SIGTERM or SIGINT; 1 if it refuses to start,
    :data:`EXIT_DEPOSED` if a publisher loses its lease."""
    launch = launch_from_args(args)
    try:
        asyncio.run(serve(launch))
    except LeaseLostError as e:
        print(f"veritally serve {launch.service}: {e}", file=sys.stderr)
        return EXIT_DEPOSED
    except PublicationError as e:
        print(f"veritally serve {launch.service}: refusing to start: {e}", file=sys.stderr)
        return 1
    return 0
