"""Crash safety of the write path with real processes: ``veritally serve ingest`` killed
with SIGKILL in the middle of a ``veritally import`` loses no acknowledged acta and the
re-import reports them as duplicates; ``veritally serve aggregation`` killed with SIGKILL
while following and restarted reaches totals identical to a recount of ingest's log.
Both run once with SQLite files and once with PostgreSQL databases
(``--db postgresql://...``, the session's server of tests/pg_support.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StoreLocations
from veritally.election import load_definition
from veritally.rpc import aio_channel
from veritally.storage import DbLocation
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    aggregation_pb2,
    aggregation_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
)
from veritally_client._tally import Tally

VERITALLY = [sys.executable, "-m", "veritally.cli"]
# Casillas of the generated election: ~3 actas each, enough for an import to last about
# a second with small batches, so that it can be interrupted part-way.
CASILLAS = 3_000
# Upper bound for a child process to start or for work to finish, in seconds.
WAIT_S = 60.0


@pytest.fixture(scope="module")
def election_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("election")
    subprocess.run(
        [
            *VERITALLY,
            *("generate", "--seed", "3", "--casillas", str(CASILLAS), "--out", str(out)),
            # Imported by one client without a certificate: no casilla assigned to a centre.
            *("--capture-centres", "0"),
        ],
        check=True,
        capture_output=True,
    )
    return out


class _Child:
    def __init__(self, argv: list[str], log: Path) -> None:
        with log.open("ab") as f:
            self.popen = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=WAIT_S)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(timeout=WAIT_S)


def _wait_port(path: Path, child: _Child) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if path.exists():
            return int(path.read_text())
        assert child.popen.poll() is None, "service exited before serving"
        time.sleep(0.05)
    raise TimeoutError(f"no port in {path}")


def _serve(kind: str, election: Path, db: DbLocation, port_file: Path, *extra: str) -> _Child:
    port_file.unlink(missing_ok=True)
    return _Child(
        [
            *VERITALLY,
            "serve",
            kind,
            "--election",
            str(election / "election.yaml"),
            "--db",
            str(db),
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
            *extra,
        ],
        port_file.with_suffix(".log"),
    )


def _import_argv(election: Path, port: int, outcomes: Path) -> list[str]:
    return [
        *VERITALLY,
        "import",
        str(election / "actas.csv"),
        "--election",
        str(election / "election.yaml"),
        "--target",
        f"127.0.0.1:{port}",
        "--batch",
        "20",
        "--concurrency",
        "1",
        "--quiet",
        "--outcomes",
        str(outcomes),
        # Give up on a vanished ingest at once: the test kills it and waits for the exit.
        "--retry-budget",
        "1",
    ]


def _outcomes(path: Path) -> Iterator[dict[str, object]]:
    if not path.exists():
        return
    with path.open() as f:
        for line in f:
            if line.endswith("\n"):
                yield json.loads(line)


async def _ingest_log(port: int) -> list[bytes]:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        return [
            leaf
            async for page in stub.StreamRecords(ingest_pb2.StreamRecordsRequest())
            for leaf in page.leaves
        ]


def test_sigkill_during_import_loses_no_acknowledged_acta(
    election_dir: Path, tmp_path: Path, stores: StoreLocations
) -> None:
    db = stores.new("ingest")
    with (election_dir / "actas.csv").open() as f:
        rows = sum(1 for _ in f) - 1
    port_file = tmp_path / "ingest.port"
    ingest = _serve("ingest", election_dir, db, port_file, "--single-capture")
    try:
        port = _wait_port(port_file, ingest)
        first = tmp_path / "first.jsonl"
        importer = subprocess.Popen(
            _import_argv(election_dir, port, first),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        while sum(1 for _ in _outcomes(first)) < rows // 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        ingest.kill()
        assert importer.wait(timeout=WAIT_S) == 1  # interrupted: ingest went away
    finally:
        ingest.kill()
    acknowledged = {
        str(o["acta_id"]): int(str(o["sequence"]))
        for o in _outcomes(first)
        if o["status"] == "ACCEPTED"
    }
    assert 0 < len(acknowledged) < rows

    ingest = _serve("ingest", election_dir, db, port_file, "--single-capture")
    try:
        port = _wait_port(port_file, ingest)
        second = tmp_path / "second.jsonl"
        result = subprocess.run(
            _import_argv(election_dir, port, second), capture_output=True, check=False
        )
        assert result.returncode == 0, result.stderr
        again = {str(o["acta_id"]): o for o in _outcomes(second)}
        assert len(again) == rows
        # Every acknowledged acta is still there, at the same position.
        for acta_id, sequence in acknowledged.items():
            assert again[acta_id]["status"] == "DUPLICATE"
            assert again[acta_id]["sequence"] == sequence
        summary = json.loads(result.stdout)
        assert summary["status"]["DUPLICATE"] >= len(acknowledged)
        assert summary["status"]["ACCEPTED"] + summary["status"]["DUPLICATE"] == rows
        # The log is dense and holds every acta exactly once.
        leaves = asyncio.run(_ingest_log(port))
        records = [acta_pb2.LogLeaf.FromString(leaf).acta_record for leaf in leaves]
        assert [r.sequence for r in records] == list(range(rows))
        assert len({r.acta_id for r in records}) == rows
    finally:
        ingest.stop()


async def _blob(port: int) -> aggregation_pb2.GetResultsBlobResponse:
    async with aio_channel(f"127.0.0.1:{port}") as channel:
        stub = aggregation_pb2_grpc.AggregationServiceStub(channel)
        response: aggregation_pb2.GetResultsBlobResponse = await stub.GetResultsBlob(
            aggregation_pb2.GetResultsBlobRequest(), wait_for_ready=True
        )
        return response


def _wait_blob(port: int, records: int) -> aggregation_pb2.GetResultsBlobResponse:
    deadline = time.monotonic() + WAIT_S
    while True:
        blob = asyncio.run(_blob(port))
        if blob.acta_records >= records or time.monotonic() > deadline:
            return blob
        time.sleep(0.05)


def test_sigkill_of_aggregation_then_restart_gives_identical_totals(
    election_dir: Path, tmp_path: Path, stores: StoreLocations
) -> None:
    ingest_db, agg_db = stores.new("ingest"), stores.new("agg")
    ingest_port_file = tmp_path / "ingest.port"
    agg_port_file = tmp_path / "agg.port"
    ingest = _serve("ingest", election_dir, ingest_db, ingest_port_file, "--single-capture")
    aggregation: _Child | None = None
    try:
        ingest_port = _wait_port(ingest_port_file, ingest)
        follow = ("--ingest", f"127.0.0.1:{ingest_port}")
        aggregation = _serve("aggregation", election_dir, agg_db, agg_port_file, *follow)
        agg_port = _wait_port(agg_port_file, aggregation)
        importer = subprocess.Popen(
            _import_argv(election_dir, ingest_port, tmp_path / "import.jsonl"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill aggregation while it is following a running import.
        _wait_blob(agg_port, 1_000)
        aggregation.kill()
        assert importer.wait(timeout=WAIT_S) == 0
        aggregation = _serve("aggregation", election_dir, agg_db, agg_port_file, *follow)
        agg_port = _wait_port(agg_port_file, aggregation)
        leaves = asyncio.run(_ingest_log(ingest_port))
        blob = _wait_blob(agg_port, len(leaves))
        reference = Tally(load_definition(election_dir / "election.yaml"))
        for leaf in leaves:
            reference.apply_leaf(leaf)
        assert blob.acta_records == len(leaves)
        assert blob.results == reference.results_bytes()
    finally:
        if aggregation is not None:
            aggregation.stop()
        ingest.stop()
