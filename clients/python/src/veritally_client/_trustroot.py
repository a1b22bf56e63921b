"""Trust root documents: which keys may sign a log's checkpoints, versioned and rotated.

A document (``TrustRoot``) holds the serialized ``TrustRootBody`` and Ed25519
signatures over ``TRUST_ROOT_DOMAIN || body``. The prefix separates domains: a
signature over a trust root is never also a valid signature over a checkpoint note made
with the same key, because the signed bytes differ.

Accepting a pinned document (:meth:`TrustedRoot.from_bytes`):

1. parse the document and its body; reject unknown or missing fields' bad values;
2. parse every publisher key (standard signed-note verifier key strings) and every
   witness key (cosignature/v1 verifier keys, type ``0x04``);
3. require ``1 <= threshold <= number of keys``, a version of at least 1, and a witness
   threshold of 0 without witness keys, else ``1 <= k <= number of witness keys``;
4. require at least ``threshold`` of its own keys to have signed the body;
5. reject it if it has expired at ``now``.

Accepting an update (:meth:`TrustedRoot.update`) additionally requires version = old + 1,
the same origin, and at least the OLD threshold of the OLD keys among the signers, so a
stolen new key alone cannot take over the log. Witness keys and their threshold rotate
the same way: they are fields of the signed body, so only the publisher keys of the old
version can add, drop or replace a witness (docs/adr/0091).

Walking a whole chain (:meth:`TrustedRoot.from_chain`) checks every link the same way but
the expiry of the newest version only, since older versions have usually expired by then.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from veritally_client._cosignature import CosignatureVerifier
from veritally_client._errors import BadSignatureError, MalformedDataError, TrustRootError
from veritally_client._gen.veritally.v1 import log_pb2
from veritally_client._signing import SIGNATURE_SIZE, Signer, Verifier

__all__ = ["TRUST_ROOT_DOMAIN", "TrustedRoot", "sign_trust_root", "trust_root_message"]

TrustRootPb = log_pb2.TrustRoot
TrustRootBodyPb = log_pb2.TrustRootBody
TrustRootSignaturePb = log_pb2.TrustRootSignature

#: Prefix of the signed message, so these signatures mean nothing in another context.
TRUST_ROOT_DOMAIN = b"veritally trust root v1\n"
#: Most publisher keys in one trust root; more would only make verification slower.
MAX_KEYS = 32
#: Most signatures considered on one document (old and new keys, with room to spare).
MAX_SIGNATURES = 2 * MAX_KEYS
#: Most witness keys in one trust root: Sigsum's default policy names 3, and each key
#: is one more cosignature verified on every cut.
MAX_WITNESSES = 32


def trust_root_message(body: bytes) -> bytes:
    """The exact bytes signed for a trust root body."""
    return TRUST_ROOT_DOMAIN + body


def sign_trust_root(body: log_pb2.TrustRootBody, signers: Sequence[Signer]) -> bytes:
    """Serialize ``body`` and sign it with every signer; returns the document bytes.

    Raises:
        ValueError: if there are no signers.
    """
    if not signers:
        raise ValueError("a trust root needs at least one signature")
    body_bytes = body.SerializeToString(deterministic=True)
    message = trust_root_message(body_bytes)
    doc = TrustRootPb(body=body_bytes)
    for s in signers:
        doc.signatures.append(TrustRootSignaturePb(key_id=s.key_id, signature=s.sign(message)))
    return doc.SerializeToString(deterministic=True)


def _signed_by(
    keys: Sequence[Verifier], message: bytes, sigs: Sequence[log_pb2.TrustRootSignature]
) -> set[Verifier]:
    """The keys among ``keys`` with a valid signature in ``sigs``.

    Signatures whose key id matches no key are ignored (they belong to the other
    version's keys). A key id is only an identifier, so a failing signature under a
    matching id is ignored too rather than trusted; it simply does not count.
    """
    signed: set[Verifier] = set()
    for sig in sigs:
        if len(sig.signature) != SIGNATURE_SIZE:
            continue
        for key in keys:
            if key.key_id != sig.key_id or key in signed:
                continue
            try:
                key.verify(message, sig.signature)
            except BadSignatureError:
                continue
            signed.add(key)
    return signed


def _witness_keys(body: log_pb2.TrustRootBody) -> tuple[CosignatureVerifier, ...]:
    """Steps (2) and (3) for the witnesses: their keys and the k of the k-of-n policy."""
    if len(body.witness_keys) > MAX_WITNESSES:
        raise TrustRootError(f"a trust root lists at most {MAX_WITNESSES} witness keys")
    try:
        witnesses = tuple(CosignatureVerifier.from_key_string(k) for k in body.witness_keys)
    except MalformedDataError as e:
        raise TrustRootError("a witness key is malformed") from e
    if len({(w.name, w.key_id) for w in witnesses}) != len(witnesses):
        raise TrustRootError("a witness key (name and key id) is listed twice")
    low = 1 if witnesses else 0
    if not low <= body.witness_threshold <= len(witnesses):
        raise TrustRootError(
            f"witness threshold {body.witness_threshold} is not within {low}..{len(witnesses)}"
        )
    return witnesses


@dataclass(frozen=True)
class TrustedRoot:
    """A verified trust root. Only :meth:`from_bytes` and :meth:`update` make one.

    Attributes:
        version: the version number (1 for the first).
        origin: the origin line of the log's checkpoints.
        verifiers: the publisher keys.
        threshold: how many distinct publisher keys must sign a checkpoint.
        expires: when this trust root stops being usable (UTC).
        document: the exact document bytes it was verified from.
        witnesses: the witness keys (cosignature/v1), empty when none is required.
        witness_threshold: how many distinct listed witnesses must cosign each
            checkpoint (0 exactly when there are no witnesses).
    """

    version: int
    origin: str
    verifiers: tuple[Verifier, ...]
    threshold: int
    expires: dt.datetime
    document: bytes
    witnesses: tuple[CosignatureVerifier, ...] = ()
    witness_threshold: int = 0

    @staticmethod
    def _parse(data: bytes) -> tuple[TrustedRoot, bytes, Sequence[log_pb2.TrustRootSignature]]:
        # (1) parse
        try:
            doc = TrustRootPb.FromString(data)
            body = TrustRootBodyPb.FromString(doc.body)
        except DecodeError as e:
            raise TrustRootError("trust root document does not parse") from e
        if len(doc.signatures) > MAX_SIGNATURES:
            raise TrustRootError(f"more than {MAX_SIGNATURES} signatures")
        # (2) keys
        if not 1 <= len(body.publisher_keys) <= MAX_KEYS:
            raise TrustRootError(f"a trust root lists 1 to {MAX_KEYS} publisher keys")
        try:
            keys = tuple(Verifier.from_key_string(k) for k in body.publisher_keys)
        except MalformedDataError as e:
            raise TrustRootError("a publisher key is malformed") from e
        if len(set(keys)) != len(keys):
            raise TrustRootError("a publisher key is listed twice")
        # (3) threshold, version, origin, expiry present
        if not 1 <= body.threshold <= len(keys):
            raise TrustRootError(f"threshold {body.threshold} is not within 1..{len(keys)}")
        witnesses = _witness_keys(body)
        if body.version < 1:
            raise TrustRootError("trust root versions start at 1")
        if not body.origin or any(ord(c) < 0x20 for c in body.origin):
            raise TrustRootError("the origin is empty or has control characters")
        if not body.HasField("expires_time"):
            raise TrustRootError("a trust root must have an expiry")
        root = TrustedRoot(
            version=body.version,
            origin=body.origin,
            verifiers=keys,
            threshold=body.threshold,
            expires=body.expires_time.ToDatetime(tzinfo=dt.UTC),
            document=bytes(data),
            witnesses=witnesses,
            witness_threshold=body.witness_threshold,
        )
        return root, doc.body, doc.signatures

    def _check_fresh(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if now >= self.expires:
            raise TrustRootError(f"trust root v{self.version} expired at {self.expires}")

    @classmethod
    def _pinned(cls, data: bytes, now: dt.datetime | None) -> TrustedRoot:
        root, body, sigs = cls._parse(data)
        # (4) self-signed
        signed = _signed_by(root.verifiers, trust_root_message(body), sigs)
        if len(signed) < root.threshold:
            raise TrustRootError(
                f"trust root v{root.version} is signed by {len(signed)} of its keys, "
                f"{root.threshold} required"
            )
        # (5) not expired
        if now is not None:
            root._check_fresh(now)
        return root

    def _next(self, data: bytes, now: dt.datetime | None) -> TrustedRoot:
        new, body, sigs = self._parse(data)
        if new.version != self.version + 1:
            raise TrustRootError(f"expected version {self.version + 1}, got {new.version}")
        if new.origin != self.origin:
            raise TrustRootError("a trust root update must not change the origin")
        message = trust_root_message(body)
        old_signed = _signed_by(self.verifiers, message, sigs)
        if len(old_signed) < self.threshold:
            raise TrustRootError(
                f"update is signed by {len(old_signed)} old keys, {self.threshold} required"
            )
        new_signed = _signed_by(new.verifiers, message, sigs)
        if len(new_signed) < new.threshold:
            raise TrustRootError(
                f"update is signed by {len(new_signed)} new keys, {new.threshold} required"
            )
        if now is not None:
            new._check_fresh(now)
        return new

    @classmethod
    def from_bytes(cls, data: bytes, *, now: dt.datetime) -> TrustedRoot:
        """Verify a pinned trust root document (self-signed by its own keys).

        Raises:
            TrustRootError: if it is malformed, not signed by ``threshold`` of its keys,
                or expired at ``now``.
            ValueError: if ``now`` is naive.
        """
        return cls._pinned(data, now)

    def update(self, data: bytes, *, now: dt.datetime | None) -> TrustedRoot:
        """Verify the next version of this trust root.

        ``now`` None skips the expiry check: for an older version of a chain, whose
        successor is checked next (only the newest version must be unexpired).

        Raises:
            TrustRootError: if it is not version + 1, changes the origin, is not signed
                by the threshold of both the old and the new keys, or has expired.
            ValueError: if ``now`` is naive.
        """
        return self._next(data, now)

    @classmethod
    def from_chain(cls, documents: Sequence[bytes], *, now: dt.datetime) -> TrustedRoot:
        """Verify a pinned first document and every following version, in order.

        Only the newest version must be unexpired: older ones have usually expired by
        the time a client walks the chain (as in TUF's root rotation).

        Raises:
            TrustRootError: if any link does not verify, or the newest has expired.
            ValueError: if ``documents`` is empty or ``now`` is naive.
        """
        if not documents:
            raise ValueError("a trust root chain has at least one document")
        root = cls._pinned(documents[0], None)
        for data in documents[1:]:
            root = root._next(data, None)
        root._check_fresh(now)
        return root
