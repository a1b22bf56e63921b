"""The operator command line: ``veritally <command>``.

Each command lives in the module that owns its concept; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``veritally --help`` stays fast and one broken command cannot take the
others down.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("veritally.election.generate_cli", "write a synthetic national election"),
    "check": ("veritally.election.check_cli", "load an election definition and report errors"),
    "serve": ("veritally.serve_cli", "run one service: ingest, aggregation or publication"),
    "import": ("veritally.ingest.import_cli", "submit actas from a CSV through the ingest API"),
    "keys": ("veritally.publication.keys_cli", "generate signing keys"),
    "trust-root": ("veritally.publication.trustroot_cli", "create or rotate the trust root"),
    "pki": ("veritally.pki_cli", "create the CA and the certificates of every party"),
    "envoy": ("veritally.mesh.envoy_cli", "render the Envoy configuration"),
    "up": ("veritally.stack", "run the whole stack behind Envoy"),
    "demo": ("veritally.demo", "replay a national election night and verify it"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser, with the subcommand named in ``argv`` (if any) fully configured."""
    parser = argparse.ArgumentParser(
        prog="veritally", description="Operate a veritally election-night deployment."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veritally`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    result: int = args._run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
