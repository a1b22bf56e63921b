"""The operator command line: ``veritally <command>``.

Each command is one module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``; :data:`COMMANDS` is the table of them. Only the module of the
command that runs is imported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from veritally.logs import FORMATS
from veritally.logs import configure as configure_logs

# Each command's module is imported only when that command runs. Importing all of them
# (the three services, the SDK, rich, the Envoy renderer) takes about a second, which
# every `veritally --help` and every service process would pay; this way `--help` takes
# under 0.1 s and a service imports only its own rooms. The imports are plain and static,
# one function per command, so a reader and mypy see exactly what each command loads.


def _generate() -> ModuleType:
    from veritally.cli import generate  # on use only: see the comment above

    return generate


def _check() -> ModuleType:
    from veritally.cli import check  # on use only: see the comment above

    return check


def _election() -> ModuleType:
    from veritally.cli import election  # on use only: see the comment above

    return election


def _serve() -> ModuleType:
    from veritally.cli import serve  # on use only: see the comment above

    return serve


def _importer() -> ModuleType:
    from veritally.cli import importer  # on use only: see the comment above

    return importer


def _keys() -> ModuleType:
    from veritally.cli import keys  # on use only: see the comment above

    return keys


def _trustroot() -> ModuleType:
    from veritally.cli import trustroot  # on use only: see the comment above

    return trustroot


def _pki() -> ModuleType:
    from veritally.cli import pki  # on use only: see the comment above

    return pki


def _envoy() -> ModuleType:
    from veritally.cli import envoy  # on use only: see the comment above

    return envoy


def _up() -> ModuleType:
    from veritally.cli import up  # on use only: see the comment above

    return up


def _status() -> ModuleType:
    from veritally.cli import status  # on use only: see the comment above

    return status


def _origin() -> ModuleType:
    from veritally.cli import origin  # on use only: see the comment above

    return origin


def _close() -> ModuleType:
    from veritally.cli import close  # on use only: see the comment above

    return close


def _demo() -> ModuleType:
    from veritally.cli import demo  # on use only: see the comment above

    return demo


def _witness() -> ModuleType:
    from veritally.cli import witness  # on use only: see the comment above

    return witness


# command -> (its module's loader, one-line help)
COMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "generate": (_generate, "write a synthetic national election"),
    "check": (_check, "load an election definition and report errors"),
    "election": (_election, "start an election definition from a casilla catalogue"),
    "serve": (_serve, "run one service: ingest, aggregation or publication"),
    "import": (_importer, "submit actas from a CSV through the ingest API"),
    "keys": (_keys, "generate signing keys"),
    "trust-root": (_trustroot, "create or rotate the trust root"),
    "pki": (_pki, "create the CA and the certificates of every party"),
    "envoy": (_envoy, "render the Envoy configuration"),
    "up": (_up, "run the whole stack behind Envoy"),
    "status": (_status, "the operations room's console of a running stack (--json for scripts)"),
    "origin": (_origin, "serve the bundle directory to Envoy's public listener (loopback)"),
    "close": (_close, "close the night: the next cut is the final one (operators)"),
    "demo": (_demo, "replay a national election night and verify it"),
    "witness": (_witness, "run an independent witness that cosigns the log's checkpoints"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser: every command listed, and the one named in ``argv`` (if any) with
    its options (the only command module imported)."""
    parser = argparse.ArgumentParser(
        prog="veritally", description="Operate a veritally election-night deployment."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines, or one JSON object per line (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _command_in(argv)
    for name, (load, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = load()
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


# Options before the command that take a value (``--log-format json``).
_VALUED: tuple[str, ...] = ("--log-format",)


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option or an
    option's value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veritally`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    configure_logs(level=logging.DEBUG if args.verbose else logging.INFO, fmt=args.log_format)
    result: int = args._run(args)
    return result
