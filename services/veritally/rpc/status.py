"""Error statuses of every veritally service: a domain refusal's gRPC code, and the
``google.rpc.BadRequest`` status naming the field at fault."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import (  # type: ignore[import-untyped]  # googleapis-common-protos ships no stubs
    error_details_pb2,
    status_pb2,
)
from grpc_status import rpc_status

from veritally.reject import RejectCode

__all__ = ["bad_request", "grpc_code"]


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
