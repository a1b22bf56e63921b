"""Services accept calls from the mesh only: a server interceptor that checks the
caller's SPIFFE ID (from its verified client certificate) against an allow-list.

mTLS with ``require_client_auth`` already makes a service refuse anyone without a
certificate from our CA; gRPC's TLS cannot further restrict *which* certificate, so
this interceptor does: in a deployment the only caller allowed is Envoy
(``spiffe://<td>/service/envoy``), so a capture centre or outlet that reached a
service's port directly, bypassing RBAC and rate limits, gets PERMISSION_DENIED.

    server = grpc.aio.server(interceptors=[PeerIdentityInterceptor({envoy_id})])
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc

__all__ = [
    "HEALTH_METHODS",
    "XFCC_HEADER",
    "PeerIdentityInterceptor",
    "forwarded_identity",
    "peer_spiffe_id",
    "submitter_from_xfcc",
]

from veritally.rpc.interceptors import Continuation, MethodHandler

# Health answers reveal nothing and are asked by Envoy and by the local supervisor (which
# may present another identity of our CA): exempt by default. mTLS still applies.
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})

# gRPC core's auth-context property holding the URI SAN of a verified peer certificate
# whose only URI SAN is a spiffe:// URI.
_SPIFFE_PROPERTY = "peer_spiffe_id"


# The header in which Envoy forwards the verified client certificate (SANITIZE_SET).
XFCC_HEADER = "x-forwarded-client-cert"


def submitter_from_xfcc(header: str | None) -> str:
    """The client identity Envoy vouches for in ``x-forwarded-client-cert``.

    Envoy sets the header with SANITIZE_SET, so behind the mesh it names the certificate
    of the caller (its URI SAN); ingest's peer check admits only Envoy, so no one else
    can set it. Envoy's RBAC authorizes the role; ingest derives the operator and the
    capture centre from it (``operators``). Returns ``""`` when there is no header or
    no URI in it.
    """
    if not header:
        return ""
    # Elements are comma-separated (one per proxy hop); the last is the nearest client.
    last = header.split(",")[-1]
    for part in last.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "uri":
            return value.strip().strip('"')
    return ""


def forwarded_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's identity as Envoy forwarded it in :data:`XFCC_HEADER`
    (:func:`submitter_from_xfcc`); ``""`` when the call carries none."""
    for key, value in context.invocation_metadata() or ():
        if key == XFCC_HEADER:
            text = value if isinstance(value, str) else value.decode(errors="replace")
            return submitter_from_xfcc(text)
    return ""


def peer_spiffe_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's SPIFFE ID, or None without a verified certificate carrying one."""
    values = list(context.auth_context().get(_SPIFFE_PROPERTY) or ())
    return values[0].decode() if len(values) == 1 else None


async def _responses(result: Any) -> AsyncIterator[Any]:
    """A streaming handler's responses: it is either an async generator, or a coroutine
    that writes them itself with ``context.write`` and returns None."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await result


class PeerIdentityInterceptor(grpc.aio.ServerInterceptor):
    """Let through only callers whose SPIFFE ID is in ``allowed``; answer every other
    call (plaintext ones included) with PERMISSION_DENIED before the handler runs.
    Methods in ``exempt`` (health, by default) are open to any mTLS peer."""

    def __init__(self, allowed: Iterable[str], *, exempt: Iterable[str] = HEALTH_METHODS) -> None:
        """Args:
        allowed: SPIFFE IDs that may call (normally just Envoy's).
        exempt: full method paths any peer may call.

        Raises:
            ValueError: an empty allow-list (it would refuse everything).
        """
        self.allowed = frozenset(allowed)
        self.exempt = frozenset(exempt)
        if not self.allowed:
            raise ValueError("allowed must name at least one SPIFFE ID")

    async def _check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        peer = peer_spiffe_id(context)
        if peer not in self.allowed:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"calls must come through the mesh; caller is {peer or 'unidentified'}",
            )

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        """Wrap the method's handler so that it checks the caller first."""
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in self.exempt:
            return handler
        check = self._check
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                await check(context)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await check(context)
                async for item in _responses(inner_us(request, context)):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: Any, context: Any) -> Any:
                await check(context)
                return await inner_su(requests, context)

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, handler.request_deserializer, handler.response_serializer
            )
        inner_ss = handler.stream_stream
        if inner_ss is None:  # a handler of no known kind: leave it to gRPC
            return handler

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            await check(context)
            async for item in _responses(inner_ss(requests, context)):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )
