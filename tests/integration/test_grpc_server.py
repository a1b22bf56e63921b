"""The shared service server: malformed request bytes are the caller's fault."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from veritally.rpc import ServiceServer
from veritally_client._gen.veritally.v1 import ingest_pb2, ingest_pb2_grpc

NOT_A_MESSAGE = b"\x00"  # field number 0 is never valid protobuf
SERVICE = "/veritally.v1.IngestService/"


def _raw(data: bytes) -> bytes:
    return data


class Ingest(ingest_pb2_grpc.IngestServiceServicer):
    """Answers well-formed requests; counts how often service code ran."""

    def __init__(self) -> None:
        self.calls = 0

    async def SubmitActa(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.SubmitActaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.SubmitActaResponse:
        self.calls += 1
        return ingest_pb2.SubmitActaResponse()

    async def SubmitActas(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[ingest_pb2.SubmitActasRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.SubmitActasResponse:
        async for _ in request_iterator:
            self.calls += 1
        return ingest_pb2.SubmitActasResponse()

    async def StreamRecords(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.StreamRecordsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[ingest_pb2.StreamRecordsResponse]:
        self.calls += 1
        yield ingest_pb2.StreamRecordsResponse(first_sequence=request.from_sequence)

    async def CorrectActa(  # noqa: N802 - gRPC method name
        self, request: ingest_pb2.CorrectActaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ingest_pb2.CorrectActaResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")

    async def ListCrossChecks(  # noqa: N802 - gRPC method name
        self,
        request: ingest_pb2.ListCrossChecksRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.ListCrossChecksResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")

    async def ResolveCrossCheck(  # noqa: N802 - gRPC method name
        self,
        request: ingest_pb2.ResolveCrossCheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.ResolveCrossCheckResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")

    async def RecordMissingActa(  # noqa: N802 - gRPC method name
        self,
        request: ingest_pb2.RecordMissingActaRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.RecordMissingActaResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")

    async def CloseNight(  # noqa: N802 - gRPC method name
        self,
        request: ingest_pb2.CloseNightRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ingest_pb2.CloseNightResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used here")


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Ingest]]:
    server = ServiceServer(name="veritally.v1.IngestService")
    servicer = Ingest()
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server.grpc)
    port = await server.start("127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, servicer
    await server.stop(grace=1)


async def test_undeserializable_unary_request_gets_invalid_argument(
    served: tuple[grpc.aio.Channel, Ingest],
) -> None:
    channel, servicer = served
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(SERVICE + "SubmitActa", _raw, _raw)(NOT_A_MESSAGE)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.calls == 0


async def test_undeserializable_server_stream_request_gets_invalid_argument(
    served: tuple[grpc.aio.Channel, Ingest],
) -> None:
    channel, servicer = served
    call = channel.unary_stream(SERVICE + "StreamRecords", _raw, _raw)(NOT_A_MESSAGE)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.calls == 0


async def test_undeserializable_message_in_client_stream_gets_invalid_argument(
    served: tuple[grpc.aio.Channel, Ingest],
) -> None:
    channel, servicer = served
    good = ingest_pb2.SubmitActasRequest().SerializeToString()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.stream_unary(SERVICE + "SubmitActas", _raw, _raw)(
            iter([good, NOT_A_MESSAGE, good])
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert servicer.calls == 1  # the message before the bad one was handled, no more


async def test_well_formed_requests_and_health_still_work(
    served: tuple[grpc.aio.Channel, Ingest],
) -> None:
    channel, servicer = served
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    await stub.SubmitActa(ingest_pb2.SubmitActaRequest())
    replies = [
        r async for r in stub.StreamRecords(ingest_pb2.StreamRecordsRequest(from_sequence=7))
    ]
    assert [r.first_sequence for r in replies] == [7]
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert servicer.calls == 2
