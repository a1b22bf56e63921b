"""One log line per request: the caller's identity as authenticated, the method, the
final gRPC status and the time it took (``veritally.logs`` writes it as JSON fields).

The identity is Envoy's forwarded client certificate (``x-forwarded-client-cert``, which
only Envoy can set: the services admit no other peer), else the caller's own verified
certificate, else ``""``; never a field of the request. Calls that change something
(captures, corrections, missing actas, closing the night) are logged at INFO; reads, at
thousands per second on election night, at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import grpc

from veritally.logs import event
from veritally.rpc.interceptors import Continuation, MethodHandler, stream_of
from veritally.rpc.peer import forwarded_identity, peer_spiffe_id

__all__ = ["RequestLogInterceptor"]

log = logging.getLogger("veritally.requests")

# Method names (the last part of the path) of calls that change state.
WRITES: Final = frozenset(
    {"SubmitActas", "SubmitActa", "CorrectActa", "RecordMissingActa", "CloseNight"}
)


def _identity(context: Any) -> str:
    try:
        return forwarded_identity(context) or peer_spiffe_id(context) or ""
    except Exception:
        return ""


def _code(context: Any, failed: BaseException | None) -> str:
    code = None
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed is not None else "OK"


class RequestLogInterceptor(grpc.aio.ServerInterceptor):
    """Log each finished call (see the module docstring)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        """Wrap the method's handler so that its end is logged."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = str(handler_call_details.method)
        level = logging.INFO if method.rsplit("/", 1)[-1] in WRITES else logging.DEBUG
        if not log.isEnabledFor(level):
            return handler

        @contextlib.contextmanager
        def logged(context: Any) -> Iterator[None]:
            """Log the call made inside, however it ends."""
            started = time.perf_counter()
            failed: BaseException | None = None
            try:
                yield
            except BaseException as e:
                failed = e
                raise
            finally:
                code = _code(context, failed)
                ms = round((time.perf_counter() - started) * 1000, 3)
                identity = _identity(context)
                log.log(
                    level,
                    "%s %s %s %.1f ms",
                    method,
                    identity or "-",
                    code,
                    ms,
                    extra=event(identity=identity, method=method, code=code, ms=ms),
                )

        return _wrapped(handler, logged)


def _wrapped(
    handler: grpc.RpcMethodHandler[Any, Any],
    around: Callable[[Any], contextlib.AbstractContextManager[None]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with each call run inside ``around(context)``."""
    parse, serialize = handler.request_deserializer, handler.response_serializer
    unary = handler.unary_unary or handler.stream_unary
    if unary is not None:

        async def call(request: Any, context: Any) -> Any:
            with around(context):
                return await unary(request, context)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(call, parse, serialize)
        return grpc.stream_unary_rpc_method_handler(call, parse, serialize)
    streaming = handler.unary_stream or handler.stream_stream
    if streaming is None:
        return handler

    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        with around(context):
            async for item in stream_of(streaming(request, context)):
                yield item

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, parse, serialize)
    return grpc.stream_stream_rpc_method_handler(stream, parse, serialize)
