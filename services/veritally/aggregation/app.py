"""Aggregation's app: the wiring of engine, servicer and follower, and the server.

This room owns starting and stopping the service: opening the engine (which rebuilds the
tally), serving it, starting the follower of ingest with its health report, and
reporting NOT_SERVING when the follower fails for good. It may import every aggregation
module and the shared server plumbing (:mod:`veritally.rpc`); nothing imports it but
the commands, the stack and tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2

from veritally.aggregation.engine import AggregationEngine
from veritally.aggregation.follower import FOLLOWER_HEALTH_NAME, IngestFollower
from veritally.aggregation.servicer import SERVICE_NAME, AggregationServicer
from veritally.metrics.families import AggregationMetrics
from veritally.rpc import ServiceServer, TlsFiles
from veritally.storage import DbLocation
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import aggregation_pb2_grpc

log = logging.getLogger(__name__)

__all__ = ["AggregationService", "start_aggregation"]


@dataclass
class AggregationService:
    """A running aggregation: server, engine, follower task and bound port."""

    server: ServiceServer
    engine: AggregationEngine
    follower: asyncio.Task[None]
    port: int
    metrics: AggregationMetrics

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Stop following, end streams, drain and stop the server, close the store."""
        await self.engine.end_streams()
        self.follower.cancel()
        # A follower that already failed was reported when it failed (log, health).
        await asyncio.gather(self.follower, return_exceptions=True)
        await self.server.stop(drain_seconds=drain_seconds, grace=grace)
        self.engine.close()


async def start_aggregation(
    *,
    election: ElectionIndex,
    db_path: DbLocation,
    address: str,
    ingest_target: str,
    tls: TlsFiles | None = None,
    ingest_tls: TlsFiles | None = None,
    ingest_server_name: str | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AggregationService:
    """Rebuild from the store, start serving on ``address`` and follow ``ingest_target``.

    Raises:
        OSError: if the address cannot be bound.
        veritally_client.MalformedDataError: if the store holds an invalid record.
    """
    engine = AggregationEngine(election=election, db_path=db_path)
    server = ServiceServer(name=SERVICE_NAME, interceptors=interceptors)
    aggregation_pb2_grpc.add_AggregationServiceServicer_to_server(
        AggregationServicer(engine), server.grpc
    )
    metrics = AggregationMetrics()
    metrics.watch(engine)
    engine.observe_commit = metrics.commit_seconds.observe
    metrics.watch_streams(server.streams)
    port = await server.start(address, tls=tls)

    async def follower_health(ok: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ok
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await server.health.set(FOLLOWER_HEALTH_NAME, status)

    await follower_health(True)
    follower = asyncio.create_task(
        IngestFollower(
            engine=engine,
            target=ingest_target,
            tls=ingest_tls,
            server_name=ingest_server_name,
            health=follower_health,
        ).run(),
        name="follow-ingest",
    )
    background: set[asyncio.Task[None]] = set()

    def follower_done(task: asyncio.Task[None]) -> None:
        # The follower only ends on its own for a record the tally refuses: stop
        # advertising totals that can no longer follow the log.
        if not task.cancelled() and task.exception() is not None:
            report = asyncio.create_task(server.set_serving(False))
            background.add(report)
            report.add_done_callback(background.discard)

    follower.add_done_callback(follower_done)
    log.info(
        "aggregation serving on port %d at position %d, following %s",
        port,
        engine.position,
        ingest_target,
    )
    return AggregationService(
        server=server, engine=engine, follower=follower, port=port, metrics=metrics
    )
