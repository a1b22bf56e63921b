"""Two ``veritally serve publication`` processes on one real PostgreSQL database, as two
hosts run them: one holds the publication lease and cuts, the other waits as a standby.
Killing the active one hands the night to the standby, which continues the same log;
a publisher paused past its lease (a partition, a stalled VM) is deposed and exits
without signing again. After each, every stored cut verifies and extends the one before
(docs/adr/0094-publication-lease.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.conftest import REPO_ROOT
from tests.pub_support import PublisherFiles, RunningFake, make_publisher, start_fake_aggregation
from veritally.cli.serve import EXIT_DEPOSED
from veritally.publication.store import PublicationStore
from veritally.storage import DbLocation
from veritally_client.protocol import (
    Checkpoint,
    TrustedRoot,
    open_note,
    parse_checkpoint,
    verify_consistency,
)
from veritally_client.protocol.pb import publication_pb2, publication_pb2_grpc

LEASE_SECONDS = 1.0
INTERVAL_SECONDS = 0.2


@dataclass
class Publisher:
    """One publication process (one host's)."""

    name: str
    proc: subprocess.Popen[bytes]
    port_file: Path
    log_file: Path

    def port(self) -> int | None:
        """Its port once it serves (it writes the file only after taking the lease)."""
        return int(self.port_file.read_text()) if self.port_file.exists() else None

    def log(self) -> str:
        """What it wrote on stderr so far."""
        return self.log_file.read_text(errors="replace")


@pytest.fixture
async def aggregation() -> AsyncIterator[RunningFake]:
    fake = await start_fake_aggregation()
    fake.fake.add(4)
    yield fake
    await fake.stop()


@dataclass
class Night:
    """One publication database, its aggregation and the publishers started on it."""

    tmp_path: Path
    db: DbLocation
    aggregation: RunningFake
    files: PublisherFiles
    started: list[Publisher]

    @property
    def root(self) -> TrustedRoot:
        """The trust root media verify with."""
        return TrustedRoot.from_bytes(
            (self.files.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )

    def start(self, name: str) -> Publisher:
        """Start ``veritally serve publication --lease-holder NAME`` on the database."""
        log_file = self.tmp_path / f"{name}.log"
        port_file = self.tmp_path / f"{name}.port"
        command = [
            sys.executable, "-m", "veritally.cli", "serve", "publication",
            "--db", str(self.db),
            "--key-file", str(self.files.key_file),
            "--trust-root-dir", str(self.files.trust_root_dir),
            "--aggregation", self.aggregation.target,
            "--interval", str(INTERVAL_SECONDS),
            "--lease-holder", name,
            "--lease-seconds", str(LEASE_SECONDS),
            "--bundle-dir", str(self.tmp_path / f"{name}-bundle"),
            "--port-file", str(port_file),
        ]  # fmt: skip
        with log_file.open("wb") as log:
            proc = subprocess.Popen(command, cwd=REPO_ROOT, stderr=log)
        self.started.append(Publisher(name, proc, port_file, log_file))
        return self.started[-1]


@pytest.fixture
def night(tmp_path: Path, postgres_url: DbLocation, aggregation: RunningFake) -> Iterator[Night]:
    started: list[Publisher] = []
    yield Night(tmp_path, postgres_url, aggregation, make_publisher(tmp_path), started)
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


async def _wait_serving(publisher: Publisher, seconds: float = 30.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded by the deadline
        port = publisher.port()
        if port is not None:
            return port
        assert publisher.proc.poll() is None, publisher.log()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{publisher.name} did not serve within {seconds} s: {publisher.log()}")


async def _latest(port: int, root: TrustedRoot, *, at_least: int = 0) -> Checkpoint:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        for _ in range(300):  # bounded: 30 s
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
                checkpoint = parse_checkpoint(open_note(answer.cut.checkpoint, root.verifiers).text)
                if checkpoint.size >= at_least:
                    return checkpoint
            await asyncio.sleep(0.1)
    raise AssertionError(f"no cut of size {at_least} or more on port {port}")


def _assert_one_chain(db: DbLocation, root: TrustedRoot, *, contains: Checkpoint) -> int:
    """Every stored cut verifies, sizes grow, and each extends the one before; returns
    the number of cuts."""
    store = PublicationStore(db)
    try:
        latest = store.latest_cut()
        assert latest is not None
        previous: Checkpoint | None = None
        seen_contained = False
        for number in range(1, latest.cut_number + 1):
            row = store.cut(number)
            assert row is not None, f"cut {number} is missing"
            checkpoint = parse_checkpoint(open_note(row.checkpoint, root.verifiers).text)
            seen_contained |= checkpoint == contains
            if previous is not None:
                assert checkpoint.size > previous.size
                verify_consistency(
                    size1=previous.size,
                    size2=checkpoint.size,
                    proof=store.consistency_proof(previous.size, checkpoint.size),
                    root1=previous.root_hash,
                    root2=checkpoint.root_hash,
                )
            previous = checkpoint
        assert seen_contained, "a checkpoint served before the failover is not in the store"
        return latest.cut_number
    finally:
        store.close()


async def _active_and_standby(night: Night) -> tuple[Publisher, Checkpoint, Publisher]:
    """host-a serving cuts of the first 4 actas, host-b waiting for the lease."""
    active = night.start("host-a")
    port = await _wait_serving(active)
    standby = night.start("host-b")
    served = await _latest(port, night.root, at_least=6)  # 4 actas and two cut leaves
    await asyncio.sleep(2 * LEASE_SECONDS)
    assert standby.port() is None, "the standby served while the lease was held"
    assert "standby: publisher host-a holds the lease" in standby.log()
    return active, served, standby


async def test_killing_the_active_publisher_hands_the_log_to_the_standby(night: Night) -> None:
    active, served, standby = await _active_and_standby(night)
    night.aggregation.fake.add(3)
    active.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    port = await _wait_serving(standby)
    await _latest(port, night.root, at_least=served.size + 3 + 1)
    took = time.monotonic() - killed_at
    # Within the lease's length, its poll, and the process's first cut.
    assert took < LEASE_SECONDS + 10, took
    assert "publisher host-b holds the lease (epoch 2)" in standby.log()
    assert _assert_one_chain(night.db, night.root, contains=served) >= 3
    standby.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(standby.proc.wait, 30) == 0


async def test_a_publisher_paused_past_its_lease_is_deposed_and_signs_nothing(
    night: Night,
) -> None:
    stalled, served, other = await _active_and_standby(night)
    # host-a stops answering anything (SIGSTOP: a partitioned or frozen host) while
    # host-b takes the lease and cuts on.
    stalled.proc.send_signal(signal.SIGSTOP)
    port = await _wait_serving(other)
    night.aggregation.fake.add(2)
    taken = await _latest(port, night.root, at_least=served.size + 2 + 1)
    stalled.proc.send_signal(signal.SIGCONT)
    # Its next cut or renewal finds the lease gone: it stops, and says why.
    assert await asyncio.to_thread(stalled.proc.wait, 30) == EXIT_DEPOSED
    assert "the lease of epoch 1" in stalled.log()
    assert other.proc.poll() is None
    night.aggregation.fake.add(1)
    final = await _latest(port, night.root, at_least=taken.size + 1 + 1)
    assert _assert_one_chain(night.db, night.root, contains=final) >= 3


async def test_a_standby_stops_on_sigterm_while_it_waits_for_the_lease(night: Night) -> None:
    active, _served, standby = await _active_and_standby(night)
    standby.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(standby.proc.wait, 10) == 0
    assert standby.port() is None
    assert "signal received while starting" in standby.log()
    # The active publisher was never disturbed, and hands the lease over on SIGTERM.
    assert active.proc.poll() is None
    active.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(active.proc.wait, 30) == 0
    after = night.start("host-c")
    await _wait_serving(after, seconds=LEASE_SECONDS + 10)
    assert "publisher host-c holds the lease (epoch 2)" in after.log()
