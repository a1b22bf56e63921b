"""Why a service refuses a request, in domain terms: no gRPC here.

The domain code (ingest's rules, engine and operator checks) decides *that* and *why* a
request is refused; the servicer turns the decision into a status
(:func:`veritally.rpc.status.grpc_code`). Each code carries the number ``google.rpc.Code``
gives it and the same name, so an ``ActaOutcome`` carries ``code.name`` on the wire as it
is.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["RejectCode", "Rejection"]


class RejectCode(enum.IntEnum):
    """The refusals the services make, numbered as in ``google.rpc.Code``."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an acta is refused; nothing of it is logged.

    Attributes:
        code: the status a unary call answers with.
        field: path of the field at fault in the Acta message.
        message: what was expected and what was found.
    """

    code: RejectCode
    field: str
    message: str
