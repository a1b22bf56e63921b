"""``veritally status``: the operations room's console of a running stack.

It reads the stack's ``prometheus.yml`` (written by ``veritally up`` into
``<state>/prometheus/``) for the ``/metrics`` address of every service and of the
supervisor, scrapes them (:mod:`veritally.metrics.status`) and shows capture progress
per outcome state and per geographic state (the newest cut's PREP figures, read from
the bundle), the cross-check queue, conflicts, rejects by reason, the lag of
aggregation and publication behind ingest, the last cut and its age, and when the
certificates and the CRL expire. Live (refreshed every ``--interval`` seconds) until
Ctrl-C; ``--once`` prints the table once, ``--json`` prints the figures once as JSON.

Exit statuses: 0; 1 when the state directory has no scrape configuration (the stack
was never started there); 2 with ``--once``/``--json`` when a job did not answer (the
figures of the others are still printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from veritally.metrics.progress import ProgressUnavailableError, read_progress
from veritally.metrics.prometheus import CONFIG_NAME, scrape_targets
from veritally.metrics.status import Status, scrape, status_from
from veritally.state import StateDir

__all__ = ["add_arguments", "render", "run"]

# Bounds of --interval (seconds): faster than a scrape is pointless, slower than a few
# cut intervals hides a stale cut.
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0
_DAY_S = 86_400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``veritally status``."""
    parser.add_argument("--state", type=Path, default=Path("state"), help="state directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print the table once and exit")
    mode.add_argument("--json", action="store_true", help="print the figures once as JSON")
    parser.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (live view)"
    )


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _left(expiry: float | None, now: float) -> str:
    if expiry is None:
        return "?"
    days = (expiry - now) / _DAY_S
    return f"{days:.1f} d" if days >= 1 else f"{(expiry - now) / 3600:.1f} h"


def render(status: Status, *, title: str, now: float) -> Table:
    """The console's table of ``status`` (``now``: Unix time, for ages and expiries)."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("figures")
    services = " · ".join(
        f"{job} {'up' if up else '[red]DOWN[/red]'}" for job, up in status.up.items()
    )
    table.add_row("services", services)
    # Every state seen, and accepted always (the figure the room follows).
    captures = " · ".join(
        f"{state.replace('_', ' ')} {n:,}"
        for state, n in status.captures.items()
        if n or state == "accepted"
    )
    table.add_row("captures", f"received {_n(status.received)} · {captures}")
    table.add_row(
        "cross-check queue",
        f"{_n(status.pending.get('cross_check'))} actas · awaiting second capture "
        f"{_n(status.pending.get('awaiting_second_capture'))}",
    )
    table.add_row("conflicts", _n(status.conflicts))
    rejects = " · ".join(f"{code} {n:,}" for code, n in sorted(status.rejected.items()))
    table.add_row("rejects", rejects or "none")
    table.add_row("acta log", f"{_n(status.log_records)} records")
    table.add_row("aggregation lag", f"{_n(status.aggregation_lag)} records behind ingest")
    table.add_row("publication lag", f"{_n(status.publication_lag)} records behind ingest")
    if status.last_cut is None:
        cut = "none yet"
    else:
        age = "?" if status.last_cut_age_s is None else f"{status.last_cut_age_s:.1f} s ago"
        cut = f"#{status.last_cut} · {age} · {_n(status.cut_records)} actas"
        cut += " · final" if status.final else ""
    table.add_row("last cut", cut)
    expiries = " · ".join(
        f"{role} {_left(ts, now)}" for role, ts in sorted(status.certificates_expiry.items())
    )
    table.add_row("certificates", expiries or "?")
    table.add_row("CRL", _left(status.crl_expiry, now))
    table.add_row("capture by state", _by_state(status))
    for job, error in status.errors.items():
        table.add_row(f"[red]{job}[/red]", error)
    return table


def _by_state(status: Status) -> str:
    # The first contest of the definition (the presidency in a federal election): one
    # figure per state keeps the console on one screen; --json has every contest.
    if status.states_error is not None:
        return f"? ({status.states_error})"
    if not status.states:
        return "?"
    contest = next(iter(status.states[0]["contests"]), None)
    if contest is None:
        return "?"
    shown = " · ".join(
        f"{s['name']} {s['contests'][contest]['captured_percent']:.1f}%"
        for s in status.states
        if contest in s["contests"]
    )
    return f"{contest}, cut #{status.progress_cut}: {shown}"


def _with_progress(status: Status, state: StateDir) -> Status:
    try:
        cut, states = read_progress(state.bundle)
    except ProgressUnavailableError as e:
        return replace(status, states_error=str(e))
    return replace(status, progress_cut=cut, states=[s.to_json() for s in states])


def _read(targets: dict[str, str], state: StateDir) -> Status:
    return _with_progress(status_from(scrape(targets)), state)


def _title(state: StateDir) -> str:
    return f"veritally status · {state.root} · {time.strftime('%H:%M:%S', time.gmtime())} UTC"


def run(args: argparse.Namespace) -> int:
    """Show the console; see the module docstring for the exit statuses."""
    state = StateDir(args.state)
    config = state.prometheus / CONFIG_NAME
    try:
        targets = scrape_targets(config.read_text())
    except (OSError, ValueError) as e:
        print(
            f"veritally status: no scrape configuration at {config} ({e}); "
            "start the stack with `veritally up --state DIR` first",
            file=sys.stderr,
        )
        return 1
    if not MIN_INTERVAL_S <= args.interval <= MAX_INTERVAL_S:
        print(
            f"veritally status: --interval must be in {MIN_INTERVAL_S}..{MAX_INTERVAL_S} s",
            file=sys.stderr,
        )
        return 1
    if args.json or args.once:
        status = _read(targets, state)
        if args.json:
            print(json.dumps(status.to_json(), indent=2, sort_keys=True))
        else:
            Console().print(render(status, title=_title(state), now=time.time()))
        return 0 if all(status.up.values()) else 2
    console = Console()
    try:
        with Live(console=console, auto_refresh=False) as live:
            while True:
                status = _read(targets, state)
                live.update(render(status, title=_title(state), now=time.time()), refresh=True)
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
