"""Ed25519 checkpoint cosignatures, ``cosignature/v1`` (c2sp.org/tlog-cosignature).

A cosignature is a statement by a cosigner (a witness) that, as of its timestamp, the
checkpoint is the largest consistent tree head it has observed for the log. It is a
signed-note signature line::

    — <cosigner name> base64(key id || timestamp || Ed25519 signature)

* key id: ``SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4]`` (type ``0x04``; the
  vkey of a cosigner carries that type byte);
* timestamp: POSIX seconds, 8 bytes big-endian, at most ``2**63 - 1``;
* the signed message (:func:`cosigned_message`, the one function both sides use)::

      cosignature/v1
      time <timestamp in ASCII decimal, no leading zeroes>
      <the whole checkpoint note text, extension lines included, ending in a newline>

Verifying one cosignature (:meth:`CosignatureVerifier.verify_line`):

1. parse the line: em dash, space, a valid key name, space, canonical base64 of a key
   id and at least one more byte; anything else is malformed;
2. a line whose (name, key id) is not the verifier's is not its cosignature
   (:class:`UnknownKeyError`: callers ignore it, as signed-note asks);
3. this key's line is exactly 4 + 8 + 64 bytes, with a timestamp at most ``2**63 - 1``;
4. verify the Ed25519 signature over :func:`cosigned_message` of the text and the
   timestamp, with libsodium (stricter than Go's crypto/ed25519: small-order and
   non-canonical points are refused, docs/adr/0090-witnesses-and-cosignatures.md).

The Ed25519 operations are :mod:`veritally_client._signing`'s, the only module that
touches PyNaCl's signing API.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from dataclasses import dataclass

from veritally_client import _keystring
from veritally_client._errors import BadSignatureError, MalformedDataError, UnknownKeyError
from veritally_client._signing import SIGNATURE_SIZE, Signer, Verifier

__all__ = [
    "COSIGNATURE_ALGORITHM",
    "MAX_TIMESTAMP",
    "Cosignature",
    "CosignatureSigner",
    "CosignatureVerifier",
    "cosigned_message",
    "parse_cosignature_line",
]

#: Signature type byte of Ed25519 cosignature/v1 (c2sp.org/signed-note).
COSIGNATURE_ALGORITHM = 0x04
#: Largest timestamp a cosignature may carry (c2sp.org/tlog-cosignature).
MAX_TIMESTAMP = 2**63 - 1
_KEY_SIZE = 32
_TIMESTAMP_SIZE = 8
_ID_SIZE = _keystring.KEY_ID_SIZE
#: Bytes of a decoded cosignature: key id, timestamp, Ed25519 signature.
_BLOB_SIZE = _ID_SIZE + _TIMESTAMP_SIZE + SIGNATURE_SIZE
_LINE_PREFIX = "\u2014 "
_HEADER = "cosignature/v1\n"


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 Ed25519 signature is over.

    Args:
        text: the checkpoint note text (every line, each ending in a newline; no
            signature lines).
        timestamp: POSIX seconds, ``0 <= timestamp <= MAX_TIMESTAMP``.

    Raises:
        ValueError: if the text does not end in a newline or the timestamp is out of
            range.
    """
    if not text.endswith("\n"):
        raise ValueError("a note text ends with a newline")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp} is outside 0..2**63-1")
    return f"{_HEADER}time {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class Cosignature:
    """One cosignature line, parsed (not verified: see :class:`CosignatureVerifier`).

    Attributes:
        name: the cosigner's key name.
        key_id: the 4-byte key id.
        timestamp: POSIX seconds when it was made.
        signature: the 64-byte Ed25519 signature.
    """

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def __post_init__(self) -> None:
        if not _keystring.is_valid_key_name(self.name):
            raise ValueError(f"invalid key name {self.name!r}")
        if len(self.key_id) != _ID_SIZE or len(self.signature) != SIGNATURE_SIZE:
            raise ValueError("a cosignature has a 4-byte key id and a 64-byte signature")
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {self.timestamp} is outside 0..2**63-1")

    def line(self) -> str:
        """The signature line, ending in a newline."""
        blob = self.key_id + struct.pack(">Q", self.timestamp) + self.signature
        return f"{_LINE_PREFIX}{self.name} {base64.b64encode(blob).decode('ascii')}\n"


def _split_line(line: str) -> tuple[str, bytes]:
    """(name, decoded signature) of a signed-note signature line, of any key type."""
    body = line[:-1] if line.endswith("\n") else line
    if not body.startswith(_LINE_PREFIX):
        raise MalformedDataError("a signature line starts with an em dash and a space")
    name, sep, b64 = body[len(_LINE_PREFIX) :].partition(" ")
    if not sep or not _keystring.is_valid_key_name(name):
        raise MalformedDataError(f"bad key name in signature line {name!r}")
    if not b64.isascii():
        raise MalformedDataError("the signature is not base64 (non-ASCII characters)")
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error as e:
        raise MalformedDataError("the signature is not base64") from e
    if base64.b64encode(blob).decode("ascii") != b64:
        raise MalformedDataError("the signature is not canonical base64")
    if len(blob) <= _ID_SIZE:
        raise MalformedDataError("a signature is a key id and at least one more byte")
    return name, blob


def _cosignature(name: str, blob: bytes) -> Cosignature:
    if len(blob) != _BLOB_SIZE:
        raise MalformedDataError(
            f"a cosignature/v1 signature is {_BLOB_SIZE} bytes (key id, timestamp, "
            f"signature), found {len(blob)}"
        )
    # (3) the timestamp's range
    timestamp = int.from_bytes(blob[_ID_SIZE : _ID_SIZE + _TIMESTAMP_SIZE], "big")
    if timestamp > MAX_TIMESTAMP:
        raise MalformedDataError(f"cosignature timestamp {timestamp} is above 2**63-1")
    return Cosignature(
        name=name,
        key_id=blob[:_ID_SIZE],
        timestamp=timestamp,
        signature=blob[_ID_SIZE + _TIMESTAMP_SIZE :],
    )


def parse_cosignature_line(line: str) -> Cosignature:
    """Parse one cosignature/v1 signature line (with or without its final newline).

    Raises:
        MalformedDataError: if the line is not an em dash, a space, a valid key name, a
            space and the canonical base64 of 76 bytes, or its timestamp is above
            ``2**63 - 1``.
    """
    return _cosignature(*_split_line(line))


class CosignatureVerifier:
    """A cosigner's public key: verifies its cosignature/v1 signatures.

    Attributes:
        name: the cosigner's key name.
        key_id: the 4-byte key id (type ``0x04``).
        public_key: the 32-byte Ed25519 public key.
    """

    __slots__ = ("_ed25519", "key_id", "name", "public_key")

    def __init__(self, *, name: str, public_key: bytes) -> None:
        """Build a verifier from a name and a raw public key.

        Raises:
            ValueError: if the name is not a valid key name or the key is not 32 bytes.
        """
        self._ed25519 = Verifier(name=name, public_key=public_key)
        self.name = name
        self.public_key = bytes(public_key)
        self.key_id = _keystring.compute_key_id(name, COSIGNATURE_ALGORITHM, self.public_key)

    @classmethod
    def from_key_string(cls, text: str) -> CosignatureVerifier:
        """Parse a cosigner's vkey: ``<name>+<key id>+<base64(0x04 || public key)>``.

        Raises:
            MalformedDataError: if the string is not a well-formed type-0x04 vkey whose
                key id matches its name and key.
        """
        parts = _keystring.parse_verifier_key(
            text, algorithm=COSIGNATURE_ALGORITHM, key_size=_KEY_SIZE
        )
        return cls(name=parts.name, public_key=parts.key)

    def key_string(self) -> str:
        """The cosigner's vkey."""
        return _keystring.format_verifier_key(self.name, COSIGNATURE_ALGORITHM, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> int:
        """Verify the part of a cosignature after its key id, as a note verifier does.

        Args:
            message: the checkpoint note text, as UTF-8.
            signature: the 8-byte timestamp and the 64-byte Ed25519 signature.

        Returns:
            The verified timestamp.

        Raises:
            BadSignatureError: if the signature is not 72 bytes or does not verify.
            MalformedDataError: if the message is not a note text or the timestamp is
                above ``2**63 - 1``.
        """
        if len(signature) != _TIMESTAMP_SIZE + SIGNATURE_SIZE:
            raise BadSignatureError(
                f"a cosignature/v1 signature is {_TIMESTAMP_SIZE + SIGNATURE_SIZE} bytes "
                f"after its key id, got {len(signature)} (cosigner {self.name})"
            )
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise MalformedDataError(f"cosignature timestamp {timestamp} is above 2**63-1")
        try:
            text = message.decode("utf-8")
            signed = cosigned_message(text, timestamp)
        except (UnicodeDecodeError, ValueError) as e:
            raise MalformedDataError("the cosigned message is not a note text") from e
        # (4) libsodium's Ed25519 verification
        try:
            self._ed25519.verify(signed, signature[_TIMESTAMP_SIZE:])
        except BadSignatureError as e:
            raise BadSignatureError(f"cosignature by {self.name} does not verify") from e
        return timestamp

    def verify_line(self, text: str, line: str) -> Cosignature:
        """Verify one cosignature line over a checkpoint note text.

        Returns:
            The verified cosignature.

        Raises:
            MalformedDataError: if the line is not a cosignature/v1 line.
            UnknownKeyError: if the line is by another key (its name or key id differs):
                not this cosigner's, to be ignored.
            BadSignatureError: if it is this key's and does not verify.
        """
        # (1) the line's shape, whatever the key type
        name, blob = _split_line(line)
        # (2) this key's line, or not this verifier's business (its length, timestamp or
        # type are then none of ours either: signed-note ignores unknown keys' lines)
        if (name, blob[:_ID_SIZE]) != (self.name, self.key_id):
            raise UnknownKeyError(
                f"signature line by {name}+{blob[:_ID_SIZE].hex()}, "
                f"not by cosigner {self.name}+{self.key_id.hex()}"
            )
        # (3), (4)
        cosignature = _cosignature(name, blob)
        stamp = struct.pack(">Q", cosignature.timestamp)
        self.verify(text.encode("utf-8"), stamp + cosignature.signature)
        return cosignature

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CosignatureVerifier):
            return NotImplemented
        return self.name == other.name and self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash((self.name, self.public_key, COSIGNATURE_ALGORITHM))

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self.key_string()!r})"


class CosignatureSigner:
    """A cosigner's private key: makes cosignature/v1 signatures.

    Attributes:
        name: the cosigner's key name.
        key_id: the 4-byte key id (type ``0x04``).
    """

    __slots__ = ("_ed25519", "_seed", "key_id", "name")

    def __init__(self, *, name: str, seed: bytes) -> None:
        """Build a signer from a name and a 32-byte RFC 8032 seed.

        Raises:
            ValueError: if the name is invalid or the seed is not 32 bytes.
        """
        self._ed25519 = Signer(name=name, seed=seed)
        self._seed = bytes(seed)
        self.name = name
        self.key_id = self.verifier().key_id

    @classmethod
    def generate(cls, name: str) -> CosignatureSigner:
        """A new random key (from the operating system's CSPRNG).

        Raises:
            ValueError: if the name is not a valid key name.
        """
        return cls(name=name, seed=secrets.token_bytes(_KEY_SIZE))

    @classmethod
    def from_private_key_string(cls, text: str) -> CosignatureSigner:
        """Parse ``PRIVATE+KEY+<name>+<key id>+<base64(0x04 || seed)>``.

        Raises:
            MalformedDataError: if the string is malformed, not of type ``0x04``, or its
                key id does not match.
        """
        parts = _keystring.parse_private_key(
            text, algorithm=COSIGNATURE_ALGORITHM, key_size=_KEY_SIZE
        )
        signer = cls(name=parts.name, seed=parts.key)
        if signer.key_id != parts.key_id:
            raise MalformedDataError("the key id does not match the name and key")
        return signer

    def private_key_string(self) -> str:
        """The private key string (secret: store it with care)."""
        return _keystring.format_private_key(
            self.name, self.key_id, COSIGNATURE_ALGORITHM, self._seed
        )

    def verifier(self) -> CosignatureVerifier:
        """The matching public verifier."""
        return CosignatureVerifier(name=self.name, public_key=self._ed25519.verifier().public_key)

    def cosign(self, text: str, *, timestamp: int) -> Cosignature:
        """Cosign a checkpoint note text at ``timestamp``.

        Raises:
            ValueError: if the text does not end in a newline or the timestamp is outside
                ``1..MAX_TIMESTAMP`` (a witness never omits the time: c2sp.org/tlog-witness).
        """
        if timestamp < 1:
            raise ValueError("a witness's cosignature carries a timestamp above zero")
        signature = self._ed25519.sign(cosigned_message(text, timestamp))
        return Cosignature(
            name=self.name, key_id=self.key_id, timestamp=timestamp, signature=signature
        )

    def __repr__(self) -> str:
        # Never print the secret.
        return f"CosignatureSigner(name={self.name!r}, key_id={self.key_id.hex()!r})"
