"""Errors of the publication service that stop it from starting or cutting."""

from __future__ import annotations

from veritally.errors import ServiceError

__all__ = [
    "ForkRefusedError",
    "KeyFileError",
    "LeaseLostError",
    "PublicationError",
    "StoreIntegrityError",
    "TamperedDataError",
    "TrustRootFileError",
    "UnsafeBundlePathError",
    "UpstreamDataError",
    "ViewError",
    "ViewUnavailableError",
]


class PublicationError(ServiceError):
    """Root of the publication service's own errors."""


class KeyFileError(PublicationError):
    """A signing key file is missing, unreadable by policy, corrupt or undecryptable."""


class TrustRootFileError(PublicationError):
    """The trust root files are missing, do not verify, or do not list our keys."""


class StoreIntegrityError(PublicationError):
    """The store does not match what was signed (or cannot take the requested append)."""


class LeaseLostError(StoreIntegrityError):
    """This publisher no longer holds the publication lease (it expired, or another
    publisher took it): nothing was stored or signed, and this process must stop
    cutting (docs/adr/0094-publication-lease.md)."""


class UpstreamDataError(PublicationError):
    """Aggregation sent records or positions that cannot extend the log as they are."""


class ForkRefusedError(StoreIntegrityError):
    """Signing now would fork the log: the store is behind, or diverges from, a
    checkpoint already published (the bundle's, later the witnesses'); docs/adr/0026."""


class TamperedDataError(StoreIntegrityError):
    """A stored leaf does not hash to its stored Merkle node, or a results blob to the
    digest its cut record signs: the store was changed outside the service."""


class UnsafeBundlePathError(PublicationError, OSError):
    """A name in the bundle directory is not what the writer made (a symlink where a
    directory belongs, a directory where a file belongs). An OSError too: like a full
    disk, it stops the bundle, not the cuts, once the service runs."""


class ViewError(StoreIntegrityError):
    """A cut's results cannot be decoded and named with the stored election definition:
    the blob does not parse, carries another definition's digest, or names a unit or a
    candidate the definition lacks. The store no longer agrees with itself."""


class ViewUnavailableError(PublicationError):
    """No cut can be viewed with names yet: the election definition has not been fetched
    from aggregation."""
