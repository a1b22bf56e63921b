"""Conditional reads (docs/adr/0089) against the REAL publication service on a socket:
the answers publication builds per cut, and the SDK and CLI telling a heartbeat cut from
new results. The sync client runs in a worker thread (the servers share the loop)."""

from __future__ import annotations

import asyncio
import io
from contextlib import redirect_stdout
from pathlib import Path

import grpc

from tests.sdk_fakes.stack import SdkStack, sdk_stack
from veritally.publication.conditional import PROOF_ANSWERS_KEPT
from veritally_client._cli import EXIT_NOTHING_NEW, EXIT_OK, main
from veritally_client.protocol.pb import publication_pb2, publication_pb2_grpc


async def _latest(stack: SdkStack, verified_tree_size: int) -> publication_pb2.GetLatestCutResponse:
    async with grpc.aio.insecure_channel(stack.endpoint) as channel:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        request = publication_pb2.GetLatestCutRequest(verified_tree_size=verified_tree_size)
        response: publication_pb2.GetLatestCutResponse = await stub.GetLatestCut(request)
        return response


async def test_publication_leaves_out_results_a_client_verified(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        whole = await _latest(stack, 0)
        size = stack.service.engine.latest_answers.tree_size  # type: ignore[union-attr]
        assert not whole.results_unchanged
        assert whole.cut.results
        same = await _latest(stack, size)
        assert same.results_unchanged
        assert same.cut.checkpoint == whole.cut.checkpoint
        assert not same.cut.results
        assert not same.cut.cut_leaf
        for _ in range(3):
            await stack.cut()  # heartbeats: no new acta record
        one_behind = await _latest(stack, size + 2)
        assert one_behind.results_unchanged
        assert one_behind.cut.cut_leaf
        assert not one_behind.consistency_proof
        assert not one_behind.cut.results
        assert one_behind.ByteSize() < 1024
        three_behind = await _latest(stack, size)
        assert three_behind.results_unchanged
        assert three_behind.consistency_proof
        assert await _latest(stack, size) is not None  # kept: the same answer again
        await stack.cut(2)  # new results: everyone gets the whole cut
        for verified in (size, size + 3, 0, size + 1000):
            answer = await _latest(stack, verified)
            assert not answer.results_unchanged
            assert answer.cut.results


async def test_proof_answers_kept_per_cut_are_bounded(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        first = stack.service.engine.latest_answers.tree_size  # type: ignore[union-attr]
        for _ in range(PROOF_ANSWERS_KEPT + 4):
            await stack.cut()
        answers = stack.service.engine.latest_answers
        assert answers is not None
        for verified in range(first, answers.tree_size - 1):
            answer = await _latest(stack, verified)
            assert answer.results_unchanged
            assert answer.consistency_proof
        assert len(answers._with_proof) == PROOF_ANSWERS_KEPT


async def test_sdk_tells_a_heartbeat_from_new_results(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        with stack.client() as client:
            first = await asyncio.to_thread(client.latest)
            await stack.cut()
            heartbeat = await asyncio.to_thread(client.latest)
            assert heartbeat.cut_number == first.cut_number + 1
            assert not heartbeat.results_changed
            assert heartbeat.results_bytes == first.results_bytes
            await stack.cut(3)
            changed = await asyncio.to_thread(client.latest)
            assert changed.results_changed
            assert changed.acta_records == first.acta_records + 3


def _cli(stack: SdkStack, *args: str) -> int:
    base = ["--endpoint", stack.endpoint, "--unsafe-plaintext"]
    base += ["--trust-root", str(stack.trust_root_file), "--state-dir", str(stack.state_dir)]
    with redirect_stdout(io.StringIO()):
        return main([*base, *args])


async def test_cli_latest_if_changed_exits_4_on_a_heartbeat(tmp_path: Path) -> None:
    async with sdk_stack(tmp_path) as stack:
        assert await asyncio.to_thread(_cli, stack, "latest", "--if-changed") == EXIT_OK
        await stack.cut()
        assert await asyncio.to_thread(_cli, stack, "latest", "--if-newer") == EXIT_OK
        await stack.cut()
        assert await asyncio.to_thread(_cli, stack, "latest", "--if-changed") == EXIT_NOTHING_NEW
        await stack.cut(2)
        assert await asyncio.to_thread(_cli, stack, "latest", "--if-changed") == EXIT_OK
