"""Closing the night at ingest over real gRPC: who may close it, what is refused after,
that the close is kept across a restart, the definition's close time, and the follow
stream telling aggregation where the log ends."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest

from tests.write_path_support import (
    as_caller,
    authority_operator,
    capture_operator,
    make_acta,
    small_election,
)
from veritally.ingest.app import IngestService, start_ingest
from veritally.rpc import aio_channel
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, ingest_pb2, ingest_pb2_grpc

ELECTION = small_election()
CASILLA = "01-01-0001-B1"
OTHER = "02-02-0002-C2"
OPS_1 = as_caller(authority_operator("ops-01"))
OPS_2 = as_caller(authority_operator("ops-02"))
CENTRE = as_caller(capture_operator("op-1"))
REJECTED = ingest_pb2.OUTCOME_STATUS_REJECTED


async def _start(tmp_path: Path, election: ElectionIndex = ELECTION) -> IngestService:
    return await start_ingest(
        election=election,
        db_path=tmp_path / "ingest.db",
        address="127.0.0.1:0",
        double_capture=False,
    )


async def _submit(
    stub: ingest_pb2_grpc.IngestServiceAsyncStub, casilla: str, votes: list[int]
) -> ingest_pb2.ActaOutcome:
    actas = [make_acta(ELECTION, casilla, "PRES", votes)]
    response = await stub.SubmitActas(
        iter([ingest_pb2.SubmitActasRequest(actas=actas)]), metadata=CENTRE
    )
    [outcome] = response.outcomes
    return outcome


async def test_capture_centre_cannot_close_the_night(tmp_path: Path) -> None:
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CloseNight(ingest_pb2.CloseNightRequest(), metadata=CENTRE)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # The night goes on.
            ok = await _submit(stub, CASILLA, [1, 2, 3])
            assert ok.status == ingest_pb2.OUTCOME_STATUS_ACCEPTED
            assert service.engine.night_closed is None
    finally:
        await service.stop()


async def test_nothing_is_logged_after_the_close_and_the_close_survives_a_restart(
    tmp_path: Path,
) -> None:
    service = await _start(tmp_path)
    async with aio_channel(f"127.0.0.1:{service.port}") as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        await _submit(stub, CASILLA, [1, 2, 3])
        closed = await stub.CloseNight(ingest_pb2.CloseNightRequest(), metadata=OPS_1)
        assert closed.closed_at_records == 1
        assert closed.closed_by.endswith("/operator/ops-01")
        late = await _submit(stub, OTHER, [4, 5, 6])
        assert (late.status, late.code) == (REJECTED, "FAILED_PRECONDITION")
        assert "closed at 1 records" in late.message
        fixed = make_acta(ELECTION, CASILLA, "PRES", [1, 2, 4])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CorrectActa(
                ingest_pb2.CorrectActaRequest(acta=fixed, supersedes_revision=1, reason="typo"),
                metadata=OPS_1,
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert service.engine.log_size == 1
    await service.stop()
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            again = await stub.CloseNight(ingest_pb2.CloseNightRequest(), metadata=OPS_2)
            assert again == closed  # the first close, kept
            late = await _submit(stub, OTHER, [4, 5, 6])
            assert late.status == REJECTED
            assert service.engine.log_size == 1
    finally:
        await service.stop()


async def test_close_time_of_the_definition_closes_the_night(tmp_path: Path) -> None:
    pb = small_election().pb
    pb.close_time.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    service = await _start(tmp_path, ElectionIndex.from_pb(pb))
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            late = await _submit(stub, CASILLA, [1, 2, 3])
            assert (late.status, late.code) == (REJECTED, "FAILED_PRECONDITION")
            night = service.engine.night_closed
            assert night is not None
            assert (night.closed_at_records, night.closed_by) == (0, "")
    finally:
        await service.stop()


async def test_follow_stream_tells_where_the_closed_log_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("veritally.ingest.servicer.STREAM_KEEPALIVE_S", 0.1)
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await _submit(stub, CASILLA, [1, 2, 3])
            call = stub.StreamRecords(ingest_pb2.StreamRecordsRequest(follow=True))
            first = await call.read()
            assert isinstance(first, ingest_pb2.StreamRecordsResponse)
            assert not first.HasField("closed_at_records")  # open
            await stub.CloseNight(ingest_pb2.CloseNightRequest(), metadata=OPS_1)

            async def closed_message() -> ingest_pb2.StreamRecordsResponse:
                while True:
                    message = await call.read()
                    assert isinstance(message, ingest_pb2.StreamRecordsResponse)
                    if message.HasField("closed_at_records"):
                        return message

            message = await asyncio.wait_for(closed_message(), timeout=10)
            assert (message.closed_at_records, message.log_size) == (1, 1)
            call.cancel()
    finally:
        await service.stop()


# -- missing actas (PREP's "sin acta") -----------------------------------------------------

NOT_INSTALLED = acta_pb2.NOT_COUNTED_REASON_CASILLA_NOT_INSTALLED


def _missing(
    casilla: str, reason: int = NOT_INSTALLED, contest: str = "PRES"
) -> ingest_pb2.RecordMissingActaRequest:
    return ingest_pb2.RecordMissingActaRequest(
        casilla_id=casilla,
        contest_id=contest,
        reason=reason,  # type: ignore[arg-type]
    )


async def test_missing_acta_is_logged_without_figures_and_a_late_acta_needs_a_correction(
    tmp_path: Path,
) -> None:
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            response = await stub.RecordMissingActa(_missing(CASILLA), metadata=CENTRE)
            outcome = response.outcome
            assert (outcome.status, outcome.counted) == (ingest_pb2.OUTCOME_STATUS_ACCEPTED, False)
            again = await stub.RecordMissingActa(_missing(CASILLA), metadata=CENTRE)
            assert again.outcome.status == ingest_pb2.OUTCOME_STATUS_DUPLICATE
            [leaf] = [p async for p in stub.StreamRecords(ingest_pb2.StreamRecordsRequest())]
            record = acta_pb2.LogLeaf.FromString(leaf.leaves[0]).acta_record
            assert record.not_counted_reason == NOT_INSTALLED
            assert not record.acta.option_votes
            # The acta turns up after all: a capture conflicts; a correction replaces it.
            late = await _submit(stub, CASILLA, [1, 2, 3])
            assert (late.status, late.code) == (REJECTED, "ALREADY_EXISTS")
            assert service.engine.log_size == 1
    finally:
        await service.stop()


async def test_missing_acta_with_a_reason_that_is_not_prep_s_is_refused(tmp_path: Path) -> None:
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            for reason in (
                acta_pb2.NOT_COUNTED_REASON_ALL_BLANK,
                acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
                99,
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.RecordMissingActa(_missing(CASILLA, reason), metadata=CENTRE)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RecordMissingActa(_missing("99-99-9999-B1"), metadata=CENTRE)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert service.engine.log_size == 0
    finally:
        await service.stop()


async def test_operator_cannot_record_a_missing_acta_in_a_centres_place(tmp_path: Path) -> None:
    service = await _start(tmp_path)
    try:
        async with aio_channel(f"127.0.0.1:{service.port}") as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.RecordMissingActa(_missing(CASILLA), metadata=OPS_1)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await service.stop()
