"""Reading the rich error details our services attach to a failed RPC."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no stubs shipped
from grpc_status import rpc_status


def bad_request_field(error: grpc.aio.AioRpcError) -> str:
    """The field the first ``BadRequest`` violation names.

    Raises:
        AssertionError: the error carries no status details or no ``BadRequest``.
    """
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return str(bad.field_violations[0].field)
    raise AssertionError("no BadRequest detail")
