"""``veritally origin --dir BUNDLE --listen 127.0.0.1:PORT``: the static origin of the
public bundle listener (:mod:`veritally.publication.origin`), until SIGTERM.

``veritally up`` runs it; run it alone only behind an Envoy (or another cache) on the
same host: it speaks plain HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from veritally.mesh.topology import Endpoint
from veritally.publication.origin import serve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("--dir", type=Path, required=True, help="the bundle directory")
    parser.add_argument(
        "--listen", required=True, type=Endpoint.parse, help="host:port, on loopback"
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    listen: Endpoint = args.listen
    if not listen.is_loopback():
        raise SystemExit(f"veritally origin: --listen must be a loopback address, got {listen}")
    asyncio.run(serve(args.dir, listen.host, listen.port))
    return 0
