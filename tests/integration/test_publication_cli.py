"""``veritally serve publication`` as an operator runs it: a real process, real port."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from tests.conftest import REPO_ROOT
from tests.pub_support import make_publisher, start_fake_aggregation
from veritally_client._checkpoint import parse_checkpoint
from veritally_client._gen.veritally.v1 import publication_pb2
from veritally_client._gen.veritally.v1.publication_pb2_grpc import PublicationServiceStub
from veritally_client._note import open_note
from veritally_client._trustroot import TrustedRoot


def _command(tmp_path: Path, key: Path, trust: Path, aggregation: str) -> list[str]:
    return [
        sys.executable, "-m", "veritally.cli", "serve", "publication",
        "--db", str(tmp_path / "pub.db"),
        "--key-file", str(key),
        "--trust-root-dir", str(trust),
        "--aggregation", aggregation,
        "--interval", "0.2",
        "--bundle-dir", str(tmp_path / "bundle"),
        "--port-file", str(tmp_path / "port"),
    ]  # fmt: skip


async def test_serve_publication_runs_cuts_and_stops_on_sigterm(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(4)
    publisher = make_publisher(tmp_path)
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-running child we signal and wait for below
        _command(tmp_path, publisher.key_file, publisher.trust_root_dir, fake.target),
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
    )
    try:
        port_file = tmp_path / "port"
        for _ in range(300):  # bounded: 30 s for the interpreter to start and bind
            if port_file.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert proc.poll() is None
        port = int(port_file.read_text())
        root = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = PublicationServiceStub(channel)
            for _ in range(100):  # bounded: 10 s for the first cuts
                try:
                    resp = await stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
                    continue
                checkpoint = parse_checkpoint(open_note(resp.cut.checkpoint, root.verifiers).text)
                if checkpoint.size >= 6:  # two cuts: 4 actas + 2 cut leaves
                    break
                await asyncio.sleep(0.1)
            assert checkpoint.size >= 6
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert (tmp_path / "bundle" / "latest").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        await fake.stop()


def test_serve_publication_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path)
    publisher.key_file.unlink()
    done = subprocess.run(
        _command(tmp_path, publisher.key_file, publisher.trust_root_dir, "127.0.0.1:1"),
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert not (tmp_path / "pub.db").exists()
    assert not (tmp_path / "port").exists()
