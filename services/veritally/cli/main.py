"""The operator command line: ``veritally <command>``.

Each command is one module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``; :data:`COMMANDS` is the table of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from veritally.cli import (
    check,
    demo,
    envoy,
    generate,
    importer,
    keys,
    pki,
    serve,
    trustroot,
    up,
)

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "generate": (generate, "write a synthetic national election"),
    "check": (check, "load an election definition and report errors"),
    "serve": (serve, "run one service: ingest, aggregation or publication"),
    "import": (importer, "submit actas from a CSV through the ingest API"),
    "keys": (keys, "generate signing keys"),
    "trust-root": (trustroot, "create or rotate the trust root"),
    "pki": (pki, "create the CA and the certificates of every party"),
    "envoy": (envoy, "render the Envoy configuration"),
    "up": (up, "run the whole stack behind Envoy"),
    "demo": (demo, "replay a national election night and verify it"),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog="veritally", description="Operate a veritally election-night deployment."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veritally`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args._run(args)
    return result
