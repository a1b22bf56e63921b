"""``veritally import FILE``: submit the actas of a CSV through ingest's batch API.

Rows are read with the election's column mapping (``veritally.election.load_actas``), sent
in batches of ``--batch`` actas, one ``SubmitActas`` stream per batch so that each batch is
acknowledged on its own (``--concurrency`` streams in flight), with a progress bar on
stderr and a summary of the outcomes at the end (a table on stderr, one JSON object on
stdout). ``--outcomes`` appends every acknowledged outcome as a JSON line.

The capture centre and operator are those of the client certificate (``--cert``, an
operator's ``spiffe://<td>/capture/<centre>/<operator>`` through Envoy); ingest ignores
what the CSV says about them, and refuses casillas assigned to another centre, so a
centre imports its share of a national file with ``--centre``.

An interrupted import is simply run again: what was already accepted comes back as
DUPLICATE and nothing is counted twice.

Exit status: 0 when every row was answered (whatever the outcomes), 1 when ingest could
not be reached or failed mid-way, 2 when the files cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veritally._grpc import aio_channel
from veritally.serve_cli import add_tls_arguments, tls_from_args
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

# Actas per SubmitActas message: a few hundred amortise the commit's fsync; the server
# takes at most veritally.ingest.service.MAX_ACTAS_PER_MESSAGE.
DEFAULT_BATCH = 500
# Streams in flight: one is being committed while the next is on the wire.
DEFAULT_CONCURRENCY = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``import`` arguments."""
    parser.add_argument("file", type=Path, help="acta CSV, read with the election's mapping")
    parser.add_argument("--election", type=Path, required=True, help="election.yaml")
    parser.add_argument("--target", required=True, help="HOST:PORT of ingest")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="actas per message")
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="streams in flight"
    )
    parser.add_argument(
        "--centre",
        help="send only the actas whose capture centre column names CENTRE (ingest refuses "
        "a casilla assigned to another centre)",
    )
    parser.add_argument("--outcomes", type=Path, help="append acknowledged outcomes (JSONL)")
    parser.add_argument("--tls-server-name", help="TLS name of ingest, if not the host")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tls_arguments(parser)


def _batches(actas: Iterable[acta_pb2.Acta], size: int) -> Iterator[list[acta_pb2.Acta]]:
    it = iter(actas)
    while batch := list(islice(it, size)):
        yield batch


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)  # minus the header line


class _Summary:
    def __init__(self, outcomes: IO[str] | None) -> None:
        self.status: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.not_counted = 0
        self._out = outcomes

    def add(self, outcomes: Iterable[ingest_pb2.ActaOutcome]) -> None:
        lines = []
        for o in outcomes:
            status = ingest_pb2.OutcomeStatus.Name(o.status).removeprefix("OUTCOME_STATUS_")
            self.status[status] += 1
            if o.status == ingest_pb2.OUTCOME_STATUS_REJECTED:
                self.rejected[f"{o.code} {o.field}".strip()] += 1
            elif o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED and not o.counted:
                self.not_counted += 1
            if self._out is not None:
                lines.append(
                    json.dumps(
                        {
                            "acta_id": o.acta_id,
                            "status": status,
                            "revision": o.revision,
                            "sequence": o.sequence,
                            "code": o.code,
                            "field": o.field,
                        }
                    )
                )
        if self._out is not None and lines:
            self._out.write("\n".join(lines) + "\n")
            self._out.flush()

    def as_dict(self) -> dict[str, object]:
        return {
            "answered": sum(self.status.values()),
            "status": dict(self.status),
            "accepted_not_counted": self.not_counted,
            "rejected": dict(self.rejected),
        }


async def _import(args: argparse.Namespace, summary: _Summary, console: Console) -> int:
    from veritally.election import load_actas, load_election

    files = load_election(args.election)
    total = _count_rows(args.file)
    tls = tls_from_args(args)
    progress = Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} actas/s"),
        TimeElapsedColumn(),
        console=console,
        disable=args.quiet,
    )
    task = progress.add_task("import", total=total, rate="")
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue: asyncio.Queue[list[acta_pb2.Acta] | None] = asyncio.Queue(maxsize=args.concurrency)

    async with aio_channel(args.target, tls=tls, server_name=args.tls_server_name) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)

        async def produce() -> None:
            for batch in _batches(load_actas(files, args.file), args.batch):
                if args.centre:
                    batch = [a for a in batch if a.provenance.capture_centre_id == args.centre]
                if batch:
                    await queue.put(batch)
            for _ in range(args.concurrency):
                await queue.put(None)

        async def send() -> None:
            while (batch := await queue.get()) is not None:
                response = await stub.SubmitActas(
                    iter([ingest_pb2.SubmitActasRequest(actas=batch)])
                )
                summary.add(response.outcomes)
                done = sum(summary.status.values())
                rate = done / max(loop.time() - started, 1e-9)
                progress.update(task, completed=done, rate=f"{rate:,.0f}")

        with progress:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(args.concurrency):
                    group.create_task(send())
    return 0


def _print_summary(console: Console, summary: _Summary, seconds: float) -> None:
    table = Table(title=f"import: {sum(summary.status.values())} actas in {seconds:.1f} s")
    table.add_column("outcome")
    table.add_column("actas", justify="right")
    for status, n in sorted(summary.status.items()):
        table.add_row(status, f"{n:,}")
    if summary.not_counted:
        table.add_row("  of which accepted, not counted", f"{summary.not_counted:,}")
    for reason, n in sorted(summary.rejected.items()):
        table.add_row(f"  rejected: {reason}", f"{n:,}")
    console.print(table)


def run(args: argparse.Namespace) -> int:
    """Import the file and print the summary.

    Raises:
        SystemExit: if the TLS options are incomplete.
    """
    from veritally.election import DefinitionError

    if args.batch < 1 or args.concurrency < 1:
        raise SystemExit("--batch and --concurrency must be at least 1")
    console = Console(stderr=True)
    outcomes = args.outcomes.open("a", encoding="utf-8") if args.outcomes else None
    summary = _Summary(outcomes)
    started = time.perf_counter()
    status = 0
    try:
        status = asyncio.run(_import(args, summary, console))
    except* grpc.aio.AioRpcError as group:
        error = group.exceptions[0]
        assert isinstance(error, grpc.aio.AioRpcError)
        console.print(f"[red]ingest failed: {error.code().name}: {error.details()}")
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
