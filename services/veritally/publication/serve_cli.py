"""``veritally serve publication``: run the publication service until SIGTERM/SIGINT.

Found by ``veritally.serve_cli`` (which owns ``veritally serve``) through this module's
``add_arguments(parser)`` and ``run(args)``; :func:`run_publication` is the same entry for
code that already holds a :class:`PublicationConfig`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from veritally.publication.app import PublicationConfig, PublicationService, start_publication
from veritally.publication.errors import PublicationError
from veritally.rpc import run_until_signalled
from veritally.serve_cli import (
    add_listen_arguments,
    add_peer_arguments,
    add_tls_arguments,
    interceptors_from_args,
    tls_from_args,
    write_port,
)

__all__ = ["add_arguments", "config_from_args", "run", "run_publication"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``veritally serve publication``."""
    parser.add_argument("--db", type=Path, required=True, help="SQLite store of publication")
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
        "--interval", type=float, default=2.0, help="seconds between cuts (heartbeat included)"
    )
    parser.add_argument("--origin", help="checkpoint origin line (default: the trust root's)")
    parser.add_argument("--bundle-dir", type=Path, help="write the static bundle here")


def config_from_args(args: argparse.Namespace) -> PublicationConfig:
    """The configuration named on the command line."""
    listen_tls = tls_from_args(args)
    return PublicationConfig(
        db_path=args.db,
        key_files=tuple(args.key_file),
        passphrase_file=args.passphrase_file,
        trust_root_dir=args.trust_root_dir,
        aggregation_target=args.aggregation,
        aggregation_tls=tls_from_args(args, prefix="aggregation-tls"),
        aggregation_server_name=args.aggregation_server_name,
        listen=args.listen,
        listen_tls=listen_tls,
        interceptors=tuple(interceptors_from_args(args, listen_tls)),
        interval_seconds=args.interval,
        origin=args.origin,
        bundle_dir=args.bundle_dir,
    )


async def run_publication(
    config: PublicationConfig,
    *,
    port_file: Path | None = None,
    drain_seconds: float = 0.0,
    grace_seconds: float = 5.0,
) -> None:
    """Run publication until SIGTERM or SIGINT, then drain and stop.

    Raises:
        KeyFileError: if a signing key is unusable (the service does not start).
        TrustRootFileError: if the trust root does not vouch for the keys.
        StoreIntegrityError: if the store does not match its checkpoints.
    """
    service: PublicationService | None = None

    async def start() -> None:
        nonlocal service
        service = await start_publication(config)
        write_port(port_file, service.port)

    async def stop() -> None:
        if service is not None:
            await service.stop(drain_seconds=drain_seconds, grace=grace_seconds)

    await run_until_signalled(start, stop)


def run(args: argparse.Namespace) -> int:
    """Run the service; exit status 1 with a clear message if it cannot start."""
    config = config_from_args(args)
    kwargs: dict[str, Any] = {
        "port_file": args.port_file,
        "drain_seconds": args.drain_seconds,
        "grace_seconds": args.grace_seconds,
    }
    try:
        asyncio.run(run_publication(config, **kwargs))
    except PublicationError as e:
        print(f"veritally serve publication: refusing to start: {e}", file=sys.stderr)
        return 1
    return 0
