"""``veritally import [FILE]``: submit the actas of a CSV through ingest's batch API.

Without FILE, every acta file the definition names is read (``actas.files``, one file
per contest as PREP publishes them, in contest order; or ``actas.file``). A FILE named
under ``actas.files`` is read as the contest it is named for; any other FILE holds the
contest of ``--contest``, or else of its ``contest_id`` column.

Rows are read with the election's column mapping (``veritally.election.load_acta_rows``)
and sent by the capture client (``veritally.capture``) in messages of ``--batch`` actas,
one ``SubmitActas`` stream per message over one connection so that each batch is
acknowledged on its own (``--concurrency`` streams in flight), with a progress bar on
stderr and a summary of the outcomes at the end (a table on stderr, one JSON object on
stdout). ``--outcomes`` appends every acknowledged outcome as a JSON line.

A row that ``actas.missing`` recognises as an expected acta that never arrived (PREP's
"sin acta", the reason in its observation column) is recorded with one
``RecordMissingActa`` call: ingest logs it with its reason, never counted. The summary
counts these apart (``"missing"``: outcomes per status, rejections per ``code field``);
a record ingest refuses (another centre's casilla, an acta already logged) is counted
there as REJECTED and does not stop the import.

A stream or a record refused by Envoy's rate limit (RESOURCE_EXHAUSTED) or by a
restarting ingest (UNAVAILABLE, and the other statuses of ``veritally.capture.RETRYABLE``)
is sent again after an exponential backoff with jitter, for at most ``--retry-budget``
seconds each; the summary counts these retries per status (``"retries"``).

The capture centre and operator are those of the client certificate (``--cert``, an
operator's ``spiffe://<td>/capture/<centre>/<operator>`` through Envoy); ingest ignores
what the CSV says about them, and refuses casillas assigned to another centre, so a
centre imports its share of a national file with ``--centre``.

An interrupted import is simply run again: what was already accepted comes back as
DUPLICATE and nothing is counted twice.

Exit status: 0 when every row was answered (whatever the outcomes), 1 when a batch or a
record was refused with a status that is not retryable (and not ingest's answer to the
record) or could not be answered within the retry budget, 2 when the files cannot be
read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veritally.bounds import MAX_ACTAS_PER_MESSAGE
from veritally.capture import CaptureConfig, CaptureError
from veritally.cli.serve import add_tls_arguments, tls_from_args
from veritally.election import DefinitionError, load_election
from veritally.importing import ImportSummary, acta_files, count_rows, import_actas

# Actas per SubmitActas message: a few hundred amortise the commit's fsync; the server
# takes at most veritally.bounds.MAX_ACTAS_PER_MESSAGE.
DEFAULT_BATCH = 500
# Streams in flight: one is being committed while the next is on the wire.
DEFAULT_CONCURRENCY = 2
# How long one batch may keep failing with retryable statuses (seconds): an ingest restart
# many times over, and minutes of a centre's rate limit at Envoy.
DEFAULT_RETRY_BUDGET_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` arguments."""
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="acta CSV, read with the election's mapping (default: every acta file the "
        "election names)",
    )
    parser.add_argument("--election", type=Path, required=True, help="election.yaml")
    parser.add_argument(
        "--contest", help="the contest of every row of FILE (a file without a contest column)"
    )
    parser.add_argument("--target", required=True, help="HOST:PORT of ingest")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="actas per message")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="streams in flight"
    )
    parser.add_argument(
        "--centre",
        help="send only the rows (actas and missing actas) whose capture centre column names "
        "CENTRE (ingest refuses a casilla assigned to another centre)",
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=DEFAULT_RETRY_BUDGET_S,
        metavar="SECONDS",
        help="give up on a batch still refused with a retryable status after SECONDS",
    )
    parser.add_argument("--outcomes", type=Path, help="append acknowledged outcomes (JSONL)")
    parser.add_argument("--tls-server-name", help="TLS name of ingest, if not the host")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tls_arguments(parser)


async def _import(args: argparse.Namespace, summary: ImportSummary, console: Console) -> int:
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} rows/s"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    )
    election = load_election(args.election)
    skip = election.actas.csv_format.skip_lines if election.actas is not None else 0
    try:
        total: int | None = sum(
            count_rows(p, skip_lines=skip) for p in acta_files(election, args.file)
        )
    except OSError:  # the loader says what is wrong with the file when it opens it
        total = None
    task = progress.add_task("import", total=total, rate="")
    loop = asyncio.get_running_loop()
    started = loop.time()

    def answered(summary: ImportSummary) -> None:
        rate = summary.answered / max(loop.time() - started, 1e-9)
        progress.update(task, completed=summary.answered, rate=f"{rate:,.0f}")

    tls = tls_from_args(args)
    with progress:
        await import_actas(
            election=election,
            actas_csv=args.file,
            contest=args.contest,
            target=args.target,
            tls=tls,
            config=CaptureConfig(
                batch=args.batch, streams=args.concurrency, retry_budget_s=args.retry_budget
            ),
            summary=summary,
            centre=args.centre,
            server_name=args.tls_server_name,
            answered=answered,
        )
    return 0


def _print_summary(console: Console, summary: ImportSummary, seconds: float) -> None:
    actas, missing = sum(summary.status.values()), sum(summary.missing.values())
    title = f"import: {actas:,} actas"
    if missing:
        title += f" and {missing:,} missing actas"
    table = Table(title=f"{title} in {seconds:.1f} s")
    table.add_column("outcome")
    table.add_column("actas", justify="right")
    for status, n in sorted(summary.status.items()):
        table.add_row(status, f"{n:,}")
    if summary.not_counted:
        table.add_row("  of which accepted, not counted", f"{summary.not_counted:,}")
    for reason, n in sorted(summary.rejected.items()):
        table.add_row(f"  rejected: {reason}", f"{n:,}")
    for status, n in sorted(summary.missing.items()):
        table.add_row(f"missing acta recorded: {status}", f"{n:,}")
    for reason, n in sorted(summary.missing_rejected.items()):
        table.add_row(f"  rejected: {reason}", f"{n:,}")
    for code, n in sorted(summary.counters.retries.items()):
        table.add_row(f"batches retried after {code}", f"{n:,}")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    """Import the file and print the summary.

    Raises:
        SystemExit: if the TLS options are incomplete.
    """
    if not 1 <= args.batch <= MAX_ACTAS_PER_MESSAGE or args.concurrency < 1:
        raise SystemExit(
            f"--batch must be in [1, {MAX_ACTAS_PER_MESSAGE}] and --concurrency at least 1"
        )
    if args.retry_budget < 0:
        raise SystemExit("--retry-budget must not be negative")
    if args.contest is not None and args.file is None:
        raise SystemExit("--contest names the contest of FILE: give the FILE")
    console = Console(stderr=True)
    outcomes = args.outcomes.open("a", encoding="utf-8") if args.outcomes else None
    summary = ImportSummary(outcomes)
    started = time.perf_counter()
    status = 0
    try:
        status = asyncio.run(_import(args, summary, console))
    except* CaptureError as group:
        error = group.exceptions[0]
        assert isinstance(error, CaptureError)
        console.print(f"[red]ingest failed: {error.code.name}: {error.details[:200]}")
        status = 1
    except* DefinitionError as group:
        console.print(f"[red]cannot read the election or the actas: {group.exceptions[0]}")
        status = 2
    finally:
        if outcomes is not None:
            outcomes.close()
    _print_summary(console, summary, time.perf_counter() - started)
    print(json.dumps(summary.as_dict(), sort_keys=True), file=sys.stdout, flush=True)
    return status
