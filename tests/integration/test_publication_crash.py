"""A real crash (the process dies) between signing a checkpoint and persisting it.

The signed checkpoint must leave no trace: not in the store, not in the bundle, never
served; after restart the log continues from the last committed cut, and the stored
checkpoints are re-served byte for byte, never re-signed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc

from tests.conftest import REPO_ROOT
from tests.pub_support import make_publisher, publication_config, start_fake_aggregation
from veritally.publication.app import start_publication
from veritally.publication.store import PublicationStore
from veritally_client._gen.veritally.v1 import publication_pb2
from veritally_client._gen.veritally.v1.publication_pb2_grpc import PublicationServiceStub

CRASH_EXIT = 17

# Runs in a child process: cut the 3 records after the first 5 and die right after signing.
CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from tests.pub_support import ORIGIN, acta_leaf, results_blob
    from veritally.publication.cutter import Cutter
    from veritally.publication.keys import load_signer
    from veritally.publication.store import PublicationStore

    db, key, out = (Path(a) for a in sys.argv[1:4])
    leaves = [acta_leaf(i, f"C{i:06d}/P") for i in range(8)]

    def die(note: bytes) -> None:
        out.write_bytes(note)
        os._exit({exit})

    cutter = Cutter(store=PublicationStore(db), signers=[load_signer(key)], origin=ORIGIN,
                    before_commit=die)
    cutter.make_cut(acta_leaves=leaves[5:], acta_records=8, results=results_blob(leaves))
    """
).replace("{exit}", str(CRASH_EXIT))


async def test_crash_between_signing_and_persisting(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(5)
    try:
        publisher = make_publisher(tmp_path)
        config = publication_config(tmp_path, publisher, fake.target)
        service = await start_publication(config)
        for _ in range(500):  # bounded: the first cut is made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        first = service.engine.latest
        assert first is not None
        await service.stop(grace=0.1)

        crashed_note = tmp_path / "crashed-note"
        child = subprocess.run(  # noqa: ASYNC221 - the child must run to its crash before we go on
            [
                sys.executable,
                "-c",
                CHILD,
                str(config.db_path),
                str(publisher.key_file),
                str(crashed_note),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert child.returncode == CRASH_EXIT, child.stderr.decode()
        lost = crashed_note.read_bytes()
        assert lost.startswith(b"veritally.example/test-election\n10\n")

        # The store is exactly at the last committed cut.
        store = PublicationStore(config.db_path)
        assert store.tree_size == 6  # 5 actas and the first cut leaf
        latest = store.latest_cut()
        assert latest is not None
        assert latest.checkpoint == first.checkpoint
        store.close()

        # Restart: the same records are cut again at the same size, signed afresh (a new cut
        # time, so a new root), and the lost checkpoint appears nowhere.
        fake.fake.add(3)
        service = await start_publication(config)
        try:
            for _ in range(500):  # bounded: the first cut after the restart
                if service.engine.latest_number >= 2:
                    break
                await asyncio.sleep(0.01)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
                stub = PublicationServiceStub(channel)
                again = await stub.GetCut(publication_pb2.GetCutRequest(cut_number=1))
                assert again.cut.SerializeToString() == first.SerializeToString()
                second = (await stub.GetCut(publication_pb2.GetCutRequest(cut_number=2))).cut
            assert second.checkpoint.startswith(b"veritally.example/test-election\n10\n")
            assert second.checkpoint != lost
            for path in (tmp_path / "bundle").rglob("*"):
                if path.is_file():
                    assert lost not in path.read_bytes(), path
        finally:
            await service.stop(grace=0.1)
    finally:
        await fake.stop()
