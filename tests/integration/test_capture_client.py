"""The capture client (``veritally.capture``) against a real ingest server on 127.0.0.1:
double capture on the two operators' channels, streams of several messages, an
idempotent resubmission, and an ingest that comes up only after the client started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from tests.write_path_support import all_actas, as_caller, capture_operator, small_election
from veritally.capture import (
    Answer,
    Batcher,
    CaptureClient,
    CaptureConfig,
    CaptureCounters,
    Operator,
)
from veritally.ingest.app import start_ingest
from veritally.mesh.process import free_port
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2

ELECTION = small_election()
CENTRE = "centre-1"
Status = ingest_pb2.OutcomeStatus
# Small messages, two to a stream, so that a handful of actas makes several streams.
CONFIG = CaptureConfig(batch=5, messages_per_stream=2, streams=2)


def _acta_id(acta: acta_pb2.Acta) -> str:
    return f"{acta.casilla_id}/{acta.contest_id}"


def _operator(name: str) -> Operator:
    # Without Envoy, the operator's identity is the header Envoy would set for her
    # certificate.
    return Operator(metadata=as_caller(capture_operator(name, centre=CENTRE)))


async def _messages(
    items: Iterable[tuple[str, ingest_pb2.SubmitActasRequest]],
) -> AsyncIterator[tuple[str, ingest_pb2.SubmitActasRequest]]:
    for item in items:
        yield item


async def _capture(client: CaptureClient) -> list[Answer]:
    answers: list[Answer] = []
    async with client:
        await client.run(
            _messages(Batcher.all(all_actas(ELECTION), CONFIG.batch, centre=CENTRE)),
            answers.append,
        )
    return answers


def _statuses(answers: list[Answer], operator: int) -> set[str]:
    return {Status.Name(o.status) for a in answers if a.operator == operator for o in a.outcomes}


async def test_double_capture_sends_each_stream_with_both_operators_and_resends_idempotently(
    tmp_path: Path,
) -> None:
    actas = all_actas(ELECTION)
    service = await start_ingest(
        election=ELECTION,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=True,
    )
    try:
        target = f"127.0.0.1:{service.port}"
        operators = {CENTRE: [_operator("op-1"), _operator("op-2")]}
        answers = await _capture(CaptureClient(target=target, operators=operators, config=CONFIG))
        assert _statuses(answers, 0) == {"OUTCOME_STATUS_AWAITING_SECOND_CAPTURE"}
        assert _statuses(answers, 1) == {"OUTCOME_STATUS_ACCEPTED"}
        for answer in answers:
            # One outcome per acta of the stream, in order.
            sent = [_acta_id(a) for m in answer.messages for a in m.actas]
            assert [o.acta_id for o in answer.outcomes] == sent
        assert any(len(a.messages) > 1 for a in answers)
        assert sorted(o.acta_id for a in answers if a.operator == 1 for o in a.outcomes) == sorted(
            _acta_id(a) for a in actas
        )
        assert service.engine.log_size == len(actas)

        # Resending everything (an interrupted import run again) changes nothing.
        again = await _capture(CaptureClient(target=target, operators=operators, config=CONFIG))
        assert _statuses(again, 0) | _statuses(again, 1) == {"OUTCOME_STATUS_DUPLICATE"}
        assert service.engine.log_size == len(actas)
    finally:
        await service.stop()


async def test_client_rides_out_an_ingest_that_comes_up_late(tmp_path: Path) -> None:
    port = free_port()
    counters = CaptureCounters()
    client = CaptureClient(
        target=f"127.0.0.1:{port}",
        operators={CENTRE: [_operator("op-1")]},
        config=CONFIG,
        counters=counters,
    )
    capture = asyncio.create_task(_capture(client))
    await asyncio.sleep(1.0)  # nobody listens: every stream meets UNAVAILABLE
    assert not capture.done()
    service = await start_ingest(
        election=ELECTION,
        db_path=tmp_path / "ingest.db",
        address=f"127.0.0.1:{port}",
        double_capture=False,
    )
    try:
        answers = await asyncio.wait_for(capture, timeout=60.0)
        assert _statuses(answers, 0) == {"OUTCOME_STATUS_ACCEPTED"}
        assert service.engine.log_size == len(all_actas(ELECTION))
        assert counters.retries["UNAVAILABLE"] >= 1
    finally:
        await service.stop()
