"""``veritally witness keygen | add-log | serve``: run an independent witness."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from veritally.witness.config import add_log, create_key, load_key, load_logs
from veritally.witness.errors import WitnessError
from veritally.witness.server import Witness, WitnessServer
from veritally.witness.store import StateStore

log = logging.getLogger(__name__)

_DEFAULT_LISTEN = "127.0.0.1:7380"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``witness`` subcommands."""
    sub = parser.add_subparsers(dest="witness_command", required=True, metavar="SUBCOMMAND")
    keygen = sub.add_parser("keygen", help="create the witness's cosigning key")
    keygen.add_argument("--state", required=True, type=Path, help="the witness's state directory")
    keygen.add_argument(
        "--name", required=True, help="the witness's key name, e.g. witness.example.org/w1"
    )
    add = sub.add_parser("add-log", help="witness a log: its origin and verifier key(s)")
    add.add_argument("--state", required=True, type=Path, help="the witness's state directory")
    add.add_argument("--origin", required=True, help="the log's checkpoint origin line")
    add.add_argument(
        "--key",
        required=True,
        action="append",
        help="a verifier key of the log (repeat for several)",
    )
    serve = sub.add_parser("serve", help="answer add-checkpoint requests over HTTP")
    serve.add_argument("--state", required=True, type=Path, help="the witness's state directory")
    serve.add_argument(
        "--listen",
        default=_DEFAULT_LISTEN,
        help="HOST:PORT to serve on (port 0: any free one; default %(default)s)",
    )
    serve.add_argument(
        "--port-file", type=Path, help="write the bound port here once serving (for port 0)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status (1 for a configuration or state
    error, with its message on stderr)."""
    try:
        if args.witness_command == "keygen":
            signer = create_key(args.state, args.name)
            print(signer.verifier().key_string())
            return 0
        if args.witness_command == "add-log":
            witnessed = add_log(args.state, args.origin, list(args.key))
            print(f"witnessing {witnessed.origin} ({len(witnessed.keys)} key(s)); restart serve")
            return 0
        return _serve(args)
    except WitnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SystemExit(f"error: --listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _serve(args: argparse.Namespace) -> int:
    signer = load_key(args.state)
    logs = load_logs(args.state)
    with StateStore(args.state) as store:
        witness = Witness(signer=signer, logs=logs, store=store)
        server = WitnessServer(_parse_listen(args.listen), witness)
        port = server.server_address[1]
        if args.port_file is not None:
            tmp = args.port_file.with_suffix(args.port_file.suffix + ".tmp")
            tmp.write_text(f"{port}\n")
            os.replace(tmp, args.port_file)  # readers never see a partial file

        def stop(signum: int, frame: FrameType | None) -> None:
            # shutdown() waits for serve_forever to return: call it from another thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, stop)
        log.info(
            "witness %s serving %d log(s) on port %d",
            signer.name,
            len(logs),
            port,
        )
        with server:
            server.serve_forever()
    log.info("witness stopped")
    return 0
