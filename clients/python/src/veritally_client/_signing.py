"""Named Ed25519 keys for C2SP signed notes, wrapped around PyNaCl.

PyNaCl's ``SigningKey.sign`` returns a *combined* ``signature || message`` blob and
``VerifyKey.verify`` returns the message it was given. Handling that blob by accident
(storing it as "the signature", or trusting the returned message instead of the bytes
one meant to verify) is a classic mistake, so this module is the only place that touches
PyNaCl's signing API: :meth:`Signer.sign` returns the detached 64-byte signature and
:meth:`Verifier.verify` returns nothing and raises our own error.

Key strings follow golang.org/x/mod/sumdb/note, so keys interoperate with other C2SP
signed-note implementations:

* verifier key: ``<name>+<hex key id>+<base64(0x01 || 32-byte public key)>``
* private key: ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>``

and the key id is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (c2sp.org/signed-note).
"""

from __future__ import annotations

import secrets

import nacl.exceptions
import nacl.signing

from veritally_client import _keystring
from veritally_client._errors import BadSignatureError, MalformedDataError
from veritally_client._keystring import is_valid_key_name

__all__ = [
    "ED25519_ALGORITHM",
    "SIGNATURE_SIZE",
    "Signer",
    "Verifier",
    "compute_key_id",
    "is_valid_key_name",
]

#: Signature type identifier byte of Ed25519 in c2sp.org/signed-note.
ED25519_ALGORITHM = 0x01
#: Size of an Ed25519 signature in bytes (RFC 8032).
SIGNATURE_SIZE = 64
#: Size of an Ed25519 public key and of a seed in bytes (RFC 8032).
_KEY_SIZE = 32


def compute_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key id of an Ed25519 key.

    Args:
        name: the key name.
        public_key: the 32-byte Ed25519 public key.

    Returns:
        ``SHA-256(name || 0x0A || 0x01 || public_key)[:4]``.

    Raises:
        ValueError: if ``public_key`` is not 32 bytes.
    """
    if len(public_key) != _KEY_SIZE:
        raise ValueError(f"an Ed25519 public key is {_KEY_SIZE} bytes, got {len(public_key)}")
    return _keystring.compute_key_id(name, ED25519_ALGORITHM, public_key)


def _check_name(name: str) -> None:
    if not is_valid_key_name(name):
        raise ValueError(f"invalid signed-note key name {name!r}: empty, or has spaces or '+'")


class Verifier:
    """A named Ed25519 public key that verifies detached signatures.

    Attributes:
        name: the signed-note key name.
        key_id: the 4-byte key id.
        public_key: the 32-byte Ed25519 public key.
    """

    __slots__ = ("_verify_key", "key_id", "name", "public_key")

    def __init__(self, *, name: str, public_key: bytes) -> None:
        """Build a verifier from a name and a raw public key.

        Raises:
            ValueError: if the name is not a valid key name or the key is not 32 bytes.
        """
        _check_name(name)
        if len(public_key) != _KEY_SIZE:
            raise ValueError(f"an Ed25519 public key is {_KEY_SIZE} bytes, got {len(public_key)}")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_id = compute_key_id(name, self.public_key)
        self._verify_key = nacl.signing.VerifyKey(self.public_key)

    @classmethod
    def from_key_string(cls, text: str) -> Verifier:
        """Parse a standard signed-note verifier key string.

        Args:
            text: ``<name>+<8 hex digits key id>+<base64(0x01 || public key)>``.

        Returns:
            The verifier.

        Raises:
            MalformedDataError: if the string is not well formed, the algorithm is not
                Ed25519, or the key id does not match the name and key.
        """
        parts = _keystring.parse_verifier_key(text, algorithm=ED25519_ALGORITHM, key_size=_KEY_SIZE)
        return cls(name=parts.name, public_key=parts.key)

    def key_string(self) -> str:
        """The standard signed-note verifier key string of this key."""
        return _keystring.format_verifier_key(self.name, ED25519_ALGORITHM, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify a detached Ed25519 signature over ``message``.

        Args:
            message: the exact signed bytes.
            signature: the 64-byte detached signature.

        Raises:
            BadSignatureError: if the signature is not 64 bytes or does not verify.
        """
        if len(signature) != SIGNATURE_SIZE:
            raise BadSignatureError(
                f"an Ed25519 signature is {SIGNATURE_SIZE} bytes, got {len(signature)} "
                f"(key {self.name})"
            )
        try:
            # The detached form: PyNaCl returns the message we passed; we ignore it so
            # that nothing downstream can take the "verified" bytes from PyNaCl.
            self._verify_key.verify(bytes(message), bytes(signature))
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as e:
            raise BadSignatureError(f"signature by key {self.name} does not verify") from e

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Verifier):
            return NotImplemented
        return self.name == other.name and self.public_key == other.public_key

    def __hash__(self) -> int:
        return hash((self.name, self.public_key))

    def __repr__(self) -> str:
        return f"Verifier({self.key_string()!r})"


class Signer:
    """A named Ed25519 private key for C2SP signed notes.

    Attributes:
        name: the signed-note key name.
        key_id: the 4-byte key id.
    """

    __slots__ = ("_signing_key", "key_id", "name")

    def __init__(self, *, name: str, seed: bytes) -> None:
        """Build a signer from a name and a 32-byte RFC 8032 seed.

        Raises:
            ValueError: if the name is invalid or the seed is not 32 bytes.
        """
        _check_name(name)
        if len(seed) != _KEY_SIZE:
            raise ValueError(f"an Ed25519 seed is {_KEY_SIZE} bytes, got {len(seed)}")
        self.name = name
        self._signing_key = nacl.signing.SigningKey(bytes(seed))
        self.key_id = compute_key_id(name, bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls, name: str) -> Signer:
        """A new random key (from the operating system's CSPRNG).

        Raises:
            ValueError: if the name is not a valid key name.
        """
        return cls(name=name, seed=secrets.token_bytes(_KEY_SIZE))

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Signer:
        """A key from a 32-byte seed (RFC 8032 "secret key").

        Raises:
            ValueError: if the name is invalid or the seed is not 32 bytes.
        """
        return cls(name=name, seed=seed)

    @classmethod
    def from_private_key_string(cls, text: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``.

        Raises:
            MalformedDataError: if the string is malformed or the key id does not match.
        """
        parts = _keystring.parse_private_key(text, algorithm=ED25519_ALGORITHM, key_size=_KEY_SIZE)
        signer = cls(name=parts.name, seed=parts.key)
        if signer.key_id != parts.key_id:
            raise MalformedDataError("the key id does not match the name and key")
        return signer

    def private_key_string(self) -> str:
        """The Go sumdb/note private key string (secret: store it with care)."""
        seed = bytes(self._signing_key)
        return _keystring.format_private_key(self.name, self.key_id, ED25519_ALGORITHM, seed)

    def sign(self, message: bytes) -> bytes:
        """The detached 64-byte Ed25519 signature of ``message``."""
        return bytes(self._signing_key.sign(bytes(message)).signature)

    def verifier(self) -> Verifier:
        """The matching public verifier."""
        return Verifier(name=self.name, public_key=bytes(self._signing_key.verify_key))

    def __repr__(self) -> str:
        # Never print the secret.
        return f"Signer(name={self.name!r}, key_id={self.key_id.hex()!r})"
