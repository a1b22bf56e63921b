"""The AggregationService servicer: gRPC requests in, the engine's tally read, statuses out.

This room owns the wire side of aggregation's answers: checking each request's fields
(INVALID_ARGUMENT naming the field), an unknown unit as NOT_FOUND, and building the
answers from the engine. It may import gRPC, the generated aggregation modules and the
engine; it decides nothing about counting.

Every answer reads the tally synchronously on the event loop, so the position and the
results it returns are always taken together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from veritally.aggregation.engine import AggregationEngine
from veritally.bounds import clip
from veritally_client.protocol.pb import aggregation_pb2, aggregation_pb2_grpc, results_pb2

__all__ = ["SERVICE_NAME", "AggregationServicer"]

SERVICE_NAME = "veritally.v1.AggregationService"


class AggregationServicer(aggregation_pb2_grpc.AggregationServiceServicer):
    """Answers AggregationService calls from an ``AggregationEngine``."""

    def __init__(self, engine: AggregationEngine) -> None:
        """Serve ``engine``."""
        self.engine = engine

    async def GetResults(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsResponse:
        """Totals of one unit at the current position."""
        if request.level == results_pb2.LEVEL_UNSPECIFIED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "level: not set")
        if request.level == results_pb2.LEVEL_NATIONAL and request.unit_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "unit_id: must be empty for the nation"
            )
        tally = self.engine.tally
        try:
            unit = tally.unit_results(request.level, request.unit_id)
        except LookupError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unit_id: unknown unit {clip(request.unit_id)} at level {request.level}",
            )
        return aggregation_pb2.GetResultsResponse(acta_records=tally.acta_records, results=unit)

    async def GetResultsBlob(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetResultsBlobRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetResultsBlobResponse:
        """The results blob and its position, taken together (no await in between)."""
        engine = self.engine
        tally = engine.tally
        final = request.final or engine.final
        return aggregation_pb2.GetResultsBlobResponse(
            acta_records=tally.acta_records,
            results=tally.results_bytes(final=final),
            ingest_records=engine.ingest_records,
            final=final,
        )

    async def GetDefinition(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.GetDefinitionRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> aggregation_pb2.GetDefinitionResponse:
        """The exact definition bytes the totals are computed with."""
        return aggregation_pb2.GetDefinitionResponse(
            definition=self.engine.election.definition_bytes
        )

    async def StreamAggregatedRecords(  # noqa: N802 - gRPC method names are fixed by the proto
        self,
        request: aggregation_pb2.StreamAggregatedRecordsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[aggregation_pb2.StreamAggregatedRecordsResponse]:
        """The counted records from ``from_sequence``; with ``follow``, keep streaming."""
        async for first, leaves in self.engine.aggregated(
            request.from_sequence, follow=request.follow
        ):
            yield aggregation_pb2.StreamAggregatedRecordsResponse(
                first_sequence=first, leaves=leaves
            )
