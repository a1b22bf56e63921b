"""Publication checks its store instead of trusting it (docs/adr/0026).

Attacks on a real service (real SQLite, a real aggregation server on a socket):

* its SQLite file replaced by an older copy (a backup restore) and the service restarted;
* a second publisher started on a copy of the database, writing the same bundle;
* a leaf or a results blob edited in the SQLite file.

In each, no tree size may ever get two different signed roots, and nothing the store
cannot vouch for may be served.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sqlite3
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO_ROOT
from tests.integration.test_publication_cli import _command
from tests.pub_support import (
    make_publisher,
    publication_config,
    publication_db,
    start_fake_aggregation,
    wait_for_first_cut,
)
from veritally.publication.app import (
    PublicationConfig,
    PublicationService,
    start_publication,
)
from veritally.publication.errors import ForkRefusedError, TamperedDataError
from veritally.publication.published import note_checkpoint
from veritally_client import Client, RollbackError
from veritally_client._gen.veritally.v1 import acta_pb2, log_pb2, publication_pb2
from veritally_client._gen.veritally.v1.publication_pb2_grpc import PublicationServiceStub
from veritally_client._trustroot import TrustedRoot


def _backup(db: Path, copy: Path) -> None:
    """A consistent copy of a live SQLite database, as a backup tool makes it."""
    src, dst = sqlite3.connect(db), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _restore(copy: Path, db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    _backup(copy, db)


def _signed_roots(bundle: Path, *cuts: log_pb2.SignedCut) -> dict[int, set[bytes]]:
    """Every signed root per tree size, from the bundle's checkpoints and cut files and
    from the given served cuts."""
    notes = [p.read_bytes() for p in (bundle / "checkpoints").iterdir()]
    notes += [
        log_pb2.SignedCut.FromString(p.read_bytes()).checkpoint for p in (bundle / "cuts").iterdir()
    ]
    notes += [c.checkpoint for c in cuts]
    roots: dict[int, set[bytes]] = {}
    for note in notes:
        checkpoint = note_checkpoint(note)
        roots.setdefault(checkpoint.size, set()).add(checkpoint.root_hash)
    return roots


async def _start_and_cut(config: PublicationConfig) -> None:
    service = await start_publication(config)
    try:
        await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)


async def test_restored_older_database_refuses_to_sign_and_no_size_gets_two_roots(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    backup = tmp_path / "backup.db"
    try:
        service = await start_publication(config)
        try:
            await wait_for_first_cut(service, tmp_path / "bundle")
            _backup(publication_db(config), backup)  # the nightly backup, at cut 1
            for n in (3, 0, 4, 0, 2, 0, 1):
                fake.fake.add(n)
                await service.follower.cut_once()
            assert service.engine.latest_number == 8
        finally:
            await service.stop(grace=0.1)
        bundle = tmp_path / "bundle"
        before = _signed_roots(bundle)
        # The disk is lost; the operator restores last night's backup and restarts.
        _restore(backup, publication_db(config))
        with pytest.raises(ForkRefusedError):
            await _start_and_cut(config)
    finally:
        await fake.stop()
    after = _signed_roots(bundle)
    assert after == before
    assert all(len(roots) == 1 for roots in after.values())


async def test_serve_publication_refuses_to_start_on_a_restored_database_and_says_why(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(4)
    publisher = make_publisher(tmp_path)
    # The paths the command line below uses.
    config = dataclasses.replace(
        publication_config(tmp_path, publisher, fake.target), db_path=tmp_path / "pub.db"
    )
    try:
        service = await start_publication(config)
        try:
            await wait_for_first_cut(service, tmp_path / "bundle")
            _backup(publication_db(config), tmp_path / "backup.db")
            fake.fake.add(2)
            await service.follower.cut_once()
        finally:
            await service.stop(grace=0.1)
        _restore(tmp_path / "backup.db", publication_db(config))
        done = await asyncio.to_thread(
            subprocess.run,
            _command(tmp_path, publisher.key_file, publisher.trust_root_dir, fake.target),
            cwd=REPO_ROOT,
            capture_output=True,
            check=False,
            timeout=60,
        )
    finally:
        await fake.stop()
    assert done.returncode == 1
    assert b"refusing to start: refusing to sign" in done.stderr
    assert not (tmp_path / "port").exists()


async def test_second_publisher_on_a_copied_database_cannot_sign_a_size_the_other_published(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    first = await start_publication(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{first.port}")
    second: PublicationService | None = None
    try:
        await wait_for_first_cut(first, tmp_path / "bundle")
        # A standby promoted on a copy of the database while the first still runs.
        _backup(publication_db(config), tmp_path / "standby.db")
        second = await start_publication(
            dataclasses.replace(config, db_path=tmp_path / "standby.db")
        )
        fake.fake.add(2)
        await second.follower.cut_once()  # it publishes into the shared bundle
        with pytest.raises(ForkRefusedError):
            await first.follower.cut_once()  # the same cut number and size: refused
        with pytest.raises(ForkRefusedError):
            await first.follower.cut_once()  # and for good
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="")
        )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = PublicationServiceStub(channel)
        served = (await stub.GetLatestCut(publication_pb2.GetLatestCutRequest())).cut
        other = second.engine.latest
        assert other is not None
        roots = _signed_roots(tmp_path / "bundle", served, other)
        assert all(len(r) == 1 for r in roots.values())
        other_number = second.engine.latest_number
        # What a media client sees: the second's newest cut, then the first is only behind
        # (a rollback it refuses), never another root for the same size (a fork).
        pinned = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        for port, outcome in ((second.port, None), (first.port, RollbackError)):
            client = Client(
                endpoint=f"127.0.0.1:{port}",
                trust_root=pinned,
                state_dir=tmp_path / "media-state",
                unsafe_plaintext=True,
            )
            try:
                if outcome is None:
                    assert (await asyncio.to_thread(client.latest)).cut_number == other_number
                else:
                    with pytest.raises(outcome):
                        await asyncio.to_thread(client.latest)
            finally:
                client.close()
    finally:
        await channel.close()
        await first.stop(grace=0.1)
        if second is not None:
            await second.stop(grace=0.1)
        await fake.stop()


def _tamper_leaf(db: Path, index: int) -> str:
    """Change the votes of the acta in leaf ``index``, in the file; returns its id."""
    conn = sqlite3.connect(db)
    try:
        (data,) = conn.execute("SELECT data FROM leaves WHERE idx = ?", (index,)).fetchone()
        leaf = acta_pb2.LogLeaf.FromString(data)
        leaf.acta_record.acta.null_votes += 100
        conn.execute(
            "UPDATE leaves SET data = ? WHERE idx = ?",
            (leaf.SerializeToString(deterministic=True), index),
        )
        conn.commit()
    finally:
        conn.close()
    return leaf.acta_record.acta_id


async def test_leaf_tampered_in_the_store_is_refused_not_served(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    service = await start_publication(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    stub = PublicationServiceStub(channel)
    try:
        await wait_for_first_cut(service, tmp_path / "bundle")
        acta_id = _tamper_leaf(publication_db(config), 3)
        with pytest.raises(grpc.aio.AioRpcError) as leaves:
            await stub.GetLeaves(publication_pb2.GetLeavesRequest(start=0, count=20))
        assert leaves.value.code() == grpc.StatusCode.DATA_LOSS
        with pytest.raises(grpc.aio.AioRpcError) as proof:
            await stub.GetActaInclusionProof(
                publication_pb2.GetActaInclusionProofRequest(acta_id=acta_id, tree_size=11)
            )
        assert proof.value.code() == grpc.StatusCode.DATA_LOSS
        # Untouched leaves are still served.
        ok = await stub.GetLeaves(publication_pb2.GetLeavesRequest(start=4, count=3))
        assert len(ok.leaves) == 3
        # The next cut is committed, but its entry bundle (which holds leaf 3) is not
        # published, nor its tiles: the bundle still points at cut 1.
        fake.fake.add(5)
        await service.follower.cut_once()
        bundle = tmp_path / "bundle"
        assert not (bundle / "tile/entries/000.p/17").exists()
        assert not (bundle / "tile/0/000.p/17").exists()
        assert (bundle / "checkpoint").read_bytes() == (bundle / "checkpoints/11").read_bytes()
        assert b'"cut_number": 1,' in (bundle / "latest").read_bytes()
    finally:
        await channel.close()
        await service.stop(grace=0.1)
        await fake.stop()


async def test_results_blob_tampered_in_the_store_is_refused_not_served(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    service = await start_publication(config)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        await wait_for_first_cut(service, tmp_path / "bundle")
        conn = sqlite3.connect(publication_db(config))
        conn.execute("UPDATE results SET data = ?", (b"\x0a\x04fake",))
        conn.commit()
        conn.close()
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await PublicationServiceStub(channel).GetCut(
                publication_pb2.GetCutRequest(cut_number=1)
            )
        assert cut.value.code() == grpc.StatusCode.DATA_LOSS
    finally:
        await channel.close()
        await service.stop(grace=0.1)
    try:
        with pytest.raises(TamperedDataError):
            await _start_and_cut(config)
    finally:
        await fake.stop()
