"""The ``veritally-client`` command: verified results from the command line.

Data goes to stdout, messages to stderr. Exit codes (also in ``--help`` and docs/sdk.md):

* 0: success;
* 1: verification failure (bad signature, unknown key, digest mismatch, rollback, fork,
  stale cut, bad proof, malformed data, recount mismatch, unusable trust root);
* 2: usage error (bad arguments, unreadable local files);
* 3: transport failure (the publisher could not be reached or answered with an error);
* 4: nothing new (``latest --if-newer`` when the newest cut was already verified;
  ``latest --if-changed`` when its results are those of the cut verified before).

rich (the ``[cli]`` extra) draws the live table of ``watch`` and the progress bar of
``audit``; it is imported only here, and only when those are drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from veritally_client._bundle import verify_bundle
from veritally_client._client import Client, WatchEvent, load_trust_root
from veritally_client._config import ClientConfig
from veritally_client._election import ACTA_ID_SEPARATOR, ElectionIndex, parse_acta_id
from veritally_client._errors import (
    CredentialsError,
    MalformedDataError,
    StalledError,
    StateDirectoryError,
    TransportError,
    TrustRootError,
    UnknownIdError,
    VerificationError,
)
from veritally_client._export import OPTION_KINDS, percent_text, to_json, write_csv, write_json
from veritally_client._export_nist import write_nist
from veritally_client._export_prep import fetch_acta_records, write_prep_csv, write_prep_files
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._navigate import unknown_id
from veritally_client._transport import TlsCredentials
from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import VerifiedCut
from veritally_client._view import RaceResult, race_document

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "EXIT_NOTHING_NEW",
    "EXIT_OK",
    "EXIT_STALLED",
    "EXIT_TRANSPORT",
    "EXIT_UNKNOWN_ID",
    "EXIT_USAGE",
    "EXIT_VERIFICATION",
    "main",
]

EXIT_OK = 0
EXIT_VERIFICATION = 1
EXIT_USAGE = 2
EXIT_TRANSPORT = 3
EXIT_NOTHING_NEW = 4
EXIT_STALLED = 5
EXIT_UNKNOWN_ID = 6

# What the rows of the latest and watch tables are.
_BY = ("candidates", "parties", "options")
# One row of those tables: first column, second column, votes, share.
_Row = tuple[str, str, str, str]
#: The formats of ``export --format``.
EXPORT_FORMATS = ("csv", "json", "prep", "nist")

_EPILOG = """\
exit codes:
  0  success
  1  verification failure (signature, key, digest, rollback, fork, stale, proof,
     malformed data, recount mismatch, trust root)
  2  usage error (arguments, unreadable local files, TLS files that cannot work: a key
     not the certificate's, an expired certificate; a state directory of another
     publisher or in use by another client)
  3  transport failure (publisher unreachable or answered with an error)
  4  nothing new (latest --if-newer: the newest cut was already verified;
     latest --if-changed: its results are those of the cut verified before)
  5  stalled: the signed cuts say ingest accepted records that no cut has covered for
     longer than the limit (aggregation or publication is stuck)
  6  unknown id: an acta, casilla, contest, state or district the election does not
     have (the message lists the valid ids)
  130  interrupted (Ctrl-C)

gRPC's own log lines are off; GRPC_VERBOSITY=ERROR (or DEBUG) shows them.

environment: VERITALLY_ENDPOINT, VERITALLY_TRUST_ROOT, VERITALLY_STATE_DIR,
VERITALLY_CA, VERITALLY_CERT, VERITALLY_KEY, VERITALLY_SERVER_NAME give the defaults of
the options of the same names.
"""


class _UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


def _env(name: str) -> str | None:
    return os.environ.get(f"VERITALLY_{name}") or None


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "veritally-client")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``veritally-client``."""
    parser = argparse.ArgumentParser(
        prog="veritally-client",
        description="Verify signed cuts of preliminary election results.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conn = parser.add_argument_group("connection")
    conn.add_argument(
        "--endpoint",
        default=_env("ENDPOINT"),
        help="publisher host:port, or a bundle URL https://mirror.example/prep/",
    )
    conn.add_argument(
        "--trust-root",
        type=Path,
        default=_env("TRUST_ROOT"),
        help="pinned trust root file (from the electoral authority)",
    )
    conn.add_argument(
        "--state-dir",
        type=Path,
        default=_env("STATE_DIR") or _default_state_dir(),
        help="where the last verified cut is kept (default: %(default)s)",
    )
    conn.add_argument("--ca", type=Path, default=_env("CA"), help="CA certificate (PEM)")
    conn.add_argument("--cert", type=Path, default=_env("CERT"), help="client certificate")
    conn.add_argument("--key", type=Path, default=_env("KEY"), help="client private key")
    conn.add_argument("--server-name", default=_env("SERVER_NAME"), help="TLS name of the server")
    conn.add_argument(
        "--unsafe-plaintext",
        action="store_true",
        help="connect without TLS (local servers and tests only)",
    )
    conn.add_argument(
        "--max-age",
        type=float,
        default=ClientConfig().max_checkpoint_age,
        help="reject cuts older than this many seconds (default: %(default)s)",
    )
    conn.add_argument(
        "--max-stall",
        type=float,
        default=ClientConfig().max_stall_seconds,
        help="exit 5 when cuts stay behind ingest without covering a new record for "
        "longer than this many seconds (default: %(default)s)",
    )
    conn.add_argument(
        "--allow-test",
        action="store_true",
        help="accept cuts of a rehearsal (test data, shown as such); refused otherwise",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("latest", help="verify and show the newest cut")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--if-newer", action="store_true", help="exit 4 if it was already verified")
    only.add_argument(
        "--if-changed",
        action="store_true",
        help="exit 4 if its results are those of the cut verified before (a heartbeat cut)",
    )
    p.add_argument("--json", action="store_true", help="print the JSON export")
    _view_arguments(p)

    p = sub.add_parser("watch", help="follow new cuts live")
    p.add_argument("--max-cuts", type=int, default=0, help="stop after this many cuts (0: never)")
    p.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="give up (exit 3) after this many failed reconnections in a row (0: never)",
    )
    p.add_argument(
        "--plain", action="store_true", help="one JSON line per cut instead of a live table"
    )
    _view_arguments(p)

    p = sub.add_parser("proof", help="prove an acta is in the log")
    p.add_argument("acta_id", metavar="ACTA_ID", help='"<casilla_id>/<contest_id>"')
    p.add_argument("--revision", type=int, default=None, help="a specific revision")

    p = sub.add_parser("audit", help="recount the whole log and every cut in it")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stderr")

    p = sub.add_parser("export", help="export verified results")
    p.add_argument(
        "--format",
        default="csv",
        help="csv, json (flat, with names), prep (PREP's files per contest), nist "
        "(NIST SP 1500-100 JSON), or several comma-separated, all of one cut, into "
        "--output DIR (results.csv, results.json, results.nist.json, prep/); "
        "default: %(default)s",
    )
    p.add_argument("--cut", type=int, default=None, help="a past cut (default: newest)")
    p.add_argument(
        "--all-levels",
        action="store_true",
        help="csv and json: recount first and include section and casilla results",
    )
    p.add_argument(
        "--kinds",
        default=",".join(OPTION_KINDS),
        help="csv: the row kinds, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--contest",
        default=None,
        help="prep: only this contest's file (to stdout without --output)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write to this file, or for prep or several formats this directory (default: stdout)",
    )

    p = sub.add_parser("verify-bundle", help="verify an offline static bundle directory")
    p.add_argument("directory", type=Path, metavar="DIR")

    p = sub.add_parser(
        "replay",
        help="verify a recorded bundle, then serve it over HTTP cut by cut (rehearsals)",
        description="Serve a recorded bundle directory over HTTP as it stood at each cut, "
        "moving on by the signed cut times at --speed. It is verified first, as "
        "verify-bundle does. Replayed cuts keep their recorded (old) cut times: clients "
        "reading it need a --max-age that covers them.",
    )
    p.add_argument("directory", type=Path, metavar="BUNDLE_DIR")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="signed seconds per second: 60 plays an hour a minute (default: %(default)s)",
    )
    p.add_argument(
        "--from-cut", type=int, default=1, metavar="N", help="start at cut N (default: 1)"
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8088",
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free one (default: %(default)s)",
    )
    p.add_argument(
        "--hold",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the last cut stays served before the end (default: %(default)s)",
    )
    p.add_argument("--loop", action="store_true", help="start again from --from-cut after the hold")

    sub.add_parser("evidence", help="print the fork evidence kept so far (JSON)")
    return parser


def _client(args: argparse.Namespace) -> Client:
    if getattr(args, "max_failures", 0) < 0:
        raise _UsageError("--max-failures must not be negative")
    if not args.endpoint:
        raise _UsageError("--endpoint (or VERITALLY_ENDPOINT) is required")
    config = ClientConfig(
        max_checkpoint_age=args.max_age,
        max_stall_seconds=args.max_stall,
        allow_test=args.allow_test,
        watch_max_failures=getattr(args, "max_failures", 0),
    )
    root = _trust_root(args)
    if args.unsafe_plaintext:
        return Client(
            endpoint=args.endpoint,
            trust_root=root,
            state_dir=args.state_dir,
            unsafe_plaintext=True,
            config=config,
        )
    if args.endpoint.startswith("https://"):
        # A bundle URL (a mirror, the public listener): no client certificate; --ca names
        # the server's CA when it is not one the system trusts.
        return Client(
            endpoint=args.endpoint,
            trust_root=root,
            state_dir=args.state_dir,
            config=config,
            http_ca=args.ca.read_bytes() if args.ca else None,
        )
    if not (args.ca and args.cert and args.key):
        raise _UsageError("--ca, --cert and --key are required (or --unsafe-plaintext)")
    creds = TlsCredentials.from_files(
        ca=args.ca, cert=args.cert, key=args.key, server_name=args.server_name
    )
    return Client(
        endpoint=args.endpoint,
        trust_root=root,
        state_dir=args.state_dir,
        credentials=creds,
        config=config,
    )


def _trust_root(args: argparse.Namespace) -> TrustedRoot:
    if not args.trust_root:
        raise _UsageError("--trust-root (or VERITALLY_TRUST_ROOT) is required")
    return load_trust_root(args.trust_root)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _summary(cut: VerifiedCut, out: TextIO) -> None:
    """A short plain-text summary of the national results."""
    print(
        f"cut {cut.cut_number}  {cut.cut_record.cut_time}  tree size {cut.tree_size}  "
        f"acta records {cut.acta_records}{'  FINAL' if cut.final else ''}",
        file=out,
    )
    if cut.lag_records:
        print(f"behind ingest by {cut.lag_records} acta records", file=out)
    for contest in cut.national().contests:
        c = contest.completeness
        print(
            f"{contest.contest_id}: actas counted {c.actas_counted}/{c.actas_expected} "
            f"({percent_text(c.counted_percent_e4)}%), turnout "
            f"{percent_text(c.turnout_percent_e4)}%",
            file=out,
        )
        total = contest.total_votes or 1
        for option in contest.options:
            share = option.votes * 1_000_000 // total
            print(
                f"  {option.option_id:<16} {option.votes:>12}  {percent_text(share):>8}%",
                file=out,
            )


def _view_arguments(p: argparse.ArgumentParser) -> None:
    view = p.add_argument_group("what to show")
    view.add_argument(
        "--contest",
        default=None,
        metavar="ID",
        help="a contest id (PRES, SEN, DIP...) or a race id (default: the first contest "
        "held in the unit)",
    )
    view.add_argument("--state", default=None, help="a state, by id or name")
    view.add_argument("--district", default=None, help="a district, by id or name")
    view.add_argument(
        "--by",
        choices=_BY,
        default=None,
        help="rows: candidates (default when the race has them), parties, or ballot options",
    )


def _chosen_race(cut: VerifiedCut, args: argparse.Namespace) -> tuple[RaceResult, str]:
    """The race the options choose, and the other contests held in its unit."""
    try:
        if args.contest is None:
            if args.district is not None:
                unit = cut.district(args.district, state=args.state)
            elif args.state is not None:
                unit = cut.state(args.state)
            else:
                unit = cut.nation()
            if not unit.races:
                raise _UsageError(f"no contest is held in {unit.unit.level} {unit.unit.id!r}")
            race = unit.races[0]
            others = [r.contest_id for r in unit.races[1:]]
        else:
            race = cut.race(args.contest, state=args.state, district=args.district)
            others = []
    except ValueError as e:
        raise _UsageError(str(e)) from None
    return race, ", ".join(others)


def _terminal() -> tuple[int, int]:
    """The terminal's columns and lines (COLUMNS and LINES; 80 x 24 when unknown)."""
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


def _wrap(items: Sequence[str], width: int, sep: str = " · ") -> list[str]:
    """``items`` joined by ``sep`` into lines of at most ``width`` columns."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(sep) + len(item) <= width:
            lines[-1] += sep + item
        else:
            lines.append(_fit(item, width))
    return lines


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _share(value: Decimal) -> str:
    return f"{value}%"


class _Screen:
    """What ``latest`` and ``watch`` show of one race: lines above a table of rows
    (first column, second column, votes, share), its total rows, and lines below; cut to
    a terminal's width and height."""

    def __init__(
        self,
        cut: VerifiedCut,
        race: RaceResult,
        others: str,
        *,
        by: str | None,
        width: int,
        height: int,
    ) -> None:
        self.width = width
        self.banner = (
            "*** REHEARSAL: TEST DATA, NOT THE ELECTION'S RESULTS ***" if race.test else ""
        )
        status = [f"cut {cut.cut_number}", cut.cut_record.cut_time, "verified"]
        if race.final:
            status.append("FINAL CUT")
        if cut.lag_records:
            status.append(f"behind ingest by {cut.lag_records:,} acta records")
        self.status = _wrap(status, width)
        self.title = _wrap(_title(race), width)
        c = race.completeness
        self.completeness = _wrap(
            [
                f"actas expected {c.expected:,}",
                f"registered {c.registered:,}",
                f"captured {c.captured:,} ({_share(c.captured_percent)})",
                f"counted {c.counted:,} ({_share(c.counted_percent)})",
                f"not counted {c.not_counted:,}",
                f"inconsistent {_share(c.inconsistent_percent)}",
                f"out of catalogue {c.out_of_catalogue:,}",
                f"nominal list {c.nominal_list_counted:,}",
                f"votes {c.total_votes_with_special:,} "
                f"(without special {c.total_votes_without_special:,})",
                f"participation {_share(c.participation)}",
            ],
            width,
        )
        self.columns, rows = _rows(race, by)
        self.totals = [
            ("unregistered", "", f"{race.unregistered_votes:,}", _share(race.unregistered_share)),
            ("null", "", f"{race.null_votes:,}", _share(race.null_share)),
            ("total", "", f"{race.total_votes:,}", ""),
        ]
        self.foot = _wrap([f"also held here: {others} (--contest ID)"], width) if others else []
        head = len(self.status) + len(self.title) + len(self.completeness) + bool(self.banner)
        room = height - head - 1 - len(self.totals) - len(self.foot)  # 1: the column names
        if len(rows) > room:
            kept = max(room - 1, 0)
            more = f"… {len(rows) - kept} more rows not shown (--json for all)"
            self.foot = [_fit(more, width), *self.foot]
            rows = rows[:kept]
        self.rows = rows

    def head_lines(self) -> list[str]:
        return [*([self.banner] if self.banner else []), *self.status, *self.title]

    def plain(self) -> list[str]:
        """The screen as plain text lines."""
        widths = self.widths()
        lines = [*self.head_lines(), *self.completeness]
        lines.append(_cells(widths, (*self.columns, "votes", "share")))
        lines += [_cells(widths, row) for row in [*self.rows, *self.totals]]
        return [*lines, *self.foot]

    def widths(self) -> tuple[int, int, int, int]:
        """Widths of the four columns: as wide as their text, narrowed to the screen
        (the second column keeps at least a third of the room for text)."""
        rows = [*self.rows, *self.totals]
        votes = max(len("votes"), *(len(r[2]) for r in rows))
        share = max(len("share"), *(len(r[3]) for r in rows))
        first = max(len(self.columns[0]), *(len(r[0]) for r in rows))
        second = max(len(self.columns[1]), *(len(r[1]) for r in rows))
        room = self.width - votes - share - 6
        if first + second > room:
            second = min(second, max(room // 3, room - first))
            first = room - second
        return first, second, votes, share


def _cells(widths: tuple[int, int, int, int], row: Sequence[str]) -> str:
    first, second, votes, share = widths
    return (
        f"{_fit(row[0], first):<{first}}  {_fit(row[1], second):<{second}}  "
        f"{row[2]:>{votes}}  {row[3]:>{share}}"
    ).rstrip()


def _title(race: RaceResult) -> list[str]:
    contest = f"{race.contest_name or race.contest_id} ({race.race_id or race.contest_id})"
    unit = race.unit
    where = unit.name if unit.level == "national" else f"{unit.level} {unit.id} {unit.name}"
    parts = [contest, where.strip()]
    if not race.race_id:
        parts.append(f"sum of {len(race.race_ids)} races")
    elif race.race_unit is not None and race.race_unit != unit:
        outer = race.race_unit
        parts.append(
            "national race" if outer.level == "national" else f"race of {outer.level} {outer.id}"
        )
    return parts


def _rows(race: RaceResult, by: str | None) -> tuple[tuple[str, str], list[_Row]]:
    if by is None:
        by = "candidates" if race.candidates else "parties" if race.parties else "options"
    if by == "candidates":
        if not race.candidates:
            where = "the nation" if race.unit.level == "national" else race.unit.id
            raise _UsageError(
                f"{race.contest_id} sums {len(race.race_ids)} races in {where}, so it has no "
                "candidates there: use --by parties, or choose one race with --state or "
                "--district"
            )
        rows = [(c.name, c.affiliation, f"{c.votes:,}", _share(c.share)) for c in race.candidates]
        return ("candidate", "party"), rows
    if by == "parties":
        rows = [(p.abbreviation, p.name, f"{p.votes:,}", _share(p.share)) for p in race.parties]
        return ("party", "name"), rows
    rows = [(o.id, o.name, f"{o.votes:,}", _share(o.share)) for o in race.options]
    return ("option", "name"), rows


def _cmd_latest(args: argparse.Namespace) -> int:
    with _client(args) as client:
        before = client.trusted_state
        cut = client.latest()
        screen = None if args.json else _screen(cut, args, _terminal())
    _say(f"verified cut {cut.cut_number} (tree size {cut.tree_size})")
    if screen is None:
        write_json(cut, sys.stdout)
    else:
        print("\n".join(screen.plain()))
    if args.if_newer and before is not None and before.cut_number >= cut.cut_number:
        return EXIT_NOTHING_NEW
    if args.if_changed and not cut.results_changed:
        return EXIT_NOTHING_NEW
    return EXIT_OK


def _live_view(screen: _Screen, *, link: _Link | None = None) -> RenderableType:
    """The screen as rich renderables: the same lines, the rows in a table; with
    ``link``, the state of the connection and the cut's age on the first line."""
    # rich is an optional extra, imported only when the live table is drawn
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    if link is not None:
        now = _utcnow()
        parts.append(Text(link.text(now), style=link.style(now), overflow="ellipsis", no_wrap=True))
    if screen.banner:
        parts.append(Text(screen.banner, style="bold reverse red", overflow="ellipsis"))
    for line in screen.status:
        parts.append(Text(line, style="bold", overflow="ellipsis", no_wrap=True))
    for line in screen.title:
        parts.append(Text(line, style="bold cyan", overflow="ellipsis", no_wrap=True))
    for line in screen.completeness:
        parts.append(Text(line, overflow="ellipsis", no_wrap=True))
    table = Table(box=None, pad_edge=False, header_style="bold underline")
    first, second, votes, share = screen.widths()
    table.add_column(screen.columns[0], width=first, no_wrap=True, overflow="ellipsis")
    table.add_column(screen.columns[1], width=second, no_wrap=True, overflow="ellipsis")
    table.add_column("votes", width=votes, justify="right", no_wrap=True)
    table.add_column("share", width=share, justify="right", no_wrap=True)
    for row in screen.rows:
        table.add_row(*row)
    for row in screen.totals:
        table.add_row(*row, style="dim")
    parts.append(table)
    for line in screen.foot:
        parts.append(Text(line, style="dim", overflow="ellipsis", no_wrap=True))
    return Group(*parts)


def _cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        # Show the newest verified cut at once, then each new one.
        current = client.latest()
        _screen(current, args, (80, 24))  # bad view options fail now
        link = _Link(current, max_age=args.max_age)
        seen = 0
        if args.plain or not sys.stdout.isatty():

            def say(event: WatchEvent) -> None:
                link.event = event
                _say(f"veritally-client: {link.text(_utcnow())}")

            for cut in itertools.chain([current], client.watch(on_event=say)):
                link.shown(cut)
                doc = to_json(cut)
                race, _ = _chosen_race(cut, args)
                line = {"cut": doc["cut"], "national": doc["units"][0], "race": race_document(race)}
                print(json.dumps(line), flush=True)
                seen += 1
                if args.max_cuts and seen >= args.max_cuts:
                    break
            return EXIT_OK
        try:
            from rich.console import Console  # rich is an optional extra
            from rich.live import Live
        except ImportError:
            raise _UsageError(
                "the live table needs rich: pip install 'veritally-client[cli]'"
            ) from None
        # A console of its own: it measures the terminal (COLUMNS, LINES) when made. The
        # view is drawn again every second, so that the age of the cut shown and the
        # state of the connection are always current, also while no cut arrives.
        console = Console()
        view: list[_Screen] = []

        def draw() -> RenderableType:
            return _live_view(view[-1], link=link)

        def heard(event: WatchEvent) -> None:
            link.event = event

        view.append(_screen(current, args, _room(console.size)))
        with Live(console=console, get_renderable=draw, refresh_per_second=1, screen=False):
            for cut in itertools.chain([current], client.watch(on_event=heard)):
                link.shown(cut)
                view.append(_screen(cut, args, _room(console.size)))
                del view[:-1]
                seen += 1
                if args.max_cuts and seen >= args.max_cuts:
                    break
    return EXIT_OK


def _room(size: tuple[int, int]) -> tuple[int, int]:
    """The terminal less the line of the connection's state."""
    return size[0], size[1] - 1


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Link:
    """What the live view says of the connection and of the age of the cut it shows."""

    def __init__(self, cut: VerifiedCut, *, max_age: float) -> None:
        self.cut = cut
        self.max_age = max_age
        self.event: WatchEvent | None = None

    def shown(self, cut: VerifiedCut) -> None:
        """A verified cut is shown: the connection works."""
        self.cut = cut
        self.event = None

    def text(self, now: dt.datetime) -> str:
        """One line, what matters first: stale, reconnecting (attempt, next try), the
        age of the cut shown, why the last attempt failed; or live and the age."""
        age = max((now - self.cut.cut_time).total_seconds(), 0.0)
        shown = f"cut {self.cut.cut_number} shown is {_age(age)} old"
        stale = age > self.max_age
        event = self.event
        if event is not None and event.kind == "reconnecting":
            attempt = f"RECONNECTING (attempt {event.failures}, next in {event.retry_in:.1f} s)"
            why = " ".join(event.error.split())
            parts = [f"STALE: {shown}", attempt] if stale else [attempt, shown]
            return " · ".join([*parts, why])
        if stale:
            return f"STALE: {shown} · more than {_age(self.max_age)}: the view may be frozen"
        if event is not None and event.kind == "connected":
            return f"connected again · {shown}"
        return f"live · {shown}"

    def style(self, now: dt.datetime) -> str:
        age = (now - self.cut.cut_time).total_seconds()
        if age > self.max_age:
            return "bold reverse red"
        if self.event is not None and self.event.kind == "reconnecting":
            return "bold yellow"
        return "green"


def _age(seconds: float) -> str:
    """``seconds`` as people say it: 35 s, 4 min 10 s, 2 h 3 min."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _screen(cut: VerifiedCut, args: argparse.Namespace, size: tuple[int, int]) -> _Screen:
    """The view of ``cut`` the options choose, for a terminal of ``size`` (columns, lines;
    at most 100 columns are used, and at least 40 x 12)."""
    race, others = _chosen_race(cut, args)
    width = max(40, min(size[0], 100))
    height = max(12, size[1])
    return _Screen(cut, race, others, by=args.by, width=width, height=height)


def _check_acta_id(election: ElectionIndex, value: str) -> None:
    """Refuse an acta id the election definition does not have, before asking for it.

    Raises:
        _UsageError: not of the form <casilla>/<contest>.
        UnknownIdError: an unknown contest or casilla, or a casilla without that acta.
    """
    try:
        casilla_id, contest_id = parse_acta_id(value)
    except MalformedDataError as e:
        raise _UsageError(f"ACTA_ID: {e}") from None
    if contest_id not in election.contest_ids:
        raise unknown_id("contest", contest_id, election.contest_ids)
    if not election.has_casilla(casilla_id):
        raise unknown_id("casilla", casilla_id, (c.id for c in election.casillas))
    if election.race_of(casilla_id, contest_id) is None:
        held = [k for k in election.contest_ids if election.race_of(casilla_id, k) is not None]
        raise unknown_id(
            "acta",
            value,
            (f"{casilla_id}{ACTA_ID_SEPARATOR}{k}" for k in held),
            why=f"casilla {casilla_id!r} has no acta of contest {contest_id!r}",
        )


def _cmd_proof(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _check_acta_id(client.election(), args.acta_id)
        proven = client.prove_acta(args.acta_id, revision=args.revision)
    record = proven.record
    _say(
        f"acta {record.acta_id} revision {record.revision} is leaf {proven.leaf_index} of "
        f"the signed tree of size {proven.tree_size}"
    )
    doc = {
        "acta_id": record.acta_id,
        "revision": record.revision,
        "counted": record.counted,
        "leaf_index": proven.leaf_index,
        "tree_size": proven.tree_size,
        "image_sha256": record.acta.image_sha256.hex(),
        "option_votes": {o.option_id: o.votes for o in record.acta.option_votes},
        "unregistered_votes": record.acta.unregistered_votes,
        "null_votes": record.acta.null_votes,
        "proof": [h.hex() for h in proven.proof],
        "checkpoint": proven.checkpoint.decode("utf-8"),
    }
    print(json.dumps(doc, indent=2))
    return EXIT_OK


def _progress_bar(quiet: bool) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    if quiet:
        return None, lambda: None
    try:
        from rich.console import Console  # rich is an optional extra
        from rich.progress import Progress
    except ImportError:
        return None, lambda: None
    progress = Progress(console=Console(stderr=True), transient=False)
    task = progress.add_task("recount: leaves", total=None)
    progress.start()

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return update, progress.stop


def _cmd_audit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        # The newest cut first, so that the recount covers the whole log as it is now.
        client.latest()
        update, stop = _progress_bar(args.quiet)
        try:
            report = client.recount(progress=update)
        finally:
            stop()
    last = report.cuts[-1]  # a recounted log ends with a cut record
    if not args.quiet:
        _say(
            f"recounted cut {last.cut_number} (tree size {report.tree_size}, "
            f"{report.acta_records} acta records): root matches, {len(report.cuts)} cuts "
            "recomputed and matched"
        )
    doc = {
        "cut_number": last.cut_number,
        "tree_size": report.tree_size,
        "root_hash": report.root_hash.hex(),
        "acta_records": report.acta_records,
        "cuts_checked": len(report.cuts),
        "cuts": [
            {
                "cut_number": c.cut_number,
                "leaf_index": c.leaf_index,
                "acta_records": c.acta_records,
                "results_sha256": c.results_sha256.hex(),
                "final": c.final,
            }
            for c in report.cuts
        ],
    }
    print(json.dumps(doc, indent=2))
    return EXIT_OK


# The files of ``export --format A,B,... --output DIR``, one per format, in DIR.
_EXPORT_FILES: Final = {
    "csv": "results.csv",
    "json": "results.json",
    "nist": "results.nist.json",
    "prep": "prep",
}


def _cmd_export(args: argparse.Namespace) -> int:
    formats = list(dict.fromkeys(f.strip() for f in args.format.split(",") if f.strip()))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise _UsageError(
            f"--format: unknown format(s) {unknown}; one or more of {','.join(EXPORT_FORMATS)}"
        )
    several = len(formats) > 1
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(OPTION_KINDS))
    if unknown:
        raise _UsageError(f"--kinds: unknown row kinds {unknown}; one of {','.join(OPTION_KINDS)}")
    if args.all_levels and not set(formats) & {"csv", "json"}:
        raise _UsageError("--all-levels applies to --format csv and json")
    if args.contest is not None and formats != ["prep"]:
        raise _UsageError("--contest applies to --format prep alone")
    if several and args.output is None:
        raise _UsageError("several formats are written to a directory: give --output DIR")
    if formats == ["prep"] and args.output is None and args.contest is None:
        raise _UsageError("--format prep writes a directory: give --output DIR (or --contest)")
    extra: list[results_pb2.UnitResults] = []
    records: list[acta_pb2.ActaRecord] = []
    # One verified cut for every format: the files agree with each other.
    with _client(args) as client:
        cut = client.latest() if args.cut is None else client.cut(args.cut)
        election = client.election()
        if args.contest is not None and args.contest not in election.contest_ids:
            raise unknown_id("contest", args.contest, election.contest_ids)
        if args.all_levels:
            if args.cut is not None:
                raise _UsageError("--all-levels applies to the newest cut only")
            report = client.recount()
            extra = report.units("section") + report.units("casilla")
        if "prep" in formats:
            records = fetch_acta_records(client, cut)
    written: list[str] = []
    for fmt in formats:
        target = args.output / _EXPORT_FILES[fmt] if several else args.output
        if fmt == "prep" and target is not None:
            contests = None if args.contest is None else [args.contest]
            files = write_prep_files(
                cut, target, election=election, records=records, contest_ids=contests
            )
            written.append(f"{target} ({', '.join(p.name for p in files)})")
        elif target is None:
            with _utf8_stdout() as out:
                _write(fmt, args, cut, election, out, extra, records, kinds)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", encoding="utf-8", newline="") as out:
                _write(fmt, args, cut, election, out, extra, records, kinds)
            written.append(str(target))
    mark = "  REHEARSAL (test data)" if cut.test else ""
    where = f": {', '.join(written)}" if written else ""
    _say(f"exported cut {cut.cut_number} as {','.join(formats)}{mark}{where}")
    return EXIT_OK


@contextlib.contextmanager
def _utf8_stdout() -> Iterator[TextIO]:
    """stdout as UTF-8 with untranslated newlines, whatever the locale: an export's bytes
    are the same on every machine."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a text-only stream (redirected in-process): write text to it
        yield sys.stdout
        return
    sys.stdout.flush()
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="", write_through=True)
    try:
        yield out
    finally:
        out.flush()
        out.detach()


def _write(
    fmt: str,
    args: argparse.Namespace,
    cut: VerifiedCut,
    election: ElectionIndex,
    out: TextIO,
    extra: Sequence[results_pb2.UnitResults],
    records: Sequence[acta_pb2.ActaRecord],
    kinds: Sequence[str],
) -> None:
    if fmt == "csv":
        write_csv(cut, out, election=election, extra_units=extra, kinds=kinds)
    elif fmt == "json":
        write_json(cut, out, election=election, extra_units=extra)
    elif fmt == "nist":
        write_nist(cut, out, election=election)
    else:
        write_prep_csv(cut, out, election=election, contest_id=args.contest, records=records)


def _cmd_verify_bundle(args: argparse.Namespace) -> int:
    root = load_trust_root(_require(args.trust_root, "--trust-root"))
    report = verify_bundle(
        args.directory, trust_root=root, config=ClientConfig(allow_test=args.allow_test)
    )
    cut = report.latest
    _say(
        f"bundle verified: {len(report.recount.cuts)} cuts, {report.recount.tree_size} "
        f"leaves, newest cut {cut.cut_number}"
    )
    _summary(cut, sys.stdout)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    # Imported here: the HTTP server is needed by this command alone.
    from veritally_client._replay import LiveCut, Recording, check_pace, replay

    host, sep, port = args.listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise _UsageError(f"--listen: expected HOST:PORT, got {args.listen!r}")
    try:
        check_pace(speed=args.speed, hold=args.hold)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    root = load_trust_root(_require(args.trust_root, "--trust-root"))
    print(f"replay: verifying {args.directory}", flush=True)
    try:
        recording = Recording.open(
            args.directory, trust_root=root, config=ClientConfig(allow_test=args.allow_test)
        )
    except ValueError as e:
        raise _UsageError(str(e)) from None
    cuts = recording.cuts
    print(
        f"replay: verified {len(cuts)} cuts, tree size {cuts[-1].tree_size}; signatures and "
        "cut times are the authority's (clients need --max-age to accept old cuts)",
        flush=True,
    )

    def serving(url: str) -> None:
        print(f"replay: serving {url} from cut {args.from_cut} at speed {args.speed:g}", flush=True)

    def live(event: LiveCut) -> None:
        if event.round > 1 and event.cut.cut_number == args.from_cut:
            print(f"replay: round {event.round} from cut {args.from_cut}", flush=True)
        c = event.cut
        print(
            f"cut {c.cut_number} live  {c.cut_time_text}  tree size {c.tree_size}  "
            f"acta records {c.acta_records}  night +{_clock(event.night_seconds)}",
            flush=True,
        )

    try:
        replay(
            recording,
            listen=(host.strip("[]"), int(port)),
            speed=args.speed,
            from_cut=args.from_cut,
            hold=args.hold,
            loop=args.loop,
            on_serving=serving,
            on_live=live,
        )
    except ValueError as e:
        raise _UsageError(str(e)) from None
    print(f"replay: done, cut {cuts[-1].cut_number} was the last", flush=True)
    return EXIT_OK


def _clock(seconds: float) -> str:
    """``seconds`` as H:MM:SS."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _require(value: Path | None, name: str) -> Path:
    if not value:
        raise _UsageError(f"{name} is required")
    return value


def _cmd_evidence(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sys.stdout.write(client.export_evidence().decode("utf-8"))
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "latest": _cmd_latest,
    "watch": _cmd_watch,
    "proof": _cmd_proof,
    "audit": _cmd_audit,
    "export": _cmd_export,
    "verify-bundle": _cmd_verify_bundle,
    "replay": _cmd_replay,
    "evidence": _cmd_evidence,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``veritally-client``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except _UsageError as e:
        _say(f"veritally-client: error: {e}")
        return EXIT_USAGE
    except StalledError as e:
        # Authentic, but the pipeline behind it is stuck: not a forgery, not the network.
        _say(f"veritally-client: PIPELINE STALLED: {e}")
        return EXIT_STALLED
    except UnknownIdError as e:
        _say(f"veritally-client: unknown id: {e}")
        return EXIT_UNKNOWN_ID
    except (StateDirectoryError, CredentialsError) as e:
        # A local mistake (another night's or another process's state directory).
        _say(f"veritally-client: error: {e}")
        return EXIT_USAGE
    except (VerificationError, TrustRootError) as e:
        _say(f"veritally-client: VERIFICATION FAILED ({type(e).__name__}): {e}")
        return EXIT_VERIFICATION
    except TransportError as e:
        _say(f"veritally-client: transport failure: {e}")
        return EXIT_TRANSPORT
    except BrokenPipeError:
        # The reader went away (`| head`): what it wanted was written; exit quietly, and
        # keep the interpreter from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except OSError as e:
        _say(f"veritally-client: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130  # the shell convention for SIGINT
