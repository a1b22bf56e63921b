"""Errors of the publication service that stop it from starting or cutting."""

from __future__ import annotations

__all__ = [
    "KeyFileError",
    "PublicationError",
    "StoreIntegrityError",
    "TrustRootFileError",
    "UpstreamDataError",
]


class PublicationError(Exception):
    """Root of the publication service's own errors."""


class KeyFileError(PublicationError):
    """A signing key file is missing, unreadable by policy, corrupt or undecryptable."""


class TrustRootFileError(PublicationError):
    """The trust root files are missing, do not verify, or do not list our keys."""


class StoreIntegrityError(PublicationError):
    """The store does not match what was signed (or cannot take the requested append)."""


class UpstreamDataError(PublicationError):
    """Aggregation sent records or positions that cannot extend the log as they are."""
