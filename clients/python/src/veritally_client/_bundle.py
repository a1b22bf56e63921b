"""Offline verification of a static bundle directory (see docs/bundle-format.md)."""

from __future__ import annotations

from pathlib import Path

from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import VerifiedCut

__all__ = ["verify_bundle"]


def verify_bundle(path: Path, *, trust_root: TrustedRoot) -> VerifiedCut:
    """Verify a static bundle directory offline.

    Raises:
        NotImplementedError: until the bundle layout is published.
    """
    raise NotImplementedError("bundle layout not yet published")
