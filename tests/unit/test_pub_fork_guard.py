"""The fork guard's decisions, and the bundle's page layout, on plain values."""

from __future__ import annotations

import hashlib

import pytest

from veritally.publication.errors import ForkRefusedError
from veritally.publication.published import ForkGuard, Published


def _root(size: int, fork: str = "") -> bytes:
    return hashlib.sha256(f"{fork}{size}".encode()).digest()


def _published(size: int, cut: int, fork: str = "") -> Published:
    return Published(tree_size=size, root_hash=_root(size, fork), cut_number=cut, where="test")


class Record:
    """A published record holding one checkpoint (or failing to be read)."""

    def __init__(self, found: Published | None) -> None:
        self.found = found
        self.error: Exception | None = None

    def newest(self) -> Published | None:
        return self.latest()

    def latest(self) -> Published | None:
        if self.error is not None:
            raise self.error
        return self.found


def _start(guard: ForkGuard, size: int, cut: int) -> None:
    guard.check_at_start(tree_size=size, cut_number=cut, root_at=_root)


def _before_signing(guard: ForkGuard, size: int, cut: int) -> None:
    guard.check_before_signing(tree_size=size, cut_number=cut, root_at=_root)


def test_refuses_to_start_on_a_store_behind_a_published_checkpoint() -> None:
    guard = ForkGuard([Record(_published(120, 9))])
    with pytest.raises(ForkRefusedError):
        _start(guard, 100, 7)
    assert guard.refused is not None


def test_refuses_a_store_with_fewer_cuts_than_published_even_at_the_same_size() -> None:
    with pytest.raises(ForkRefusedError):
        _start(ForkGuard([Record(_published(120, 9))]), 120, 8)


def test_refuses_a_store_whose_root_differs_at_a_published_size() -> None:
    # Larger than what was published, but not an extension of it: a fork already made.
    with pytest.raises(ForkRefusedError):
        _start(ForkGuard([Record(_published(120, 9, fork="other"))]), 150, 12)


def test_accepts_a_store_that_extends_what_was_published() -> None:
    record = Record(_published(120, 9))
    guard = ForkGuard([record])
    _start(guard, 150, 12)  # the bundle lags behind the store (a crash before writing)
    _before_signing(guard, 150, 12)
    guard.signed(_published(151, 13))
    record.found = _published(151, 13)
    _before_signing(guard, 151, 13)
    assert guard.refused is None


def test_refuses_to_sign_after_another_publisher_wrote_the_record() -> None:
    record = Record(_published(120, 9))
    guard = ForkGuard([record])
    _start(guard, 120, 9)
    record.found = _published(121, 10, fork="standby")
    with pytest.raises(ForkRefusedError):
        _before_signing(guard, 120, 9)


def test_refusal_is_latched_even_when_the_record_looks_fine_again() -> None:
    record = Record(_published(121, 10))
    guard = ForkGuard([record])
    with pytest.raises(ForkRefusedError):
        _start(guard, 120, 9)
    record.found = None
    with pytest.raises(ForkRefusedError):
        _before_signing(guard, 120, 9)


def test_unreadable_record_skips_a_signature_without_latching() -> None:
    record = Record(_published(120, 9))
    guard = ForkGuard([record])
    _start(guard, 120, 9)
    record.error = PermissionError("the bundle is not readable")
    with pytest.raises(PermissionError):
        _before_signing(guard, 120, 9)
    record.error = None
    _before_signing(guard, 120, 9)
    assert guard.refused is None
