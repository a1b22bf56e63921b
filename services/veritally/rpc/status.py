"""Error statuses of every veritally service: a domain refusal's gRPC code, and the
``google.rpc.BadRequest`` status naming the field at fault; and, for a client, the
refusal read back from such a status."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import (  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from veritally.reject import RejectCode

__all__ = ["ServiceRefusal", "bad_request", "grpc_code", "service_refusal"]

# The trailing metadata key of a status's google.rpc.Status (grpc_status's own name).
_DETAILS_KEY = "grpc-status-details-bin"


def grpc_code(code: RejectCode) -> grpc.StatusCode:
    """The gRPC status code of a domain refusal (the same name and number)."""
    return grpc.StatusCode[code.name]


def bad_request(
    code: grpc.StatusCode, message: str, *, field: str = "", description: str = ""
) -> grpc.Status:
    """An error status ``code`` with ``message`` and, when ``field`` is given, a
    ``google.rpc.BadRequest`` detail naming it with ``description``.

    Nothing here clips: callers pass messages that quote no unbounded input.
    """
    details = []
    if field:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=field, description=description
                    )
                ]
            )
        )
        details.append(detail)
    status: grpc.Status = rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=details)
    )
    return status


@dataclass(frozen=True)
class ServiceRefusal:
    """A refusal a veritally service answered (a status made by :func:`bad_request`).

    Attributes:
        code: the status code.
        message: the status message.
        field: the field the BadRequest detail names, or "" when it names none.
    """

    code: grpc.StatusCode
    message: str
    field: str


def service_refusal(error: grpc.aio.AioRpcError) -> ServiceRefusal | None:
    """The refusal ``error`` carries when a service answered it, or None.

    Every refusal a service decides (:func:`bad_request`, through ``abort_with_status``)
    carries a ``google.rpc.Status`` in its trailing metadata; statuses that no service
    decided do not: Envoy's own replies (RBAC, rate limit, no upstream), transport
    failures, deadlines, a plain ``context.abort``.
    """
    for key, value in error.trailing_metadata() or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return None
        field = ""
        for detail in status.details:
            violations = error_details_pb2.BadRequest()
            if detail.Unpack(violations) and violations.field_violations:
                field = violations.field_violations[0].field
                break
        return ServiceRefusal(code=error.code(), message=status.message, field=field)
    return None
