"""``veritally demo``: replay a national election night through the real stack and verify it.

``make demo`` runs ``veritally demo --state state``. In order:

1. **State.** Creates what is missing in the state directory (PKI for the trust domain
   ``veritally.example`` with capture centres, media outlets and an operator; the
   publisher's signing key; trust root v1; a synthetic national election). A rerun keeps
   the PKI, keys, trust root and (if it has the same seed and size) the election, and
   wipes the stores, bundle, logs and client state: every run is a fresh election night.
2. **Stack.** Starts ingest, aggregation, publication and Envoy (``veritally.stack``).
   The steps below are :mod:`veritally.demo`; this module parses and displays.
3. **Capture.** Replays every acta of ``election/actas.csv`` in arrival order THROUGH THE
   EDGE, with the capture centres' certificates: each centre of the file is served by
   one of the PKI's capture-centre identities, several in parallel, in batches on the
   ``SubmitActas`` stream. With double capture (the default), every acta is captured
   twice, by two operators, and logged when the second capture agrees.
   ``--speed X`` replays the night X times faster than the clock of the actas' capture
   times; ``--speed 0`` (the default) sends as fast as the stack accepts.
4. **Watch.** Meanwhile a media client (the SDK ``Client`` through the edge with a media
   certificate) follows every cut with ``watch()``, verifies each one (signature,
   inclusion of the cut record, results digest, no rollback, consistency with the last
   verified tree, freshness) and shows a live table of the national presidential
   results.
5. **Finish.** Waits for a cut covering every logged acta, runs a full recount with the
   SDK (every leaf downloaded, the root recomputed, the results of every cut recomputed
   and compared with what was signed), prints the verified national result, writes
   ``STATE/demo-summary.json``, and stops the stack cleanly.

Exit status: 0 when everything verified; 3 when a cut, a proof or the recount did not
verify (the SDK's VerificationError); 1 when an acta could not be submitted or the stack
failed; 2 on bad arguments; 130 when interrupted (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veritally.cli.up import add_witness_arguments
from veritally.demo.media import MediaWatcher
from veritally.demo.night import (
    CONTEST,
    DemoError,
    NightOptions,
    Recount,
    capture_night,
    contest,
    prepare_state,
    recount_night,
    summary,
)
from veritally.demo.replay import CaptureStats
from veritally.election import ElectionFiles, load_actas, load_election
from veritally.election.generate import DEFAULT_CASILLAS
from veritally.importing import count_rows
from veritally.launch import DEFAULT_INTERVAL_SECONDS
from veritally.localwitnesses import WitnessPolicyError, check_policy
from veritally.mesh.envoy import DEFAULT_BASE_PORT
from veritally.pki import PkiError
from veritally.stack import Stack, StackError
from veritally.state import DEFAULT_SEED, StateDir
from veritally_client import VerificationError, VerifiedCut, VeritallyError
from veritally_client.protocol.pb import results_pb2

__all__ = ["EXIT_VERIFICATION_FAILED", "add_arguments", "run"]

# Seconds between plain progress lines when there is no live table.
PROGRESS_EVERY_S = 10.0
# Exit status when something did not verify: distinct from operational failures (1).
EXIT_VERIFICATION_FAILED = 3
# Options listed in the live table (the rest share one row), so that it fits a terminal.
LIVE_OPTIONS = 8


# ------------------------------------------------------------------------------------
# display


def _pct(e4: int) -> str:
    # Completeness percentages are sent as integers in units of 1e-4 percent.
    return f"{e4 / 10_000:.2f} %"


def _results_table(
    totals: results_pb2.ContestTotals, *, title: str, top: int | None = None
) -> Table:
    """Options by votes; with ``top``, only the first ``top`` and one row for the rest
    (the live view must fit a terminal)."""
    table = Table(title=title, box=box.SIMPLE_HEAD if top else box.HEAVY_HEAD)
    table.add_column("option")
    table.add_column("votes", justify="right")
    table.add_column("share", justify="right")
    total = max(totals.total_votes, 1)
    options = sorted(totals.options, key=lambda o: -o.votes)
    shown = options if top is None else options[:top]
    for option in shown:
        table.add_row(option.option_id, f"{option.votes:,}", f"{100 * option.votes / total:.2f} %")
    rest = options[len(shown) :]
    if rest:
        votes = sum(o.votes for o in rest)
        table.add_row(f"{len(rest)} other options", f"{votes:,}", f"{100 * votes / total:.2f} %")
    if top is None:
        table.add_row("unregistered", f"{totals.unregistered_votes:,}", "")
        table.add_row("null", f"{totals.null_votes:,}", "")
    table.add_row("total", f"{totals.total_votes:,}", "", style="bold")
    return table


def _live_view(stats: CaptureStats, watcher: MediaWatcher, expected_actas: int) -> Group:
    answered = sum(stats.status.values())
    capture = (
        f"[bold]capture[/] through the edge: actas read {stats.actas:,}/{expected_actas:,} · "
        f"captures answered {answered:,}/{stats.captures:,} · "
        f"actas logged {len(stats.logged):,} · {stats.rate():,.0f} captures/s · "
        f"retries {stats.retries}"
    )
    parts: list[Any] = [capture]
    seen = watcher.latest
    if seen is None:
        parts.append("[dim]media client: waiting for the first verified cut...[/]")
        return Group(*parts)
    cut = seen
    shown = contest(cut.national(), CONTEST)
    completeness = shown.completeness
    age = (dt.datetime.now(dt.UTC) - cut.cut_time).total_seconds()
    parts.append(
        _results_table(
            shown,
            title=f"national {CONTEST} — cut {cut.cut_number}, verified ✓",
            top=LIVE_OPTIONS,
        )
    )
    footer = (
        f"[bold]media[/] outlet-01: cut {cut.cut_number} · tree size {cut.tree_size:,} · "
        f"acta records {cut.acta_records:,} · "
        f"captured {_pct(completeness.captured_percent_e4)} · "
        f"counted {_pct(completeness.counted_percent_e4)} · "
        f"[green]{watcher.verified} cuts verified ✓[/] · cut age {age:.1f} s"
    )
    parts.append(footer)
    return Group(*parts)


def _line(stats: CaptureStats, watcher: MediaWatcher) -> str:
    """One plain progress line (logs, CI, --no-live)."""
    answered = sum(stats.status.values())
    line = (
        f"[{stats.seconds():6.1f} s] actas read {stats.actas:,}, captures answered "
        f"{answered:,}, actas logged {len(stats.logged):,}, {stats.rate():,.0f} captures/s"
    )
    seen = watcher.latest
    if seen is not None:
        line += (
            f"; media: cut {seen.cut_number} verified, {seen.acta_records:,} "
            f"acta records, {watcher.verified} cuts verified"
        )
    return line


@contextlib.contextmanager
def _progress_display(
    console: Console, view: Callable[[], Group], *, live: bool, lines: Callable[[], str]
) -> Iterator[None]:
    """A rich Live table refreshed twice a second on a terminal; elsewhere one plain
    line every PROGRESS_EVERY_S seconds. Shows the final state on exit."""
    stop = threading.Event()
    if live:
        with Live(view(), console=console, refresh_per_second=4) as display:

            def refresh() -> None:
                while not stop.wait(0.5):
                    display.update(view())

            refresher = threading.Thread(target=refresh, name="demo-view", daemon=True)
            refresher.start()
            try:
                yield
            finally:
                stop.set()
                refresher.join()
                display.update(view())
        return

    def report() -> None:
        while not stop.wait(PROGRESS_EVERY_S):
            console.print(lines(), highlight=False)

    reporter = threading.Thread(target=report, name="demo-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
        console.print(lines(), highlight=False)


# ------------------------------------------------------------------------------------
# the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``veritally demo``."""
    parser.add_argument("--state", type=Path, default=Path("state"), help="state directory")
    parser.add_argument(
        "--casillas",
        type=int,
        default=DEFAULT_CASILLAS,
        help=f"casillas of the synthetic election (default {DEFAULT_CASILLAS:,}, national)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the election")
    parser.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="replay pace: X times the clock of the actas' capture times (0: as fast as "
        "the stack accepts)",
    )
    parser.add_argument(
        "--single-capture",
        action="store_true",
        help="one capture per acta (default: two operators capture each acta)",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help=f"first port of the layout (default {DEFAULT_BASE_PORT}; 0 picks free ports)",
    )
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_SECONDS, help="seconds between cuts"
    )
    parser.add_argument("--no-live", action="store_true", help="plain progress lines, no table")
    parser.add_argument(
        "--pin",
        type=Path,
        help="trust root the media client pins (default STATE/trust-root/trust-root-v1.binpb, "
        "with witnesses the newest version)",
    )
    add_witness_arguments(parser)


@dataclass(frozen=True)
class Night:
    """The night being replayed: what was asked, the election and the actas' count."""

    options: NightOptions
    files: ElectionFiles
    expected: int


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: the stack is stopped


def _capture(
    args: argparse.Namespace,
    console: Console,
    stack: Stack,
    night: Night,
    stats: CaptureStats,
    watcher: MediaWatcher,
) -> int:
    """Replay the night under the live view; returns the acta records to cover."""
    options, expected = night.options, night.expected
    mode = "double capture" if options.double_capture else "single capture"
    pace = "as fast as the stack accepts" if args.speed <= 0 else f"{args.speed:g}x"
    console.print(
        f"replaying {expected:,} actas ({mode}, {pace}) through the edge with "
        f"{len(stack.pki.identities('capture'))} capture-centre certificates; "
        "outlet-01 watches and verifies every cut"
    )
    actas = load_actas(night.files, stack.state.actas_csv)

    def view() -> Group:
        return _live_view(stats, watcher, expected)

    live = not args.no_live and console.is_terminal
    with _progress_display(console, view, live=live, lines=lambda: _line(stats, watcher)):
        seen = capture_night(stack, actas, stats, watcher, options)
    capture_s = stats.seconds()
    console.print(
        f"capture: {stats.actas:,} actas, {sum(stats.status.values()):,} captures "
        f"answered in {capture_s:.1f} s ({stats.rate():,.0f} captures/s, "
        f"{stats.actas / max(capture_s, 1e-9):,.0f} actas/s); outcomes "
        f"{dict(sorted(stats.status.items()))}; {len(stats.logged):,} actas logged; "
        f"{stats.retries} retries"
    )
    console.print(
        f"cut {seen.cut_number} covers all {seen.acta_records:,} logged actas "
        f"(tree size {seen.tree_size:,}); {watcher.verified} cuts verified"
    )
    return len(stats.logged)


def _recount(console: Console, watcher: MediaWatcher, target: int) -> Recount:
    """The full recount under a progress bar, then the verified result."""
    progress = Progress(
        TextColumn("recount"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("leaves"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks = []

    def on_latest(latest: VerifiedCut) -> None:
        tasks.append(progress.add_task("recount", total=latest.tree_size))

    def advance(done: int, total: int) -> None:
        progress.update(tasks[0], completed=done, total=total)

    with progress:
        recount = recount_night(watcher, target, on_latest=on_latest, progress=advance)
    latest, recounted = recount.latest, recount.recounted
    console.print(
        f"recount: {recount.report.tree_size:,} leaves, root recomputed, "
        f"{len(recount.report.cuts)} cuts' results recomputed and matched in "
        f"{recount.seconds:.1f} s"
    )
    console.print(
        _results_table(
            recounted,
            title=f"VERIFIED national result, {CONTEST} (cut {latest.cut_number}, "
            f"tree size {latest.tree_size:,}, recounted ✓)",
        )
    )
    c = recounted.completeness
    console.print(
        f"actas expected {c.actas_expected:,}, captured {c.actas_captured:,} "
        f"({_pct(c.captured_percent_e4)}), counted {c.actas_counted:,} "
        f"({_pct(c.counted_percent_e4)}), turnout {_pct(c.turnout_percent_e4)}"
    )
    return recount


def _run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    wall = time.monotonic()
    seconds: dict[str, float] = {}
    state = StateDir(args.state)
    options = NightOptions(
        casillas=args.casillas, seed=args.seed, speed=args.speed, single_capture=args.single_capture
    )
    console.print(f"[bold]veritally demo[/]: state directory {state.root}")
    t = time.monotonic()
    for line in prepare_state(state, casillas=args.casillas, seed=args.seed):
        console.print(f"  created {line}")
    seconds["prepare"] = time.monotonic() - t
    night = Night(
        options=options,
        files=load_election(state.election_yaml),
        expected=count_rows(state.actas_csv),
    )
    stack = Stack(
        state,
        base_port=args.base_port or None,
        single_capture=args.single_capture,
        interval_s=args.interval,
        witnesses=args.witnesses,
        witness_threshold=args.witness_threshold,
    )
    console.print("starting ingest, aggregation, publication and Envoy...")
    t = time.monotonic()
    stack.start()
    seconds["stack_start"] = time.monotonic() - t
    try:
        e = stack.endpoints
        console.print(
            f"stack up in {seconds['stack_start']:.1f} s: edge {e.edge}, REST "
            f"https://{e.rest}/v1/cuts/latest, admin http://{e.admin}/, logs {state.logs}"
        )
        watcher = MediaWatcher(
            stack, outlet="outlet-01", state_dir=state.media / "outlet-01", pin=args.pin
        )
        watcher.start()
        stats = CaptureStats()
        target = _capture(args, console, stack, night, stats, watcher)
        seconds["capture"] = stats.seconds()
        recount = _recount(console, watcher, target)
        seconds["recount"] = recount.seconds
    finally:
        console.print("stopping the stack (drain, then stop)...")
        t = time.monotonic()
        stack.stop()
        seconds["stack_stop"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - wall
    return summary(
        options,
        expected=night.expected,
        stats=stats,
        watcher=watcher,
        recount=recount,
        seconds=seconds,
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the whole night verified (see the module for the others)."""
    if args.casillas < 1 or args.speed < 0 or args.interval <= 0:
        print("veritally demo: --casillas >= 1, --speed >= 0, --interval > 0", file=sys.stderr)
        return 2
    if args.witnesses is not None or args.witness_threshold is not None:
        try:
            check_policy(args.witnesses or 0, args.witness_threshold)
        except WitnessPolicyError as e:
            print(f"veritally demo: {e}", file=sys.stderr)
            return 2
    console = Console(stderr=False, force_terminal=None)
    state = StateDir(args.state)
    summary_path = state.root / "demo-summary.json"
    with contextlib.suppress(FileNotFoundError):
        summary_path.unlink()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = _run(args, console)
    except KeyboardInterrupt:
        console.print("[bold yellow]interrupted[/]: the stack was stopped")
        return 130
    except VerificationError as e:
        console.print(f"[bold red]VERIFICATION FAILED[/]: {type(e).__name__}: {e}")
        return EXIT_VERIFICATION_FAILED
    except (DemoError, StackError, VeritallyError, PkiError, OSError, ValueError) as e:
        console.print(f"[bold red]demo failed[/]: {type(e).__name__}: {e}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    s = result["seconds"]
    console.print(
        f"[bold green]verified national result printed above[/]; demo took {s['total']:.0f} s "
        f"(capture {s['capture']:.0f} s at {result['captures_per_second']:,.0f} captures/s); "
        f"summary in {summary_path}"
    )
    return 0
