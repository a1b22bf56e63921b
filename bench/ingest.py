"""Ingest throughput with the batch API over a real loopback socket.

A synthetic election (``--casillas``, default 40,000: ~118,000 actas) is generated once;
the actas are read from its CSV with the election's mapping and pre-built into
``SubmitActasRequest`` messages of ``BATCH`` actas, so that the clock measures ingest and
not CSV parsing. ``veritally serve ingest`` runs as its own process on 127.0.0.1 (as in a
deployment), and ``STREAMS`` client streams submit concurrently.

Measured:

* ``ingest_actas_per_s``: single capture, actas accepted per second, end to end;
* ``ingest_double_capture_actas_per_s``: double capture, each acta captured by two
  operators (two submissions), actas accepted per second;
* ``sqlite_actas_per_s``: the same log and index rows inserted straight into SQLite with
  the same settings (WAL, synchronous=FULL, one transaction per batch), the floor cost
  of storing them;
* ``ingest_vs_sqlite_ratio``: ``ingest_actas_per_s / sqlite_actas_per_s``.

Run: ``.venv/bin/python -m bench.ingest`` (prints the numbers, writes bench/out/ingest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from veritally.capture import CaptureConfig, CaptureCounters, submit_stream
from veritally.election import load_actas, load_election
from veritally.election.generate import generate
from veritally.ingest.store import IngestStore, Writes
from veritally.rpc import aio_channel
from veritally_client.protocol.pb import acta_pb2, ingest_pb2, ingest_pb2_grpc

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "ingest.json"
CASILLAS = 40_000  # ~118,000 actas: long enough for a steady rate, short enough to rerun
BATCH = 500  # actas per SubmitActas message (as `veritally import` sends by default)
MESSAGES_PER_STREAM = 20  # messages per client stream (10,000 actas, under the cap)
STREAMS = 2  # client streams in flight
CONFIG = CaptureConfig(batch=BATCH, messages_per_stream=MESSAGES_PER_STREAM, streams=STREAMS)
SERVER_START_S = 120.0  # upper bound for the server to load the definition and listen


def _serve(election: Path, db: Path, port_file: Path, *, single: bool) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "veritally.cli",
        "serve",
        "ingest",
        "--election",
        str(election),
        "--db",
        str(db),
        "--listen",
        "127.0.0.1:0",
        "--port-file",
        str(port_file),
    ]
    if single:
        argv.append("--single-capture")
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + SERVER_START_S
    while not port_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("ingest did not start")
        time.sleep(0.05)
    return child


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=60)


# A stream and the SPIFFE ID it is sent as. Ingest runs here without Envoy in front, so the
# benchmark sets x-forwarded-client-cert itself, as Envoy would for that certificate.
_Stream = tuple[str, Sequence[ingest_pb2.SubmitActasRequest]]


def _as(spiffe_id: str) -> tuple[tuple[str, str]]:
    return (("x-forwarded-client-cert", f"By=spiffe://bench.local/service/envoy;URI={spiffe_id}"),)


def _operator(centre: str, operator: str) -> str:
    return f"spiffe://bench.local/capture/{centre}/{operator}"


async def _submit(port: int, streams: Sequence[_Stream]) -> int:
    """Send every stream (``STREAMS`` at a time) with the capture client's stream call
    (retries and deadline included); returns the number of ACCEPTED."""
    queue: asyncio.Queue[_Stream] = asyncio.Queue()
    for stream in streams:
        queue.put_nowait(stream)
    accepted = 0
    counters = CaptureCounters()
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)

        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                caller, stream = queue.get_nowait()
                outcomes = await submit_stream(
                    stub.SubmitActas, stream, config=CONFIG, counters=counters, metadata=_as(caller)
                )
                accepted += sum(
                    1 for o in outcomes if o.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
                )

        await asyncio.gather(*(worker() for _ in range(STREAMS)))
    return accepted


def _chunks(items: Sequence[acta_pb2.Acta], size: int) -> list[list[acta_pb2.Acta]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _by_centre(
    actas: Sequence[acta_pb2.Acta],
) -> dict[str, list[list[ingest_pb2.SubmitActasRequest]]]:
    """Per capture centre (each captures only its assigned casillas), its actas in
    messages of ``BATCH``, grouped ``MESSAGES_PER_STREAM`` to a stream."""
    groups: dict[str, list[acta_pb2.Acta]] = {}
    for acta in actas:
        groups.setdefault(acta.provenance.capture_centre_id, []).append(acta)
    out = {}
    for centre, group in groups.items():
        messages = [ingest_pb2.SubmitActasRequest(actas=b) for b in _chunks(group, BATCH)]
        out[centre] = [
            messages[i : i + MESSAGES_PER_STREAM]
            for i in range(0, len(messages), MESSAGES_PER_STREAM)
        ]
    return out


def _single_streams(actas: Sequence[acta_pb2.Acta]) -> list[_Stream]:
    return [
        (_operator(centre, "op-1"), stream)
        for centre, streams in _by_centre(actas).items()
        for stream in streams
    ]


def _double_streams(actas: Sequence[acta_pb2.Acta]) -> list[_Stream]:
    """Each stream twice, from two operators of the centre (whichever is second
    confirms the first one's captures)."""
    return [
        (_operator(centre, operator), stream)
        for centre, streams in _by_centre(actas).items()
        for stream in streams
        for operator in ("op-1", "op-2")
    ]


def _measure_service(
    election: Path, work: Path, streams: list[_Stream], *, single: bool
) -> tuple[int, float]:
    name = "single" if single else "double"
    child = _serve(election, work / f"{name}.db", work / f"{name}.port", single=single)
    try:
        port = int((work / f"{name}.port").read_text())
        started = time.perf_counter()
        accepted = asyncio.run(_submit(port, streams))
        return accepted, time.perf_counter() - started
    finally:
        _stop(child)


def _measure_sqlite(work: Path, db_with_leaves: Path) -> tuple[int, float]:
    """Insert the rows ingest wrote (log and acta index), straight into a fresh store."""
    source = sqlite3.connect(db_with_leaves)
    log = source.execute("SELECT sequence, acta_id, revision, leaf FROM log ORDER BY sequence")
    rows = [(int(s), str(a), int(r), bytes(leaf)) for s, a, r, leaf in log]
    index = {
        str(a): (str(a), int(r), int(s), bytes(d), int(c), int(n))
        for a, r, s, d, c, n in source.execute(
            "SELECT acta_id, revision, sequence, digest, counted, reason FROM actas"
        )
    }
    source.close()
    store = IngestStore(work / "sqlite-only.db")
    started = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        batch = rows[i : i + BATCH]
        writes = Writes(log=batch, actas=[index[r[1]] for r in batch])
        store.commit(writes)
    elapsed = time.perf_counter() - started
    store.close()
    return len(rows), elapsed


def run(casillas: int = CASILLAS) -> dict[str, float]:
    """Generate, measure both capture modes and the SQLite floor; return the numbers."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        generate(seed=1, casillas=casillas, out_dir=work / "election")
        election = work / "election" / "election.yaml"
        files = load_election(election)
        actas = list(load_actas(files, work / "election" / "actas.csv"))

        accepted, seconds = _measure_service(election, work, _single_streams(actas), single=True)
        if accepted != len(actas):
            raise RuntimeError(f"single capture accepted {accepted} of {len(actas)}")
        single_rate = accepted / seconds

        accepted2, seconds2 = _measure_service(election, work, _double_streams(actas), single=False)
        if accepted2 != len(actas):
            raise RuntimeError(f"double capture accepted {accepted2} of {len(actas)}")
        double_rate = accepted2 / seconds2

        rows, sql_seconds = _measure_sqlite(work, work / "single.db")
        sqlite_rate = rows / sql_seconds
    return {
        "ingest_actas_per_s": round(single_rate, 1),
        "ingest_double_capture_actas_per_s": round(double_rate, 1),
        "ingest_double_capture_submissions_per_s": round(2 * double_rate, 1),
        "sqlite_actas_per_s": round(sqlite_rate, 1),
        "ingest_vs_sqlite_ratio": round(single_rate / sqlite_rate, 3),
        "ingest_actas": float(len(actas)),
        "ingest_single_capture_s": round(seconds, 2),
        "ingest_double_capture_s": round(seconds2, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the numbers and write bench/out/ingest.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--casillas", type=int, default=CASILLAS)
    args = parser.parse_args(argv)
    results = run(args.casillas)
    results["cpus"] = float(os.cpu_count() or 0)
    for key, value in results.items():
        print(f"{key:45} {value:>14,.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
