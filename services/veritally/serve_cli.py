"""``veritally serve ingest|aggregation|publication``: run one service process.

Each service loads the election definition (``--election`` YAML, or ``--definition-bytes``
holding a serialized ElectionDefinition), opens its own SQLite store (``--db``), listens on
``--listen`` (mutual TLS when ``--tls-cert/--tls-key/--tls-ca`` are given) and drains on
SIGTERM or SIGINT: it reports NOT_SERVING, waits ``--drain-seconds`` for health checkers to
stop routing to it, and lets calls in flight finish. With TLS, only the mesh may call
(``veritally.mesh.peer.PeerIdentityInterceptor``): Envoy's identity in the trust domain of
the service's own certificate, unless ``--allow-peer`` names others.

Publication is run by the publication package's own command module, found here at run
time (``veritally.publication.serve_cli``, exposing ``add_arguments(parser)`` and
``run(args)``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import grpc
from cryptography import x509

from veritally.rpc import TlsFiles, run_until_signalled
from veritally_client.protocol import ElectionIndex

log = logging.getLogger(__name__)

# Modules that may hold publication's command (tried in order).
PUBLICATION_MODULES = ("veritally.publication.serve_cli",)


def _publication_module() -> ModuleType | None:
    for name in PUBLICATION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but one of its imports is missing
                raise
            continue
        if hasattr(module, "add_arguments") and hasattr(module, "run"):
            return module
    return None


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


def load_election_from_args(args: argparse.Namespace) -> ElectionIndex:
    """The election named by ``--election`` or ``--definition-bytes``.

    Raises:
        SystemExit: if neither is given.
        veritally.election.DefinitionError: if the YAML definition is invalid.
        veritally_client.MalformedDataError: if the serialized definition is invalid.
    """
    if args.definition_bytes is not None:
        return ElectionIndex.from_bytes(Path(args.definition_bytes).read_bytes())
    if args.election is not None:
        from veritally.election import load_definition

        return load_definition(args.election)
    raise SystemExit("one of --election or --definition-bytes is required")


def _common(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--election", type=Path, help="election.yaml of the definition")
    source.add_argument(
        "--definition-bytes", type=Path, help="file holding a serialized ElectionDefinition"
    )
    parser.add_argument("--db", type=Path, required=True, help="SQLite store of this service")
    add_listen_arguments(parser)
    add_tls_arguments(parser)
    add_peer_arguments(parser)


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--listen``, ``--port-file``, ``--drain-seconds`` and ``--grace-seconds``."""
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to serve on (port 0: any free one)"
    )
    parser.add_argument(
        "--port-file", type=Path, help="write the bound port here once serving (for port 0)"
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=0.0,
        help="seconds to report NOT_SERVING before stopping (let health checks notice)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=5.0,
        help="seconds calls in flight may take to finish when stopping",
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


def interceptors_from_args(
    args: argparse.Namespace, tls: TlsFiles | None
) -> list[grpc.aio.ServerInterceptor]:
    """The mesh's peer check: with TLS, only the allowed identities (Envoy's by default)
    may call; health checks stay open to any certificate of the CA. Plaintext (tests on
    loopback) has no peer identity, so no check.

    Raises:
        SystemExit: if --allow-peer is given without TLS.
    """
    if tls is None:
        if args.allow_peer:
            raise SystemExit("--allow-peer needs --tls-cert/--tls-key/--tls-ca")
        return []
    from veritally.mesh.peer import PeerIdentityInterceptor

    allowed = args.allow_peer or [envoy_identity(tls.cert)]
    return [PeerIdentityInterceptor(allowed)]


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
    module = _publication_module()
    if module is not None:
        module.add_arguments(publication)
    else:
        publication.add_argument("rest", nargs=argparse.REMAINDER)


def write_port(path: Path | None, port: int) -> None:
    """Write ``port`` to ``path`` (``--port-file``) atomically; nothing if ``path`` is None."""
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)  # readers never see a partial file


async def _serve(args: argparse.Namespace) -> None:
    election = load_election_from_args(args)
    tls = tls_from_args(args)
    interceptors = interceptors_from_args(args, tls)
    service: Any = None

    async def start() -> None:
        nonlocal service
        if args.service == "ingest":
            from veritally.ingest.app import start_ingest

            service = await start_ingest(
                election=election,
                db_path=args.db,
                address=args.listen,
                tls=tls,
                double_capture=not args.single_capture,
                interceptors=interceptors,
            )
        else:
            from veritally.aggregation.app import start_aggregation

            service = await start_aggregation(
                election=election,
                db_path=args.db,
                address=args.listen,
                ingest_target=args.ingest,
                tls=tls,
                ingest_tls=tls_from_args(args, prefix="ingest-tls"),
                ingest_server_name=args.ingest_server_name,
                interceptors=interceptors,
            )
        write_port(args.port_file, service.port)

    async def stop() -> None:
        if service is not None:
            await service.stop(drain_seconds=args.drain_seconds, grace=args.grace_seconds)

    await run_until_signalled(start, stop)


def run(args: argparse.Namespace) -> int:
    """Run the chosen service until SIGTERM or SIGINT."""
    if args.service == "publication":
        module = _publication_module()
        if module is None:
            print(
                "veritally serve publication: the publication service is not available "
                f"(none of {', '.join(PUBLICATION_MODULES)} provides add_arguments/run)",
                file=sys.stderr,
            )
            return 2
        result: int = module.run(args)
        return result
    asyncio.run(_serve(args))
    return 0
