"""The service's static bundle verifies with the SDK's offline bundle verifier.

A fake aggregation backed by the SDK's Tally serves valid actas of a small election and
its real results; the publication service cuts them, and ``verify_bundle`` then checks
every cut, recounts every leaf and recomputes every cut's results from the bundle alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from tests.pub_support import make_publisher, publication_config, start_fake_aggregation
from tests.write_path_support import small_election
from veritally.publication.app import start_publication
from veritally.publication.bundle import MAX_LEAF_PAGE_BYTES
from veritally_client import Client, ClientConfig
from veritally_client._bundle import verify_bundle
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._trustroot import TrustedRoot


async def test_bundle_of_real_cuts_verifies_offline_with_the_sdk(tmp_path: Path) -> None:
    election = small_election()
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(5)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    service = await start_publication(config)
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        for n in (7, 0, 11):
            fake.fake.add_valid(n)
            await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    now = dt.datetime.now(dt.UTC)
    pinned = TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(), now=now
    )
    report = verify_bundle(tmp_path / "bundle", trust_root=pinned, now=now)
    assert len(report.cuts) == 4


async def test_bundle_of_full_pages_and_large_leaves_verifies_within_a_small_reader_limit(
    tmp_path: Path,
) -> None:
    election = small_election(casillas_per_section=70)  # 1,136 actas: more than a page
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(1100)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        # Ten large leaves (a 300 kB field the results do not depend on): 3 MB together,
        # more than the reader below accepts in one file.
        fake.fake.add_valid(10)
        for i in range(len(fake.fake.leaves) - 10, len(fake.fake.leaves)):
            leaf = acta_pb2.LogLeaf.FromString(fake.fake.leaves[i])
            leaf.acta_record.acta.image_sha256 = bytes(300_000)
            fake.fake.leaves[i] = leaf.SerializeToString(deterministic=True)
        await service.follower.cut_once()
        await service.follower.cut_once()  # a heartbeat over the large tail
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
    now = dt.datetime.now(dt.UTC)
    pinned = TrustedRoot.from_bytes(
        (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(), now=now
    )
    small = ClientConfig(max_message_bytes=2 * MAX_LEAF_PAGE_BYTES)
    report = verify_bundle(tmp_path / "bundle", trust_root=pinned, config=small, now=now)
    assert len(report.cuts) == 3
    assert report.recount.tree_size == 1100 + 1 + 10 + 1 + 1


async def test_sdk_client_verifies_live_cuts_proofs_and_a_recount(tmp_path: Path) -> None:
    election = small_election()
    fake = await start_fake_aggregation(election)
    fake.fake.add_valid(6)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        pinned = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        client = Client(
            endpoint=f"127.0.0.1:{service.port}",
            trust_root=pinned,
            state_dir=tmp_path / "client-state",
            unsafe_plaintext=True,
        )
        try:
            # The SDK client is synchronous: run it off the loop that serves it.
            first = await asyncio.to_thread(client.latest)
            fake.fake.add_valid(9)
            await service.follower.cut_once()
            second = await asyncio.to_thread(client.latest)  # consistency-checked
            assert second.checkpoint.size > first.checkpoint.size
            wanted = acta_pb2.LogLeaf.FromString(fake.fake.leaves[3]).acta_record.acta_id
            proven = await asyncio.to_thread(client.prove_acta, wanted)
            assert proven.record.acta_id == wanted
            assert proven.leaf == fake.fake.leaves[3]
            report = await asyncio.to_thread(client.recount)
            assert report.tree_size >= second.checkpoint.size
            assert len(report.cuts) >= 2
        finally:
            client.close()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
