"""What every veritally service process shares: a grpc.aio server with health checking,
reflection, optional mTLS, and a graceful drain; and client channels to other services.

Each service (ingest, aggregation, publication) is its own process with its own port.
In a deployment they accept only mutual TLS from the Envoy mesh; in tests they may listen
in plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from veritally.streams import StreamLimitInterceptor, StreamLimits

log = logging.getLogger(__name__)

# Largest message a service sends, and a client channel accepts, in bytes. Results blobs
# of a national election are a few hundred KiB and leaf pages are capped well below this.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Largest request message a service accepts unless it says otherwise, in bytes: reads
# carry a few integers and ids (Envoy's limit for them is the same). gRPC applies it to
# every message of a stream and to the size *after* decompression: it stops inflating a
# compressed message at the limit (RESOURCE_EXHAUSTED), so a small gzip bomb costs the
# service at most this much memory.
SMALL_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """PEM files for mutual TLS.

    Attributes:
        cert: this party's certificate chain.
        key: its private key.
        ca: the CA that peers' certificates must chain to.
    """

    cert: Path
    key: Path
    ca: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that require a client certificate from ``ca``."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials presenting ``cert`` and trusting ``ca``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


_CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def aio_channel(
    target: str, *, tls: TlsFiles | None = None, server_name: str | None = None
) -> grpc.aio.Channel:
    """Open a grpc.aio channel to another service (through the mesh in a deployment).

    Args:
        target: ``host:port``.
        tls: client certificate and CA; plaintext when None (tests on loopback only).
        server_name: TLS name to check the server certificate against, when it differs
            from the host in ``target``.
    """
    options = list(_CHANNEL_OPTIONS)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))  # type: ignore[arg-type]
    return grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)


class _Malformed:
    """Stands for request bytes that did not deserialize."""


_MALFORMED = _Malformed()
_MALFORMED_DETAIL = "request: the bytes received are not a valid message of the method's type"


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # protobuf raises DecodeError and others on bad bytes
            return _MALFORMED

    return parse


async def _reject(context: Any) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _MALFORMED_DETAIL)


async def _checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async for request in requests:
        if request is _MALFORMED:
            await _reject(context)
        yield request


async def _stream(result: Any) -> AsyncIterator[Any]:
    # aio handlers are async generators, or coroutines writing with context.write().
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    else:
        await result


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Answer request bytes that do not deserialize with INVALID_ARGUMENT.

    grpc.aio's generated handlers answer UNKNOWN (and log a traceback per call) when a
    request does not parse. Malformed input is the caller's fault and must say so, and an
    attacker must not be able to fill the logs. The deserializer is made tolerant and the
    handler rejects the call before any service code runs.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler with a tolerant deserializer and a check."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        parse = _tolerant(handler.request_deserializer)
        serialize = handler.response_serializer
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                if request is _MALFORMED:
                    await _reject(context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if request is _MALFORMED:
                    await _reject(context)
                async for item in _stream(inner_us(request, context)):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                # aio request streams are async iterators; grpc's stubs only know sync ones.
                checked: Any = _checked(requests, context)
                return await inner_su(checked, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)
        inner_ss = handler.stream_stream
        if inner_ss is None:
            return handler

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            checked: Any = _checked(requests, context)
            async for item in _stream(inner_ss(checked, context)):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)


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
            stream_limits: bounds on streaming calls per caller (veritally.streams);
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
            # stranger learns nothing, and a refused stream costs no parsing.
            interceptors=[*interceptors, self.streams, MalformedRequestInterceptor()],
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
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Run a service process: call ``start``, wait for SIGINT or SIGTERM, call ``stop``."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await start()
    await stopping.wait()
    log.info("signal received: draining")
    await stop()
