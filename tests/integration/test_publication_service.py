"""The publication service on a real socket, following a real (test) aggregation server.

Every cut is checked with the SDK primitives only: the checkpoint's signature against the
trust root's keys, the cut leaf's inclusion proof as the last leaf, the results digest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from tests.grpc_support import bad_request_field
from tests.pub_support import (
    DEFINITION,
    ORIGIN,
    PublisherFiles,
    RunningFake,
    acta_leaf,
    make_publisher,
    publication_config,
    results_blob,
    start_fake_aggregation,
)
from veritally.publication.app import PublicationService, start_publication
from veritally.publication.errors import KeyFileError, TrustRootFileError
from veritally.publication.liveness import STALL_ALARM_INTERVALS
from veritally.rpc import MAX_MESSAGE_BYTES, SMALL_REQUEST_BYTES
from veritally.storage import MAX_LEAVES_PER_PAGE
from veritally_client._checkpoint import Checkpoint, parse_checkpoint
from veritally_client._gen.veritally.v1 import (
    acta_pb2,
    log_pb2,
    publication_pb2,
    publication_pb2_grpc,
)
from veritally_client._gen.veritally.v1.publication_pb2_grpc import PublicationServiceStub
from veritally_client._merkle import (
    leaf_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from veritally_client._note import open_note
from veritally_client._tiles import parse_entry_bundle
from veritally_client._trustroot import TrustedRoot


@dataclass
class Stack:
    fake: RunningFake
    publisher: PublisherFiles
    service: PublicationService
    channel: grpc.aio.Channel
    stub: publication_pb2_grpc.PublicationServiceAsyncStub
    tmp: Path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    fake = await start_fake_aggregation()
    fake.fake.add(10)
    publisher = make_publisher(tmp_path)
    service = await start_publication(publication_config(tmp_path, publisher, fake.target))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    s = Stack(fake, publisher, service, channel, PublicationServiceStub(channel), tmp_path)
    await _wait_for_cut(s, 1)
    yield s
    await channel.close()
    await service.stop(grace=0.1)
    await fake.stop()


async def _wait_for_cut(s: Stack, number: int) -> None:
    for _ in range(500):  # bounded: 5 s at 10 ms
        if s.service.engine.latest_number >= number:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"cut {number} was not made")


async def _trusted(s: Stack) -> TrustedRoot:
    resp = await s.stub.GetTrustRoot(publication_pb2.GetTrustRootRequest())
    return TrustedRoot.from_bytes(resp.trust_root.SerializeToString(), now=dt.datetime.now(dt.UTC))


def verify_cut(cut: log_pb2.SignedCut, root: TrustedRoot) -> tuple[Checkpoint, acta_pb2.CutRecord]:
    """What a client checks, with SDK primitives only."""
    note = open_note(cut.checkpoint, root.verifiers, threshold=root.threshold)
    checkpoint = parse_checkpoint(note.text)
    assert checkpoint.origin == root.origin
    verify_inclusion(
        leaf_hash=leaf_hash(cut.cut_leaf),
        index=checkpoint.size - 1,
        size=checkpoint.size,
        proof=list(cut.inclusion_proof),
        root=checkpoint.root_hash,
    )
    leaf = acta_pb2.LogLeaf.FromString(cut.cut_leaf)
    assert leaf.WhichOneof("kind") == "cut_record"
    assert hashlib.sha256(cut.results).digest() == leaf.cut_record.results_sha256
    return checkpoint, leaf.cut_record


async def _next_cut(call: object) -> publication_pb2.WatchCutsResponse:
    assert isinstance(call, grpc.aio.UnaryStreamCall)
    msg = await asyncio.wait_for(call.read(), 5)
    assert isinstance(msg, publication_pb2.WatchCutsResponse)
    return msg


async def test_first_cut_covers_every_record_and_verifies(stack: Stack) -> None:
    resp = await stack.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
    checkpoint, record = verify_cut(resp.cut, await _trusted(stack))
    assert (record.cut_number, record.acta_records, checkpoint.size) == (1, 10, 11)
    assert resp.cut.results == results_blob(stack.fake.fake.leaves)


async def test_cut_appends_new_records_and_results_match(stack: Stack) -> None:
    stack.fake.fake.add(25)
    await stack.service.follower.cut_once()
    resp = await stack.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
    checkpoint, record = verify_cut(resp.cut, await _trusted(stack))
    assert (record.cut_number, record.acta_records, checkpoint.size) == (2, 35, 37)
    assert resp.cut.results == results_blob(stack.fake.fake.leaves)
    # The acta leaves are the exact bytes aggregation streamed, in order.
    leaves = await stack.stub.GetLeaves(publication_pb2.GetLeavesRequest(start=0, count=100))
    actas = [x for i, x in enumerate(leaves.leaves) if i not in (10, 36)]
    assert actas == stack.fake.fake.leaves


async def test_cut_by_number_and_not_found(stack: Stack) -> None:
    await stack.service.follower.cut_once()
    first = await stack.stub.GetCut(publication_pb2.GetCutRequest(cut_number=1))
    _cp, record = verify_cut(first.cut, await _trusted(stack))
    assert record.cut_number == 1
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetCut(publication_pb2.GetCutRequest(cut_number=99))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_consecutive_cuts_are_consistent(stack: Stack) -> None:
    stack.fake.fake.add(7)
    await stack.service.follower.cut_once()
    root = await _trusted(stack)
    a, _ = verify_cut(
        (await stack.stub.GetCut(publication_pb2.GetCutRequest(cut_number=1))).cut, root
    )
    b, _ = verify_cut(
        (await stack.stub.GetCut(publication_pb2.GetCutRequest(cut_number=2))).cut, root
    )
    resp = await stack.stub.GetConsistencyProof(
        publication_pb2.GetConsistencyProofRequest(from_size=a.size, to_size=b.size)
    )
    verify_consistency(
        size1=a.size,
        size2=b.size,
        proof=list(resp.proof.hashes),
        root1=a.root_hash,
        root2=b.root_hash,
    )


@pytest.mark.parametrize(
    ("from_size", "to_size", "field"), [(5, 4, "from_size"), (1, 10_000, "to_size")]
)
async def test_rejects_bad_consistency_sizes(
    stack: Stack, from_size: int, to_size: int, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetConsistencyProof(
            publication_pb2.GetConsistencyProofRequest(from_size=from_size, to_size=to_size)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(e.value) == field


async def test_acta_inclusion_proof_latest_and_given_revision(stack: Stack) -> None:
    acta_id = "C000003/P"
    stack.fake.fake.correct(acta_id, 2)
    await stack.service.follower.cut_once()
    root = await _trusted(stack)
    first, _ = verify_cut(
        (await stack.stub.GetCut(publication_pb2.GetCutRequest(cut_number=1))).cut, root
    )
    second, _ = verify_cut(
        (await stack.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())).cut, root
    )
    for size, revision, want in [(second, 0, 2), (second, 1, 1), (first, 0, 1)]:
        resp = await stack.stub.GetActaInclusionProof(
            publication_pb2.GetActaInclusionProofRequest(
                acta_id=acta_id, revision=revision, tree_size=size.size
            )
        )
        record = acta_pb2.LogLeaf.FromString(resp.leaf).acta_record
        assert (record.acta_id, record.revision) == (acta_id, want)
        verify_inclusion(
            leaf_hash=leaf_hash(resp.leaf),
            index=resp.proof.leaf_index,
            size=size.size,
            proof=list(resp.proof.hashes),
            root=size.root_hash,
        )


async def test_acta_inclusion_proof_errors(stack: Stack) -> None:
    stub = stack.stub
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetActaInclusionProof(
            publication_pb2.GetActaInclusionProofRequest(acta_id="nope/P", tree_size=5)
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetActaInclusionProof(
            publication_pb2.GetActaInclusionProofRequest(
                acta_id="C000001/P", revision=2, tree_size=11
            )
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for size in (0, 12):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.GetActaInclusionProof(
                publication_pb2.GetActaInclusionProofRequest(acta_id="C000001/P", tree_size=size)
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_field(e.value) == "tree_size"


async def test_unknown_huge_acta_id_is_not_echoed_in_the_error(stack: Stack) -> None:
    # Just under the service's 64 KiB receive limit: it parses, and is not found.
    huge = "x" * 60_000
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetActaInclusionProof(
            publication_pb2.GetActaInclusionProofRequest(acta_id=huge, tree_size=5)
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(e.value.details() or "") < 200


async def test_a_request_above_the_receive_limit_is_refused_unparsed(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetActaInclusionProof(
            publication_pb2.GetActaInclusionProofRequest(
                acta_id="x" * SMALL_REQUEST_BYTES, tree_size=5
            )
        )
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_leaves_are_paged_and_capped_for_a_recount(stack: Stack) -> None:
    stack.fake.fake.add(MAX_LEAVES_PER_PAGE + 100)
    await stack.service.follower.cut_once()
    root = await _trusted(stack)
    latest = (await stack.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())).cut
    checkpoint, _ = verify_cut(latest, root)
    got: list[bytes] = []
    while len(got) < checkpoint.size:
        page = await stack.stub.GetLeaves(
            publication_pb2.GetLeavesRequest(start=len(got), count=100_000)
        )
        assert 0 < len(page.leaves) <= MAX_LEAVES_PER_PAGE
        got += page.leaves
    assert root_from_leaf_hashes(leaf_hash(x) for x in got) == checkpoint.root_hash
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetLeaves(publication_pb2.GetLeavesRequest(start=checkpoint.size, count=1))
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetLeaves(publication_pb2.GetLeavesRequest(start=0, count=0))
    assert bad_request_field(e.value) == "count"


async def test_watch_sends_past_cuts_then_new_ones(stack: Stack) -> None:
    await stack.service.follower.cut_once()
    call = stack.stub.WatchCuts(publication_pb2.WatchCutsRequest(after_cut_number=0))
    root = await _trusted(stack)
    numbers = []
    for _ in range(2):
        msg = await _next_cut(call)
        numbers.append(verify_cut(msg.cut, root)[1].cut_number)
    stack.fake.fake.add(3)
    await stack.service.follower.cut_once()
    msg = await _next_cut(call)
    numbers.append(verify_cut(msg.cut, root)[1].cut_number)
    assert numbers == [1, 2, 3]
    call.cancel()


async def test_trust_root_and_definition_are_served(stack: Stack) -> None:
    root = await _trusted(stack)
    assert root.version == 1
    assert root.origin == ORIGIN
    assert root.verifiers == (stack.publisher.signer.verifier(),)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stack.stub.GetTrustRoot(publication_pb2.GetTrustRootRequest(version=2))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    resp = await stack.stub.GetElectionDefinition(publication_pb2.GetElectionDefinitionRequest())
    assert resp.definition == DEFINITION


async def test_no_cut_while_aggregation_is_down_then_catch_up(stack: Stack) -> None:
    stack.fake.fake.unavailable = True
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.service.follower.cut_once()
    assert stack.service.engine.latest_number == 1
    stack.fake.fake.unavailable = False
    stack.fake.fake.add(4)
    await stack.service.follower.cut_once()
    _cp, record = verify_cut(
        stack.service.engine.latest or log_pb2.SignedCut(), await _trusted(stack)
    )
    assert (record.cut_number, record.acta_records) == (2, 14)


async def test_bundle_holds_every_cut_and_a_latest_pointer(stack: Stack) -> None:
    stack.fake.fake.add(2000)
    await stack.service.follower.cut_once()
    bundle = stack.tmp / "bundle"
    latest = json.loads((bundle / "latest").read_text())
    assert latest["cut_number"] == 2
    root = TrustedRoot.from_bytes(
        (bundle / latest["trust_root"]).read_bytes(), now=dt.datetime.now(dt.UTC)
    )
    cut = log_pb2.SignedCut.FromString((bundle / latest["cut"]).read_bytes())
    checkpoint, record = verify_cut(cut, root)
    assert (bundle / latest["checkpoint"]).read_bytes() == cut.checkpoint
    results = (bundle / latest["results"]).read_bytes()
    assert hashlib.sha256(results).digest() == record.results_sha256
    # Recount from the entry bundles alone: full ones, then the partial one of the size.
    assert (bundle / "checkpoint").read_bytes() == cut.checkpoint
    full, tail = divmod(checkpoint.size, 256)
    leaves: list[bytes] = []
    for i in range(full):
        leaves += parse_entry_bundle((bundle / f"tile/entries/{i:03d}").read_bytes(), 256)
    leaves += parse_entry_bundle((bundle / f"tile/entries/{full:03d}.p/{tail}").read_bytes(), tail)
    assert len(leaves) == checkpoint.size
    assert root_from_leaf_hashes(leaf_hash(x) for x in leaves) == checkpoint.root_hash
    assert (bundle / latest["election_definition"]).read_bytes() == DEFINITION
    assert (bundle / "cuts/1.cut").exists()


async def test_restart_reserves_the_same_cuts_and_continues(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(5)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target)
    service = await start_publication(config)
    for _ in range(500):  # bounded: the scheduler's first cut, made at start
        if service.engine.latest_number:
            break
        await asyncio.sleep(0.01)
    await service.follower.cut_once()
    before = service.engine.latest
    assert before is not None
    await service.stop(grace=0.1)
    fake.fake.unavailable = True  # restart at the same size: nothing can be cut
    service = await start_publication(config)
    try:
        for _ in range(500):  # bounded: the scheduler's attempt at start (which fails)
            if service.follower.attempts:
                break
            await asyncio.sleep(0.01)
        assert service.engine.latest_number == 2
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = PublicationServiceStub(channel)
            latest = (await stub.GetLatestCut(publication_pb2.GetLatestCutRequest())).cut
            assert latest.SerializeToString() == before.SerializeToString()
            fake.fake.unavailable = False
            fake.fake.add(1)
            await service.follower.cut_once()
            newer = (await stub.GetLatestCut(publication_pb2.GetLatestCutRequest())).cut
        root = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        a, ra = verify_cut(before, root)
        b, rb = verify_cut(newer, root)
        assert b.size > a.size
        assert rb.cut_number == ra.cut_number + 1
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_heartbeat_cut_every_interval_when_nothing_changes(tmp_path: Path) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(3)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target, interval=0.05)
    service = await start_publication(config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = PublicationServiceStub(channel)
            call = stub.WatchCuts(publication_pb2.WatchCutsRequest())
            root = TrustedRoot.from_bytes(
                (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
                now=dt.datetime.now(dt.UTC),
            )
            seen = []
            for _ in range(4):
                msg = await _next_cut(call)
                cp, record = verify_cut(msg.cut, root)
                seen.append((record.cut_number, record.acta_records, cp.size))
            call.cancel()
        assert seen == [(1, 3, 4), (2, 3, 5), (3, 3, 6), (4, 3, 7)]
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path)
    publisher.key_file.unlink()
    with pytest.raises(KeyFileError):
        await start_publication(publication_config(tmp_path, publisher, "127.0.0.1:1"))
    assert not (tmp_path / "publication.db").exists()


async def test_refuses_to_start_with_a_world_readable_key(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path)
    publisher.key_file.chmod(0o644)
    with pytest.raises(KeyFileError):
        await start_publication(publication_config(tmp_path, publisher, "127.0.0.1:1"))


async def test_refuses_to_start_with_a_key_the_trust_root_does_not_list(tmp_path: Path) -> None:
    publisher = make_publisher(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_publisher(tmp_path / "other")
    config = publication_config(tmp_path, publisher, "127.0.0.1:1")
    config = dataclasses.replace(config, key_files=(other.key_file,))
    with pytest.raises(TrustRootFileError):
        await start_publication(config)


async def test_bundle_catches_up_with_cuts_committed_before_it_was_written(
    tmp_path: Path,
) -> None:
    fake = await start_fake_aggregation()
    fake.fake.add(1500)
    publisher = make_publisher(tmp_path)
    # As if the process died after committing cuts but before writing their files.
    config = publication_config(tmp_path, publisher, fake.target, bundle=False)
    service = await start_publication(config)
    try:
        for _ in range(500):  # bounded: the first cut, made at start
            if service.engine.latest_number:
                break
            await asyncio.sleep(0.01)
        fake.fake.add(700)
        await service.follower.cut_once()
    finally:
        await service.stop(grace=0.1)
    fake.fake.unavailable = True  # no new cut: only the repair writes files
    service = await start_publication(dataclasses.replace(config, bundle_dir=tmp_path / "b"))
    try:
        bundle = tmp_path / "b"
        latest = json.loads((bundle / "latest").read_text())
        assert latest["cut_number"] == 2
        assert (bundle / "cuts/1.cut").exists()
        assert (bundle / "checkpoints/1501").exists()
        assert latest["tree_size"] == 2202
        assert (bundle / "checkpoint").read_bytes() == (bundle / "checkpoints/2202").read_bytes()
        # Every tile and entry bundle of both sizes: 2202 is 8 full tiles and one of 154.
        assert (bundle / "tile/entries/007").exists()
        assert (bundle / "tile/entries/008.p/154").exists()
        assert (bundle / "tile/0/007").exists()
        assert (bundle / "tile/0/008.p/154").exists()
        assert (bundle / "tile/1/000.p/8").exists()
        # 1501's partial level-0 tile was replaced by a full one: removed. Its level-1 tile
        # stays for the readers of 1501 until tile/1/000 is full.
        assert not (bundle / "tile/0/005.p").exists()
        assert (bundle / "tile/1/000.p/5").exists()
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_heartbeats_over_a_stuck_aggregation_sign_the_lag_and_alarm_every_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="veritally.publication.follower")
    fake = await start_fake_aggregation()
    fake.fake.add(3)
    fake.fake.ingest_ahead = 4  # ingest accepted 7; aggregation cannot get past the 4th
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target, interval=0.05)
    service = await start_publication(config)
    try:

        def alarms() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.ERROR and "publication stalled" in r.getMessage()
            ]

        for _ in range(500):  # bounded: 5 s at 10 ms
            if len(alarms()) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(alarms()) >= 2
        assert "covers 3 acta records, ingest had accepted 7 (4 behind)" in alarms()[0]
        assert f"for {STALL_ALARM_INTERVALS} intervals" in alarms()[0]
        assert f"for {STALL_ALARM_INTERVALS + 1} intervals" in alarms()[1]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            latest = await PublicationServiceStub(channel).GetLatestCut(
                publication_pb2.GetLatestCutRequest()
            )
        root = TrustedRoot.from_bytes(
            (publisher.trust_root_dir / "trust-root-v1.binpb").read_bytes(),
            now=dt.datetime.now(dt.UTC),
        )
        _, record = verify_cut(latest.cut, root)
        # The heartbeat says, in signed data, that it is 4 records behind ingest.
        assert (record.acta_records, record.ingest_records) == (3, 7)
        assert record.cut_number > STALL_ALARM_INTERVALS
        # Once aggregation moves on, the alarm stops.
        fake.fake.add(4)
        fake.fake.ingest_ahead = 0
        target = service.engine.latest_number + 3
        for _ in range(500):
            if service.engine.latest_number >= target:
                break
            await asyncio.sleep(0.01)
        quiet = len(alarms())
        await asyncio.sleep(0.3)
        assert len(alarms()) == quiet
    finally:
        await service.stop(grace=0.1)
        await fake.stop()


async def test_publication_that_cannot_fetch_a_record_alarms_instead_of_going_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="veritally.publication.follower")
    fake = await start_fake_aggregation()
    fake.fake.add(3)
    publisher = make_publisher(tmp_path)
    config = publication_config(tmp_path, publisher, fake.target, interval=0.2, bundle=False)
    service = await start_publication(config)
    try:
        for _ in range(500):  # bounded: 5 s at 10 ms
            if service.engine.latest_number >= 1:
                break
            await asyncio.sleep(0.01)
        # Aggregation counted a record that no stream message can carry to publication.
        poison = acta_pb2.LogLeaf.FromString(acta_leaf(3, "C000003/P"))
        poison.acta_record.acta.provenance.operator_id = "x" * (MAX_MESSAGE_BYTES + 1024)
        fake.fake.leaves.append(poison.SerializeToString(deterministic=True))
        fake.fake.add(2)

        def alarms() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.levelno == logging.ERROR and "publication stalled" in r.getMessage()
            ]

        for _ in range(300):  # bounded: 30 s at 100 ms
            if len(alarms()) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(alarms()) >= 2
        assert "covers 3 acta records, ingest had accepted 6 (3 behind)" in alarms()[0]
        assert service.engine.acta_records == 3
    finally:
        await service.stop(grace=0.1)
        await fake.stop()
