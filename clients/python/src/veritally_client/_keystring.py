"""Key names and key strings of C2SP signed notes (c2sp.org/signed-note).

One module reads and writes every key string, whatever the signature type:

* verifier key (*vkey*): ``<name>+<hex key id>+<base64(type || public key)>``;
* private key (golang.org/x/mod/sumdb/note): ``PRIVATE+KEY+<name>+<hex key id>+<base64(type
  || secret)>``;

with the key id ``SHA-256(name || 0x0A || type || public key)[:4]`` in eight lowercase hex
digits. The type byte says which signature scheme the key is for: ``0x01`` plain Ed25519
note signatures, ``0x04`` tlog-cosignature/v1 Ed25519 cosignatures (c2sp.org/signed-note,
"Signature types").

Every way a string can be wrong raises :class:`MalformedDataError`, never a bare
``ValueError``: a key string is data from the world (a configuration file, a trust root, a
witness's announcement), and a non-ASCII character, a name with a space, a bad key id or
base64 that does not decode is that data's fault, not a caller bug.

Name rules (c2sp.org/signed-note, "Format"): a key name is non-empty and has neither a
Unicode space (the Unicode ``White_Space`` property, which is what Go's
``unicode.IsSpace`` tests) nor ``+``. Any other character is allowed, including unusual
ones (``DEL``, C1 controls but ``U+0085``, letters of any script), so a foreign cosigner's
signature line with such a name is an unknown key to ignore, not a malformed note. ASCII
control characters are refused too: a note may not contain them, so a key with one in its
name could never sign one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from veritally_client._errors import MalformedDataError

__all__ = [
    "KeyString",
    "compute_key_id",
    "format_private_key",
    "format_verifier_key",
    "is_valid_key_name",
    "parse_private_key",
    "parse_verifier_key",
]

# The Unicode White_Space property (PropList.txt): the spec's "Unicode spaces", exactly
# the characters Go's unicode.IsSpace reports. Listed rather than taken from str.isspace,
# which also counts U+001C..U+001F (refused anyway as ASCII controls) and could drift
# with the Unicode version of the interpreter.
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_HEX = frozenset("0123456789abcdef")
#: Size of a key id in bytes (c2sp.org/signed-note).
KEY_ID_SIZE = 4


def is_valid_key_name(name: str) -> bool:
    """Whether ``name`` is a valid signed-note key name (see the module docstring)."""
    if not name or "+" in name:
        return False
    return not any(ch in _WHITE_SPACE or ord(ch) < 0x20 for ch in name)


def compute_key_id(name: str, algorithm: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || algorithm || public_key)[:4]``.

    Raises:
        ValueError: if ``algorithm`` is not a byte value.
    """
    if not 0 <= algorithm <= 0xFF:
        raise ValueError(f"a signature type is one byte, got {algorithm}")
    material = name.encode("utf-8") + b"\n" + bytes([algorithm]) + public_key
    return hashlib.sha256(material).digest()[:KEY_ID_SIZE]


@dataclass(frozen=True)
class KeyString:
    """The parts of a parsed key string.

    Attributes:
        name: the key name (valid).
        key_id: the 4-byte key id the string states.
        algorithm: the signature type byte.
        key: the key material after the type byte (public key, or secret for a private
            key string).
    """

    name: str
    key_id: bytes
    algorithm: int
    key: bytes


def _parse_fields(text: str, what: str, *, algorithm: int, key_size: int) -> KeyString:
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise MalformedDataError(f"a {what} has three '+'-separated fields after any prefix")
    name, hex_id, b64 = parts
    if not is_valid_key_name(name):
        raise MalformedDataError(
            f"invalid key name {name!r} in a {what}: empty, or has a space, '+' or an ASCII "
            "control character"
        )
    if len(hex_id) != 2 * KEY_ID_SIZE or not set(hex_id) <= _HEX:
        raise MalformedDataError(f"the key id of a {what} is 8 lowercase hex digits")
    if not b64.isascii():
        raise MalformedDataError(f"the key of a {what} is not base64 (non-ASCII characters)")
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error as e:
        raise MalformedDataError(f"the key of a {what} is not base64") from e
    # One spelling per key: base64 differing only in its padding bits is refused.
    if base64.b64encode(raw).decode("ascii") != b64:
        raise MalformedDataError(f"the key of a {what} is not canonical base64")
    if not raw or raw[0] != algorithm:
        found = f"0x{raw[0]:02x}" if raw else "nothing"
        raise MalformedDataError(
            f"a {what} for this use has signature type 0x{algorithm:02x}, found {found}"
        )
    if len(raw) != 1 + key_size:
        raise MalformedDataError(
            f"a {what} of type 0x{algorithm:02x} has {key_size} key bytes, found {len(raw) - 1}"
        )
    return KeyString(name=name, key_id=bytes.fromhex(hex_id), algorithm=algorithm, key=raw[1:])


def parse_verifier_key(text: str, *, algorithm: int, key_size: int) -> KeyString:
    """Parse a vkey of one signature type, checking that its key id matches.

    Args:
        text: ``<name>+<hex key id>+<base64(type || public key)>``.
        algorithm: the signature type byte expected.
        key_size: the public key's size in bytes for that type.

    Returns:
        The parts.

    Raises:
        MalformedDataError: if the string is not a well-formed vkey of that type, or its
            key id is not the one of its name and key.
    """
    parts = _parse_fields(text, "verifier key", algorithm=algorithm, key_size=key_size)
    expected = compute_key_id(parts.name, algorithm, parts.key)
    if parts.key_id != expected:
        raise MalformedDataError(
            f"verifier key id {parts.key_id.hex()} does not match its name and key "
            f"(expected {expected.hex()})"
        )
    return parts


def parse_private_key(text: str, *, algorithm: int, key_size: int) -> KeyString:
    """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(type || secret)>``.

    The key id cannot be checked here (it is over the public key, which the caller
    derives from the secret): the caller compares it.

    Raises:
        MalformedDataError: if the string is not a well-formed private key of that type.
    """
    if not text.startswith(_PRIVATE_PREFIX):
        raise MalformedDataError("a private key string starts with PRIVATE+KEY+")
    return _parse_fields(
        text[len(_PRIVATE_PREFIX) :], "private key", algorithm=algorithm, key_size=key_size
    )


def _b64(algorithm: int, key: bytes) -> str:
    return base64.b64encode(bytes([algorithm]) + key).decode("ascii")


def format_verifier_key(name: str, algorithm: int, public_key: bytes) -> str:
    """The vkey of a public key (its key id computed)."""
    key_id = compute_key_id(name, algorithm, public_key)
    return f"{name}+{key_id.hex()}+{_b64(algorithm, public_key)}"


def format_private_key(name: str, key_id: bytes, algorithm: int, secret: bytes) -> str:
    """The private key string of a secret whose public key has ``key_id``."""
    return f"{_PRIVATE_PREFIX}{name}+{key_id.hex()}+{_b64(algorithm, secret)}"
