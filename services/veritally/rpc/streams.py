"""Bounds on streaming calls in every service: per caller identity, idle and lifetime.

Envoy's circuit breakers count streams per upstream cluster, all callers together, and
its rate limits count a stream once, when it is opened: one outlet opening thousands of
WatchCuts streams within its rate budget, or a capture centre holding SubmitActas
streams open without sending anything, would take slots every other party needs. Envoy
cannot count streams per identity, so each service does, in
:class:`StreamLimitInterceptor` (installed by :class:`veritally.rpc.ServiceServer`):

1. **per identity**: at most :attr:`StreamLimits.max_per_identity` streaming calls of one
   caller at once on this service; the next is refused at once with RESOURCE_EXHAUSTED
   (it then holds no breaker slot at Envoy). The caller is the identity Envoy verified
   and forwarded in ``x-forwarded-client-cert`` (parsed by
   :func:`veritally.rpc.peer.submitter_from_xfcc`); without it (tests on loopback,
   a direct peer) the TLS peer's SPIFFE ID, else the peer address.
2. **idle requests**: a client-streaming call (SubmitActas) that sends no message for
   :attr:`StreamLimits.request_idle_s` is ended with RESOURCE_EXHAUSTED; the messages
   answered before are committed (resubmitting them is safe).
3. **lifetime**: any stream lasts at most :attr:`StreamLimits.max_duration_s`. A server
   stream (WatchCuts, StreamRecords, StreamAggregatedRecords) then ends normally (OK),
   and its client resumes from the last position it processed, as it must after any
   disconnection; a client stream is ended with RESOURCE_EXHAUSTED.

RESOURCE_EXHAUSTED, never UNAVAILABLE or DEADLINE_EXCEEDED: Envoy counts those towards
ejecting the replica (outlier detection), and a refused stream is the caller's doing.
Health methods are exempt (Envoy and the supervisor call them).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import grpc

from veritally.rpc.interceptors import Continuation, MethodHandler
from veritally.rpc.peer import HEALTH_METHODS, forwarded_identity, peer_spiffe_id

__all__ = [
    "DEFAULT_STREAM_LIMITS",
    "STREAM_LIMITS_ENV",
    "StreamLimitInterceptor",
    "StreamLimits",
    "caller_identity",
]

# Environment variable a service process reads its stream limits from, e.g.
# ``max_per_identity=2,request_idle_s=1`` (fields of StreamLimits; unset ones keep their
# defaults). ``veritally.stack.Stack(stream_limits=...)`` sets it for its children, so that
# the three services, launched as separate commands, share one typed setting.
STREAM_LIMITS_ENV = "VERITALLY_STREAM_LIMITS"
# Longest identity quoted back in an error message (characters): SPIFFE IDs of ours are
# well under it; anything longer came from somewhere else and is cut.
_MAX_QUOTED = 120


@dataclass(frozen=True, kw_only=True)
class StreamLimits:
    """The bounds of :class:`StreamLimitInterceptor`.

    Attributes:
        max_per_identity: streaming calls one identity may hold open at once on one
            service. An outlet follows cuts with one WatchCuts stream, a capture centre
            submits over one to a few SubmitActas streams, aggregation and publication
            each follow their upstream with one stream (two while reconnecting); 8
            leaves room for reconnections and keeps one identity's share of Envoy's
            stream breaker small (see docs/mesh.md).
        request_idle_s: longest gap between two messages of a client stream (seconds).
            A centre sends a batch as soon as it has actas; one that has nothing to send
            closes the stream and opens a new one later.
        max_duration_s: longest life of any stream (seconds). Envoy drains every
            downstream connection after 15 min anyway; this bounds a stream that would
            outlive it (a call that did not come through the edge), and clients resume.

    Raises:
        ValueError: a non-positive bound.
    """

    max_per_identity: int = 8
    request_idle_s: float = 30.0
    max_duration_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_per_identity <= 0 or self.request_idle_s <= 0 or self.max_duration_s <= 0:
            raise ValueError("stream limits must be positive")

    def to_env(self) -> str:
        """The value of :data:`STREAM_LIMITS_ENV` that :meth:`from_env` reads back."""
        return ",".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StreamLimits:
        """The limits named in :data:`STREAM_LIMITS_ENV` (defaults when unset).

        Raises:
            ValueError: an unknown field or a malformed value.
        """
        text = environ.get(STREAM_LIMITS_ENV, "").strip()
        if not text:
            return DEFAULT_STREAM_LIMITS
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in text.split(","):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"{STREAM_LIMITS_ENV}: expected NAME=VALUE of {sorted(known)}")
            values[name] = int(value) if name == "max_per_identity" else float(value)
        return cls(**values)


DEFAULT_STREAM_LIMITS = StreamLimits()


def caller_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """Who is calling: the identity Envoy forwarded, else the TLS peer, else the address."""
    return forwarded_identity(context) or peer_spiffe_id(context) or str(context.peer())


def _quoted(identity: str) -> str:
    return repr(identity[:_MAX_QUOTED] + ("..." if len(identity) > _MAX_QUOTED else ""))


async def _responses(result: Any) -> AsyncIterator[Any]:
    # aio streaming handlers are async generators, or coroutines writing with
    # context.write() and returning None.
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


class StreamLimitInterceptor(grpc.aio.ServerInterceptor):
    """Applies :class:`StreamLimits` to every streaming method of a grpc.aio server.

    One instance per server: the counts are per service process (all on its event
    loop, so no lock).
    """

    def __init__(
        self,
        limits: StreamLimits = DEFAULT_STREAM_LIMITS,
        *,
        exempt: Iterable[str] = HEALTH_METHODS,
    ) -> None:
        """Args:
        limits: the bounds.
        exempt: full method paths left unbounded (health, by default).
        """
        self.limits = limits
        self.exempt = frozenset(exempt)
        self.open: Counter[str] = Counter()

    # -- the three bounds -----------------------------------------------------------------

    async def _enter(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        who = caller_identity(context)
        held = self.open[who]
        if held >= self.limits.max_per_identity:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{_quoted(who)} already holds {held} streams on this service, at most "
                f"{self.limits.max_per_identity}: close one before opening another",
            )
        self.open[who] += 1
        return who

    def _leave(self, who: str) -> None:
        self.open[who] -= 1
        if self.open[who] <= 0:
            del self.open[who]

    async def _idle_bounded(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        idle = self.limits.request_idle_s
        iterator = aiter(requests)
        while True:
            try:
                async with asyncio.timeout(idle):
                    request = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"no message for {idle:g} s: a stream may not be held open idle "
                    "(the messages answered before are committed; open a new stream when "
                    "there is something to send)",
                )
            yield request

    async def _until(self, responses: AsyncIterator[Any], deadline: float) -> AsyncIterator[Any]:
        """``responses`` until the loop time ``deadline``; then the stream ends (OK)."""
        loop = asyncio.get_running_loop()
        iterator = aiter(responses)
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    item = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                return  # its lifetime is over: the client resumes from where it was
            yield item
            if loop.time() >= deadline:
                return

    # -- wiring -----------------------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        """Wrap streaming handlers with the bounds; unary ones pass unchanged."""
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or handler.unary_unary is not None
            or handler_call_details.method in self.exempt
        ):
            return handler
        limits = self.limits
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                who = await self._enter(context)
                try:
                    deadline = asyncio.get_running_loop().time() + limits.max_duration_s
                    async for item in self._until(_responses(inner_us(request, context)), deadline):
                        yield item
                finally:
                    self._leave(who)

            return grpc.unary_stream_rpc_method_handler(unary_stream, deserialize, serialize)
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                who = await self._enter(context)
                try:
                    try:
                        # grpc's stubs type request streams as sync iterators; aio's are
                        # async ones.
                        bounded: Any = self._idle_bounded(requests, context)
                        async with asyncio.timeout(limits.max_duration_s):
                            return await inner_su(bounded, context)
                    except TimeoutError:
                        await context.abort(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"stream open for {limits.max_duration_s:g} s, the longest a "
                            "stream may last; open a new one",
                        )
                finally:
                    self._leave(who)

            return grpc.stream_unary_rpc_method_handler(stream_unary, deserialize, serialize)
        inner_ss = handler.stream_stream
        if inner_ss is None:  # a handler of no known kind: leave it to gRPC
            return handler

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            who = await self._enter(context)
            try:
                deadline = asyncio.get_running_loop().time() + limits.max_duration_s
                bounded: Any = self._idle_bounded(requests, context)
                async for item in self._until(_responses(inner_ss(bounded, context)), deadline):
                    yield item
            finally:
                self._leave(who)

        return grpc.stream_stream_rpc_method_handler(stream_stream, deserialize, serialize)
