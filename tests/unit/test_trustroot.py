"""Trust root documents: pinning, expiry and rotation."""

from __future__ import annotations

import datetime as dt

import pytest

from veritally_client._errors import TrustRootError
from veritally_client._gen.veritally.v1 import log_pb2
from veritally_client._signing import Signer
from veritally_client._trustroot import TrustedRoot, sign_trust_root

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
EXPIRES = NOW + dt.timedelta(days=30)
ORIGIN = "veritally.example/e2026"


def _body(
    version: int, keys: list[Signer], threshold: int = 1, origin: str = ORIGIN
) -> log_pb2.TrustRootBody:
    body = log_pb2.TrustRootBody(
        version=version,
        origin=origin,
        publisher_keys=[k.verifier().key_string() for k in keys],
        threshold=threshold,
    )
    body.expires_time.FromDatetime(EXPIRES)
    return body


def test_pinned_root_verifies_when_self_signed() -> None:
    k = Signer.generate("pub1")
    root = TrustedRoot.from_bytes(sign_trust_root(_body(1, [k]), [k]), now=NOW)
    assert (root.version, root.origin, root.threshold) == (1, ORIGIN, 1)
    assert root.verifiers == (k.verifier(),)
    assert root.expires == EXPIRES


def test_rejects_root_signed_by_a_foreign_key() -> None:
    k, other = Signer.generate("pub1"), Signer.generate("pub1")
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(sign_trust_root(_body(1, [k]), [other]), now=NOW)


def test_rejects_root_below_its_threshold() -> None:
    a, b = Signer.generate("a"), Signer.generate("b")
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(sign_trust_root(_body(1, [a, b], threshold=2), [a]), now=NOW)


def test_rejects_expired_root() -> None:
    k = Signer.generate("pub1")
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(sign_trust_root(_body(1, [k]), [k]), now=EXPIRES)


def test_rejects_garbage_document() -> None:
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(b"\xff\xff\xff", now=NOW)


def test_rejects_threshold_above_number_of_keys() -> None:
    k = Signer.generate("pub1")
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(sign_trust_root(_body(1, [k], threshold=2), [k]), now=NOW)


def test_rotation_signed_by_old_and_new_keys_is_accepted() -> None:
    old, new = Signer.generate("pub1"), Signer.generate("pub2")
    v1 = TrustedRoot.from_bytes(sign_trust_root(_body(1, [old]), [old]), now=NOW)
    v2 = v1.update(sign_trust_root(_body(2, [new]), [old, new]), now=NOW)
    assert v2.version == 2
    assert v2.verifiers == (new.verifier(),)


def test_rejects_rotation_signed_only_by_the_new_key() -> None:
    old, new = Signer.generate("pub1"), Signer.generate("pub2")
    v1 = TrustedRoot.from_bytes(sign_trust_root(_body(1, [old]), [old]), now=NOW)
    with pytest.raises(TrustRootError):
        v1.update(sign_trust_root(_body(2, [new]), [new]), now=NOW)


def test_rejects_rotation_not_signed_by_the_new_key() -> None:
    old, new = Signer.generate("pub1"), Signer.generate("pub2")
    v1 = TrustedRoot.from_bytes(sign_trust_root(_body(1, [old]), [old]), now=NOW)
    with pytest.raises(TrustRootError):
        v1.update(sign_trust_root(_body(2, [new]), [old]), now=NOW)


def test_rejects_rotation_skipping_a_version() -> None:
    k = Signer.generate("pub1")
    v1 = TrustedRoot.from_bytes(sign_trust_root(_body(1, [k]), [k]), now=NOW)
    with pytest.raises(TrustRootError):
        v1.update(sign_trust_root(_body(3, [k]), [k]), now=NOW)


def test_rejects_rotation_changing_the_origin() -> None:
    k = Signer.generate("pub1")
    v1 = TrustedRoot.from_bytes(sign_trust_root(_body(1, [k]), [k]), now=NOW)
    with pytest.raises(TrustRootError):
        v1.update(sign_trust_root(_body(2, [k], origin="evil.example/x"), [k]), now=NOW)


def test_chain_accepts_expired_intermediate_versions() -> None:
    k1, k2 = Signer.generate("pub1"), Signer.generate("pub2")
    old_body = _body(1, [k1])
    old_body.expires_time.FromDatetime(NOW - dt.timedelta(days=1))
    v1 = sign_trust_root(old_body, [k1])
    v2 = sign_trust_root(_body(2, [k2]), [k1, k2])
    root = TrustedRoot.from_chain([v1, v2], now=NOW)
    assert root.version == 2
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(v1, now=NOW)


def test_chain_rejects_expired_newest_version() -> None:
    k = Signer.generate("pub1")
    with pytest.raises(TrustRootError):
        TrustedRoot.from_chain([sign_trust_root(_body(1, [k]), [k])], now=EXPIRES)
