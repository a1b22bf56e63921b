"""Request parsing that every veritally server shares: bytes that do not deserialize are
the caller's fault, answered INVALID_ARGUMENT before any service code runs."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

__all__ = ["Continuation", "MalformedRequestInterceptor", "MethodHandler", "stream_of"]

#: The handler of a method as grpc.aio gives it to a server interceptor (None: no such
#: method), and the continuation that looks it up; every interceptor here has this shape.
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any] | None"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]]"


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


async def stream_of(result: Any) -> AsyncIterator[Any]:
    """The responses of a streaming handler's result: aio handlers are async
    generators, or coroutines writing with context.write()."""
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
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
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
                async for item in stream_of(inner_us(request, context)):
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
            async for item in stream_of(inner_ss(checked, context)):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)
