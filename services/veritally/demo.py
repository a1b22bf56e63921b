"""``veritally demo``: replay a national election night through the real stack and verify it.

``make demo`` runs ``veritally demo --state state``. In order:

1. **State.** Creates what is missing in the state directory (PKI for the trust domain
   ``veritally.example`` with capture centres, media outlets and an operator; the
   publisher's signing key; trust root v1; a synthetic national election). A rerun keeps
   the PKI, keys, trust root and (if it has the same seed and size) the election, and
   wipes the stores, bundle, logs and client state: every run is a fresh election night.
2. **Stack.** Starts ingest, aggregation, publication and Envoy (``veritally.stack``).
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
import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veritally import errors
from veritally.capture import (
    Answer,
    Batcher,
    CaptureClient,
    CaptureConfig,
    CaptureCounters,
    CaptureError,
    Operator,
)
from veritally.pki import PkiError
from veritally.stack import DEFAULT_INTERVAL_S, Stack, StackError
from veritally.state import DEFAULT_SEED, Bootstrap, StateDir
from veritally_client import (
    Client,
    ClientConfig,
    TlsCredentials,
    VerificationError,
    VerifiedCut,
    VeritallyError,
    load_trust_root,
)
from veritally_client.protocol.pb import acta_pb2, ingest_pb2, results_pb2

log = logging.getLogger(__name__)

__all__ = ["CaptureStats", "add_arguments", "replay", "run"]

ActaPb = acta_pb2.Acta

# Actas per SubmitActas message. Ingest commits one SQLite transaction per message, so a
# few hundred amortise the fsync; Envoy counts one call per stream against the centre's
# budget (docs/mesh.md), so bigger batches also keep a fast replay within it.
BATCH = 500
# Streams in flight per capture centre: one being committed while the next is on the wire.
STREAMS_PER_CENTRE = 2
# Longest a partly filled batch waits for more actas in a paced replay (seconds).
FLUSH_S = 0.5
# Retries, backoff and deadlines are the capture client's (veritally.capture): a batch
# keeps being sent for up to its retry budget (120 s) after Envoy's rate limit or a
# restarting service.

# How long the end of the demo waits for publication to cut over every logged acta
# (seconds): a few cut intervals after the last acta, plus aggregation catching up.
CATCH_UP_TIMEOUT_S = 300.0
# The media client's freshness bound (seconds): several missed cuts at the default
# interval is already alarming, but a restarted publication must be able to catch up.
MEDIA_MAX_AGE_S = 120.0
# Seconds between plain progress lines when there is no live table.
PROGRESS_EVERY_S = 10.0
CONTEST = "PRES"  # the contest shown live
# Exit status when something did not verify: distinct from operational failures (1).
EXIT_VERIFICATION_FAILED = 3
# Options listed in the live table (the rest share one row), so that it fits a terminal.
LIVE_OPTIONS = 8


# ------------------------------------------------------------------------------------
# capture


@dataclass
class CaptureStats:
    """What the replay sent and what ingest answered.

    Attributes:
        actas: actas read from the file.
        captures: captures submitted (twice the actas with double capture).
        status: outcome counts of the last answer for each capture.
        logged: acta ids ingest logged (ACCEPTED, or DUPLICATE of a logged revision).
        counters: streams sent and retried (per status) by the capture client.
        started: monotonic start time.
        finished: monotonic end time (0 while running).
    """

    actas: int = 0
    captures: int = 0
    status: Counter[str] = field(default_factory=Counter)
    logged: set[str] = field(default_factory=set)
    counters: CaptureCounters = field(default_factory=CaptureCounters)
    started: float = field(default_factory=time.monotonic)
    finished: float = 0.0

    def seconds(self) -> float:
        """Elapsed seconds of the replay."""
        return (self.finished or time.monotonic()) - self.started

    def rate(self) -> float:
        """Captures answered per second."""
        return sum(self.status.values()) / max(self.seconds(), 1e-9)

    @property
    def retries(self) -> int:
        """Batches sent again after a retryable error."""
        return self.counters.total_retries

    def answered(self, answer: Answer) -> None:
        """Count ingest's answer to one stream."""
        for outcome in answer.outcomes:
            name = ingest_pb2.OutcomeStatus.Name(outcome.status).removeprefix("OUTCOME_STATUS_")
            self.status[name] += 1
            if outcome.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED or (
                outcome.status == ingest_pb2.OUTCOME_STATUS_DUPLICATE and outcome.revision > 0
            ):
                self.logged.add(outcome.acta_id)


# The operators of each capture centre who capture an acta the first and second time:
# their certificates (``cc-01/op-1``...) are what tells them apart, not a field.
FIRST_OPERATOR = "op-1"
SECOND_OPERATOR = "op-2"


def _capture_time(acta: ActaPb) -> float:
    return float(acta.provenance.captured_time.seconds)


class _Paced:
    """Releases actas at ``speed`` times the pace of their capture times (0: at once)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.first: float | None = None
        self.start = time.monotonic()

    def delay(self, acta: ActaPb) -> float:
        if self.speed <= 0:
            return 0.0
        t = _capture_time(acta)
        if self.first is None:
            self.first = t
        due = self.start + max(0.0, t - self.first) / self.speed
        return max(0.0, due - time.monotonic())


async def replay(
    stack: Stack,
    actas: Iterator[ActaPb],
    stats: CaptureStats,
    *,
    speed: float = 0.0,
    double_capture: bool = True,
    centres: list[str] | None = None,
) -> CaptureStats:
    """Submit ``actas`` through the edge with the capture centres' certificates.

    Args:
        stack: the running stack.
        actas: in arrival order.
        stats: updated as answers arrive (read it from another task for progress).
        speed: replay pace relative to the actas' capture times; 0 for as fast as possible.
        double_capture: send each acta a second time from another operator.
        centres: capture centres to use (default: every one in the PKI). Each acta is
            sent by the centre its casilla is assigned to (its provenance's centre in
            the actas file), with the certificate of that centre's first operator, and
            again with the second operator's.

    Returns:
        ``stats``, finished.

    Raises:
        ExceptionGroup: of veritally.capture.CaptureError, when a batch failed with a
            non-retryable status or kept failing beyond the retry budget.
    """
    names = centres or [i.name for i in stack.pki.identities("capture") if "/" not in i.name]
    if not names:
        raise ValueError("the PKI has no capture-centre identity")
    known = set(names)
    stats.started = time.monotonic()
    # Each centre's captures travel on its operators' channels (their certificates are
    # their identities): the first operator's, then the second's for double capture.
    operators = [FIRST_OPERATOR, SECOND_OPERATOR] if double_capture else [FIRST_OPERATOR]
    client = CaptureClient(
        target=stack.endpoints.edge,
        operators={n: [Operator(tls=stack.tls(f"{n}/{op}")) for op in operators] for n in names},
        config=CaptureConfig(batch=BATCH, streams=STREAMS_PER_CENTRE),
        counters=stats.counters,
    )

    async def produce() -> AsyncIterator[tuple[str, ingest_pb2.SubmitActasRequest]]:
        paced = _Paced(speed)
        batcher = Batcher(BATCH)
        last_flush = last_yield = time.monotonic()
        for acta in actas:
            wait = paced.delay(acta)
            if wait > 0:
                # A paced replay holds an acta at most about FLUSH_S: what is pending
                # goes out before a long wait, or once it has waited that long. Fewer,
                # fuller batches keep each centre within its call budget at Envoy.
                if wait >= FLUSH_S or time.monotonic() - last_flush >= FLUSH_S:
                    for item in batcher.flush():
                        yield item
                    last_flush = time.monotonic()
                await asyncio.sleep(wait)
            cc = acta.provenance.capture_centre_id
            name = cc if cc in known else names[zlib.crc32(cc.encode()) % len(names)]
            stats.actas += 1
            stats.captures += len(operators)
            if (message := batcher.add(name, acta)) is not None:
                yield name, message
            now = time.monotonic()
            if now - last_yield > FLUSH_S:
                last_yield = now
                await asyncio.sleep(0)  # let the senders run while parsing
        for item in batcher.flush():
            yield item

    async with client:
        await client.run(produce(), stats.answered)
    stats.finished = time.monotonic()
    return stats


# ------------------------------------------------------------------------------------
# the media client


class MediaWatcher(threading.Thread):
    """A media outlet following every cut through the edge with the SDK, verifying each.

    Stops after a cut covering ``target`` acta records once :meth:`finish` has been
    called, or at :meth:`abort`. The first verification error stops it and is kept in
    ``error``.
    """

    def __init__(
        self, stack: Stack, *, outlet: str, state_dir: Path, pin: Path | None = None
    ) -> None:
        """Describe the watcher; :meth:`start` runs it.

        Raises:
            veritally.pki.PkiError: no such outlet.
            veritally_client.TrustRootError: the pinned trust root is invalid.
        """
        super().__init__(name=f"media-{outlet}", daemon=True)
        tls = stack.tls(outlet)
        self.credentials = TlsCredentials.from_files(ca=tls.ca, cert=tls.cert, key=tls.key)
        # Media pin the first trust root out of band; ``pin`` names another file.
        self.trust_root = load_trust_root(pin or stack.state.trust_root_v1)
        self.endpoint = stack.endpoints.edge
        self.state_dir = state_dir
        self.config = ClientConfig(max_checkpoint_age=MEDIA_MAX_AGE_S, watch_backoff_max=2.0)
        self.latest: VerifiedCut | None = None
        self.verified = 0
        self.error: BaseException | None = None
        self.target: int | None = None
        self._abort = threading.Event()
        self.done = threading.Event()

    def client(self) -> Client:
        """A new SDK client with the watcher's identity, trust root and state."""
        return Client(
            endpoint=self.endpoint,
            trust_root=self.trust_root,
            state_dir=self.state_dir,
            credentials=self.credentials,
            config=self.config,
        )

    def finish(self, target: int) -> None:
        """Stop after a verified cut covering ``target`` acta records."""
        self.target = target

    def abort(self) -> None:
        """Stop at the next cut."""
        self._abort.set()

    def run(self) -> None:
        try:
            with self.client() as client:
                for cut in client.watch():
                    self.latest = cut
                    self.verified += 1
                    if self._abort.is_set():
                        return
                    if self.target is not None and cut.acta_records >= self.target:
                        return
        except Exception as e:  # any failure must reach the main thread, which reports it
            self.error = e
        finally:
            self.done.set()


# ------------------------------------------------------------------------------------
# display


def _contest(unit: results_pb2.UnitResults, contest_id: str) -> results_pb2.ContestTotals:
    for c in unit.contests:
        if c.contest_id == contest_id:
            return c
    raise LookupError(f"no contest {contest_id} in the results")


def _pct(e4: int) -> str:
    # Completeness percentages are sent as integers in units of 1e-4 percent.
    return f"{e4 / 10_000:.2f} %"


def _results_table(
    contest: results_pb2.ContestTotals, *, title: str, top: int | None = None
) -> Table:
    """Options by votes; with ``top``, only the first ``top`` and one row for the rest
    (the live view must fit a terminal)."""
    table = Table(title=title, box=box.SIMPLE_HEAD if top else box.HEAVY_HEAD)
    table.add_column("option")
    table.add_column("votes", justify="right")
    table.add_column("share", justify="right")
    total = max(contest.total_votes, 1)
    options = sorted(contest.options, key=lambda o: -o.votes)
    shown = options if top is None else options[:top]
    for option in shown:
        table.add_row(option.option_id, f"{option.votes:,}", f"{100 * option.votes / total:.2f} %")
    rest = options[len(shown) :]
    if rest:
        votes = sum(o.votes for o in rest)
        table.add_row(f"{len(rest)} other options", f"{votes:,}", f"{100 * votes / total:.2f} %")
    if top is None:
        table.add_row("unregistered", f"{contest.unregistered_votes:,}", "")
        table.add_row("null", f"{contest.null_votes:,}", "")
    table.add_row("total", f"{contest.total_votes:,}", "", style="bold")
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
    contest = _contest(cut.national(), CONTEST)
    completeness = contest.completeness
    age = (dt.datetime.now(dt.UTC) - cut.cut_time).total_seconds()
    parts.append(
        _results_table(
            contest,
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
    from veritally.election.generate import DEFAULT_CASILLAS
    from veritally.mesh.envoy import DEFAULT_BASE_PORT

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
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between cuts"
    )
    parser.add_argument("--no-live", action="store_true", help="plain progress lines, no table")
    parser.add_argument(
        "--pin",
        type=Path,
        help="trust root the media client pins (default STATE/trust-root/trust-root-v1.binpb)",
    )


def prepare_state(state: StateDir, *, casillas: int, seed: int) -> list[str]:
    """Make ``state`` ready for a fresh election night.

    Keeps the PKI, signing key and trust root (media keep their pinned trust root across
    runs); keeps the election when it was generated with the same seed and size, else
    generates it again; wipes the stores, bundle, logs and the media client's state.

    Returns:
        What was created, one line each.

    Raises:
        veritally.pki.PkiError: an existing PKI is inconsistent.
        OSError: files cannot be written.
    """
    bootstrap = Bootstrap(casillas=casillas, seed=seed)
    params = bootstrap.election_params()
    try:
        existing = json.loads(state.election_params.read_text())
    except (OSError, ValueError):
        existing = None  # not a generated election, or an older layout: generate again
    if existing != params and state.election.exists():
        shutil.rmtree(state.election)
    state.wipe_data()
    return bootstrap.ensure(state)


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)  # minus the header


class DemoError(errors.ServiceError):
    """The demo could not verify the election night (the message says why)."""


def _check_watcher(watcher: MediaWatcher) -> None:
    """Re-raise what stopped the media client: a verification error as itself."""
    error = watcher.error
    if isinstance(error, VerificationError):
        raise error
    if error is not None:
        raise DemoError(f"media client: {error!r}") from error


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: the stack is stopped


def _run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from veritally.election import load_actas, load_election

    wall = time.monotonic()
    state = StateDir(args.state)
    console.print(f"[bold]veritally demo[/]: state directory {state.root}")
    t = time.monotonic()
    for line in prepare_state(state, casillas=args.casillas, seed=args.seed):
        console.print(f"  created {line}")
    prepare_s = time.monotonic() - t
    files = load_election(state.election_yaml)
    expected = _count_rows(state.actas_csv)
    double = not args.single_capture

    stack = Stack(
        state,
        base_port=args.base_port or None,
        single_capture=args.single_capture,
        interval_s=args.interval,
    )
    console.print("starting ingest, aggregation, publication and Envoy...")
    t = time.monotonic()
    stack.start()
    start_s = time.monotonic() - t
    try:
        e = stack.endpoints
        console.print(
            f"stack up in {start_s:.1f} s: edge {e.edge}, REST https://{e.rest}/v1/cuts/latest, "
            f"admin http://{e.admin}/, logs {state.logs}"
        )
        watcher = MediaWatcher(
            stack, outlet="outlet-01", state_dir=state.media / "outlet-01", pin=args.pin
        )
        watcher.start()
        stats = CaptureStats()
        mode = "double capture" if double else "single capture"
        pace = "as fast as the stack accepts" if args.speed <= 0 else f"{args.speed:g}x"
        console.print(
            f"replaying {expected:,} actas ({mode}, {pace}) through the edge with "
            f"{len(stack.pki.identities('capture'))} capture-centre certificates; "
            "outlet-01 watches and verifies every cut"
        )
        actas = load_actas(files, state.actas_csv)

        def view() -> Group:
            return _live_view(stats, watcher, expected)

        live = not args.no_live and console.is_terminal
        with _progress_display(console, view, live=live, lines=lambda: _line(stats, watcher)):
            try:
                asyncio.run(replay(stack, actas, stats, speed=args.speed, double_capture=double))
            except* CaptureError as group:
                first = group.exceptions[0]
                raise DemoError(f"capture failed: {first!r}") from first
            _check_watcher(watcher)
            target = len(stats.logged)
            watcher.finish(target)
            if not watcher.done.wait(CATCH_UP_TIMEOUT_S):
                watcher.abort()
                raise DemoError(
                    f"no cut covered the {target:,} logged actas within {CATCH_UP_TIMEOUT_S:.0f} s"
                )
        _check_watcher(watcher)
        seen = watcher.latest
        if seen is None:
            raise DemoError("the media client stopped without verifying any cut")
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

        # The full recount: every leaf, the root, every cut's results.
        t = time.monotonic()
        progress = Progress(
            TextColumn("recount"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("leaves"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress, watcher.client() as client:
            # Verify the newest cut first, so that the recount covers the whole log.
            latest = client.latest()
            task = progress.add_task("recount", total=latest.tree_size)
            report = client.recount(
                progress=lambda done, total: progress.update(task, completed=done, total=total)
            )
        recount_s = time.monotonic() - t
        recounted = _contest(report.unit("national"), CONTEST)
        signed = _contest(latest.national(), CONTEST)
        if report.tree_size != latest.tree_size or report.acta_records < target:
            raise DemoError(
                f"recount covers {report.tree_size} leaves and {report.acta_records} acta "
                f"records; expected {latest.tree_size} leaves and {target} acta records"
            )
        if recounted.SerializeToString(deterministic=True) != signed.SerializeToString(
            deterministic=True
        ):
            raise DemoError("the recounted national results differ from the signed ones")
        console.print(
            f"recount: {report.tree_size:,} leaves, root recomputed, {len(report.cuts)} cuts' "
            f"results recomputed and matched in {recount_s:.1f} s"
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
    finally:
        console.print("stopping the stack (drain, then stop)...")
        t = time.monotonic()
        stack.stop()
        stop_s = time.monotonic() - t
    summary: dict[str, Any] = {
        "verified": True,
        "casillas": args.casillas,
        "seed": args.seed,
        "double_capture": double,
        "speed": args.speed,
        "actas_in_file": expected,
        "actas_sent": stats.actas,
        "captures_answered": sum(stats.status.values()),
        "outcomes": dict(stats.status),
        "actas_logged": len(stats.logged),
        "retries": stats.retries,
        "cuts_verified_live": watcher.verified,
        "final_cut": latest.cut_number,
        "tree_size": latest.tree_size,
        "acta_records": latest.acta_records,
        "national": {
            "contest": CONTEST,
            "options": {o.option_id: o.votes for o in recounted.options},
            "total_votes": recounted.total_votes,
            "actas_counted": c.actas_counted,
        },
        "seconds": {
            "prepare": round(prepare_s, 2),
            "stack_start": round(start_s, 2),
            "capture": round(capture_s, 2),
            "recount": round(recount_s, 2),
            "stack_stop": round(stop_s, 2),
            "total": round(time.monotonic() - wall, 2),
        },
        "captures_per_second": round(stats.rate(), 1),
    }
    return summary


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the whole night verified (see the module for the others)."""
    if args.casillas < 1 or args.speed < 0 or args.interval <= 0:
        print("veritally demo: --casillas >= 1, --speed >= 0, --interval > 0", file=sys.stderr)
        return 2
    console = Console(stderr=False, force_terminal=None)
    state = StateDir(args.state)
    summary_path = state.root / "demo-summary.json"
    with contextlib.suppress(FileNotFoundError):
        summary_path.unlink()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = _run(args, console)
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
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    s = summary["seconds"]
    console.print(
        f"[bold green]verified national result printed above[/]; demo took {s['total']:.0f} s "
        f"(capture {s['capture']:.0f} s at {summary['captures_per_second']:,.0f} captures/s); "
        f"summary in {summary_path}"
    )
    return 0
