"""GetLatestCutView and GetCutView on a real socket: each answers the signed cut exactly as
GetLatestCut and GetCut do, next to its results decoded and named; a cut's view is
built once and kept for the last few cuts read; results that the stored definition
cannot name are refused as data loss, never shown with another election's names."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpc_support import bad_request_field
from tests.pub_support import RunningFake, make_publisher, publication_config
from tests.pub_support import start_fake_aggregation as _start_fake
from tests.write_path_support import small_election
from veritally.publication import engine as engine_module
from veritally.publication.app import PublicationService, start_publication
from veritally.publication.engine import VIEW_CACHE_CUTS
from veritally.publication.view import ViewNames, build_view
from veritally_client.protocol import ElectionIndex, parse_cut_leaf
from veritally_client.protocol.pb import publication_pb2, publication_pb2_grpc


@dataclass
class Running:
    fake: RunningFake
    service: PublicationService
    stub: publication_pb2_grpc.PublicationServiceAsyncStub
    election: ElectionIndex
    builds: list[int]

    async def cut(self, actas: int = 3) -> int:
        self.fake.fake.add_valid(actas)
        row = await self.service.follower.cut_once()
        return row.cut_number


async def _start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, definition: bytes | None = None
) -> AsyncIterator[Running]:
    election = small_election()
    fake = await _start_fake(election)
    fake.fake.other_definition = definition
    fake.fake.add_valid(4)
    builds: list[int] = []
    real_build: Callable[..., publication_pb2.CutView] = build_view

    def counting(**kw: Any) -> publication_pb2.CutView:
        builds.append(kw["cut_number"])
        return real_build(**kw)

    monkeypatch.setattr(engine_module, "build_view", counting)
    service = await start_publication(
        publication_config(tmp_path, make_publisher(tmp_path), fake.target)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    for _ in range(500):  # bounded: the first cut, made at start
        if service.engine.latest_number:
            break
        await asyncio.sleep(0.01)
    try:
        stub = publication_pb2_grpc.PublicationServiceStub(channel)
        yield Running(fake, service, stub, election, builds)
    finally:
        await channel.close()
        await service.stop(grace=0.1)
        await fake.stop()


@pytest.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    async for r in _start(tmp_path, monkeypatch):
        yield r


async def test_view_answers_the_signed_cut_next_to_its_named_results(running: Running) -> None:
    number = await running.cut()
    latest = await running.stub.GetLatestCutView(publication_pb2.GetLatestCutViewRequest())
    plain = await running.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
    # The signed bytes are exactly GetLatestCut's: a reader verifies them as before.
    assert latest.cut == plain.cut
    record = parse_cut_leaf(latest.cut.cut_leaf)
    assert (latest.view.cut_number, latest.view.cut_time) == (number, record.cut_time)
    names = ViewNames(running.election.definition_bytes)
    assert latest.view == build_view(
        names=names, results=latest.cut.results, cut_number=number, cut_time=record.cut_time
    )
    earlier = await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=1))
    first = await running.stub.GetCut(publication_pb2.GetCutRequest(cut_number=1))
    assert earlier.cut == first.cut
    assert earlier.view.cut_number == 1
    assert earlier.view.acta_records == 4 < latest.view.acta_records


async def test_a_cuts_view_is_built_once_and_the_last_few_are_kept(running: Running) -> None:
    engine = running.service.engine
    number = await running.cut()
    answers = [await engine.latest_view() for _ in range(3)]
    assert answers[0] is answers[1] is answers[2]  # one message for every read
    by_number = await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=number))
    assert by_number.view.cut_number == number
    assert running.builds == [number]  # the latest answer's view served GetCutView too
    numbers = [await running.cut() for _ in range(VIEW_CACHE_CUTS + 1)]
    for n in numbers:
        await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=n))
    for n in reversed(numbers[1:]):  # the last VIEW_CACHE_CUTS read: kept
        await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=n))
    assert running.builds == [number, *numbers]
    await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=numbers[0]))
    assert running.builds == [number, *numbers, numbers[0]]  # dropped, then built again


async def test_view_of_a_missing_cut_is_not_found_and_cut_zero_is_invalid(
    running: Running,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=99))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as zero:
        await running.stub.GetCutView(publication_pb2.GetCutViewRequest(cut_number=0))
    assert zero.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(zero.value) == "cut_number"


async def test_results_the_stored_definition_cannot_name_are_data_loss_with_an_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Names of another election on these figures would be a wrong result that looks
    # right: the view refuses, and says why in the log.
    other = small_election().pb
    other.name = "Another election"
    async for r in _start(tmp_path, monkeypatch, definition=other.SerializeToString()):
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as refused:
            await r.stub.GetLatestCutView(publication_pb2.GetLatestCutViewRequest())
        assert refused.value.code() == grpc.StatusCode.DATA_LOSS
        assert "ALARM cut 1 cannot be shown with names" in caplog.text
        # The signed cut itself is still served: it verifies on its own.
        await r.stub.GetLatestCut(publication_pb2.GetLatestCutRequest())
