"""veritally-client: verify signed cuts of preliminary election results.

The public API is what ``__all__`` lists; every other module is private.
"""

from veritally_client._errors import (
    BadProofError,
    BadSignatureError,
    DigestMismatchError,
    ForkError,
    MalformedDataError,
    RecountMismatchError,
    RollbackError,
    StaleCheckpointError,
    TransportError,
    TrustRootError,
    UnknownKeyError,
    VerificationError,
    VeritallyError,
)

__all__ = [
    "BadProofError",
    "BadSignatureError",
    "DigestMismatchError",
    "ForkError",
    "MalformedDataError",
    "RecountMismatchError",
    "RollbackError",
    "StaleCheckpointError",
    "TransportError",
    "TrustRootError",
    "UnknownKeyError",
    "VerificationError",
    "VeritallyError",
]

__version__ = "0.1.0"
