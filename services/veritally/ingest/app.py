"""The ingest service process: its store and engine, the gRPC servicer over them, and
the server they run in (``veritally.rpc.ServiceServer``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from veritally import bounds
from veritally.bounds import MAX_ACTAS_PER_MESSAGE
from veritally.ingest.engine import IngestEngine
from veritally.ingest.servicer import IngestServicer
from veritally.metrics.families import IngestMetrics
from veritally.rpc import ServiceServer, TlsFiles
from veritally.storage import DbLocation
from veritally_client.protocol import ElectionIndex
from veritally_client.protocol.pb import ingest_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "veritally.v1.IngestService"
# Bytes of protobuf framing per acta in a SubmitActasRequest: a tag and a length varint
# (three bytes up to 2 MiB).
_ACTA_FRAMING_BYTES = 4
# Largest request message ingest accepts, decompressed, in bytes (each message of a
# SubmitActas stream alone): MAX_ACTAS_PER_MESSAGE actas of the largest size, ~16 MiB. A
# unary call carries one acta (and a reason), far less. gRPC refuses anything larger with
# RESOURCE_EXHAUSTED before it is parsed, and stops inflating a compressed one there.
MAX_RECEIVE_BYTES = MAX_ACTAS_PER_MESSAGE * (bounds.MAX_ACTA_BYTES + _ACTA_FRAMING_BYTES)


@dataclass
class IngestService:
    """A running ingest: its server, engine and bound port."""

    server: ServiceServer
    engine: IngestEngine
    port: int
    metrics: IngestMetrics

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """End follow streams, drain and stop the server, then close the store."""
        await self.engine.end_streams()
        await self.server.stop(drain_seconds=drain_seconds, grace=grace)
        await self.engine.close()


async def start_ingest(
    *,
    election: ElectionIndex,
    db_path: DbLocation,
    address: str,
    tls: TlsFiles | None = None,
    double_capture: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> IngestService:
    """Open the store and start serving on ``address`` (port 0 for an ephemeral one).

    Raises:
        OSError: if the address cannot be bound.
        sqlite3.Error: if the store cannot be opened.
    """
    engine = IngestEngine(election=election, db_path=db_path, double_capture=double_capture)
    server = ServiceServer(
        name=SERVICE_NAME, interceptors=interceptors, max_receive_bytes=MAX_RECEIVE_BYTES
    )
    metrics = IngestMetrics()
    metrics.watch(engine)
    metrics.watch_streams(server.streams)
    engine.observe_commit = metrics.commit_seconds.observe
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(
        IngestServicer(engine, metrics), server.grpc
    )
    port = await server.start(address, tls=tls)
    log.info(
        "ingest serving on port %d (%s capture, %d records)",
        port,
        "double" if double_capture else "single",
        engine.log_size,
    )
    return IngestService(server=server, engine=engine, port=port, metrics=metrics)
