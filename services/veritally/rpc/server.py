"""What every veritally service process shares: a grpc.aio server with health checking,
reflection, optional mTLS, bounds on streams and request parsing, and a graceful drain.

Each service (ingest, aggregation, publication) is its own process with its own port.
In a deployment they accept only mutual TLS from the Envoy mesh; in tests they may listen
in plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from veritally.rpc.channel import MAX_MESSAGE_BYTES
from veritally.rpc.interceptors import MalformedRequestInterceptor
from veritally.rpc.requestlog import RequestLogInterceptor
from veritally.rpc.streams import StreamLimitInterceptor, StreamLimits
from veritally.rpc.tls import TlsFiles

__all__ = ["SMALL_REQUEST_BYTES", "ServiceServer", "run_until_signalled"]

log = logging.getLogger(__name__)

# Largest request message a service accepts unless it says otherwise, in bytes: reads
# carry a few integers and ids (Envoy's limit for them is the same). gRPC applies it to
# every message of a stream and to the size *after* decompression: it stops inflating a
# compressed message at the limit (RESOURCE_EXHAUSTED), so a small gzip bomb costs the
# service at most this much memory.
SMALL_REQUEST_BYTES = 64 * 1024


class ServiceServer:
    """A grpc.aio server with health, reflection and a drain on shutdown.

    Usage::

        server = ServiceServer(name="veritally.v1.IngestService")
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server.grpc)
        port = await server.start("127.0.0.1:0")
        ...
        await server.stop(grace=5)
    """

    def __init__(
        self,
        *,
        name: str,
        descriptor_full_names: Sequence[str] = (),
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_receive_bytes: int = SMALL_REQUEST_BYTES,
        max_send_bytes: int = MAX_MESSAGE_BYTES,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        """Create the server.

        Args:
            name: full name of the main gRPC service, reported by health checks.
            descriptor_full_names: further service names to expose through reflection.
            interceptors: server interceptors, e.g. the mesh's peer identity check that
                admits only Envoy's certificate.
            max_receive_bytes: largest request message, decompressed (bytes); each
                message of a stream is bounded alone.
            max_send_bytes: largest response message (bytes).
            stream_limits: bounds on streaming calls per caller (veritally.rpc.streams);
                None: the ones in the environment, else the defaults.
        """
        self.name = name
        self.streams = StreamLimitInterceptor(stream_limits or StreamLimits.from_env())
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_receive_bytes),
                ("grpc.max_send_message_length", max_send_bytes),
            ],
            # Identity checks first, then stream bounds, then request parsing: a
            # stranger learns nothing, and a refused stream costs no parsing; the request
            # log around them all, so that refused calls are logged too.
            interceptors=[
                RequestLogInterceptor(),
                *interceptors,
                self.streams,
                MalformedRequestInterceptor(),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            [name, *descriptor_full_names, health.SERVICE_NAME, reflection.SERVICE_NAME],
            self.grpc,
        )

    async def start(self, address: str, *, tls: TlsFiles | None = None) -> int:
        """Bind ``address`` (``host:port``, port 0 for an ephemeral one), start serving and
        report SERVING. Returns the bound port."""
        if tls is None:
            port = self.grpc.add_insecure_port(address)
        else:
            port = self.grpc.add_secure_port(address, tls.server_credentials())
        if port == 0:
            raise OSError(f"could not bind {address}")
        await self.grpc.start()
        await self.set_serving(True)
        return port

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the service and the server as a whole."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set(self.name, status)
        await self.health.set("", status)

    async def stop(self, *, drain_seconds: float = 0.0, grace: float = 5.0) -> None:
        """Drain then stop: report NOT_SERVING, wait ``drain_seconds`` so that health
        checkers stop routing here, then let in-flight calls finish within ``grace``."""
        await self.set_serving(False)
        if drain_seconds > 0:
            await asyncio.sleep(drain_seconds)
        await self.grpc.stop(grace)


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    *,
    ended: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Run a service process: call ``start``, wait for SIGINT or SIGTERM (or for
    ``ended`` to return: the service ending by itself), call ``stop``.

    A signal that arrives while ``start`` is still running (a standby publisher waiting
    for its lease) cancels it: the process stops without having served.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    signalled = asyncio.ensure_future(stopping.wait())
    starting = asyncio.ensure_future(start())
    await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        log.info("signal received while starting: stopping")
        await stop()
        return
    if starting.exception() is not None:
        signalled.cancel()
    starting.result()  # a failed start raises here
    waits: set[asyncio.Future[Any]] = {signalled}
    if ended is not None:
        waits.add(asyncio.ensure_future(ended()))
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    log.info("signal received: draining" if stopping.is_set() else "service ended: stopping")
    await stop()
