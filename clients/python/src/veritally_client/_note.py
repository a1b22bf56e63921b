"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures.

A note is a UTF-8 text ending in a newline, a blank line, then one or more signature
lines ``— <key name> <base64(4-byte key id || signature)>``. Opening a note:

1. reject notes over :data:`MAX_NOTE_SIZE`, invalid UTF-8, or ASCII control characters
   other than newline;
2. split the text from the signatures at the *last* blank line;
3. parse every signature line (em dash, space, valid key name, space, base64 of at least
   five bytes); more than :data:`MAX_SIGNATURES` lines is malformed;
4. ignore signatures whose (name, key id) is not a known key — even if one of the two
   matches — and repeated signatures by the same known key;
5. verify every signature by a known key: one that fails rejects the whole note;
6. require at least ``threshold`` distinct known keys to have verified.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from veritally_client._errors import BadSignatureError, MalformedDataError, UnknownKeyError
from veritally_client._signing import Signer, Verifier, is_valid_key_name

__all__ = ["MAX_NOTE_SIZE", "MAX_SIGNATURES", "VerifiedNote", "open_note", "sign_note"]

#: Most signature lines accepted in one note; the spec asks for at least 16, and 100 is
#: what golang.org/x/mod/sumdb/note allows, bounding the work an attacker can cause.
MAX_SIGNATURES = 100
#: Largest note accepted, in bytes: a checkpoint with 100 post-quantum signatures
#: (~5 kB each) fits; anything larger is not a note we could have a use for.
MAX_NOTE_SIZE = 1 << 20
_SIG_PREFIX = "\u2014 "
# Control characters other than newline (one regex search instead of a loop per
# character: a client checks a note on every poll).
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose signatures were verified; only :func:`open_note` makes one.

    Attributes:
        text: the note text (ending in a newline), exactly as signed.
        verifiers: the known keys whose signatures verified, in note order.
        signature_lines: every signature line of the note (without its newline), in
            order, known keys' or not: cosignatures (c2sp.org/tlog-cosignature) are
            lines of keys a note verifier does not know, checked by the witness policy.
    """

    text: str
    verifiers: tuple[Verifier, ...]
    signature_lines: tuple[str, ...] = ()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise ValueError("a note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise ValueError("a note text must not contain control characters but newline")


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with every signer; returns the note bytes.

    Raises:
        ValueError: if the text is not a valid note text, there are no signers, or two
            signers share a name and key id.
    """
    _check_text(text)
    if not signers:
        raise ValueError("a note needs at least one signature")
    if len(signers) > MAX_SIGNATURES:
        raise ValueError(f"at most {MAX_SIGNATURES} signatures")
    if len({(s.name, s.key_id) for s in signers}) != len(signers):
        raise ValueError("two signers share a name and key id")
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        sig = base64.b64encode(signer.key_id + signer.sign(message)).decode("ascii")
        lines.append(f"{_SIG_PREFIX}{signer.name} {sig}\n")
    return message + b"\n" + "".join(lines).encode("utf-8")


def open_note(note: bytes, verifiers: Sequence[Verifier], *, threshold: int = 1) -> VerifiedNote:
    """Verify a signed note against trusted keys.

    Args:
        note: the exact note bytes.
        verifiers: the trusted keys.
        threshold: how many distinct trusted keys must have signed (at least 1).

    Returns:
        The verified note.

    Raises:
        MalformedDataError: if the note is not well formed.
        BadSignatureError: if a signature by a trusted key does not verify.
        UnknownKeyError: if fewer than ``threshold`` trusted keys signed it.
        ValueError: if ``threshold`` is below 1 or two verifiers share name and key id.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in known:
            raise ValueError(f"two verifiers share name and key id ({v.name})")
        known[(v.name, v.key_id)] = v
    # (1) size, encoding, control characters
    if len(note) > MAX_NOTE_SIZE:
        raise MalformedDataError(f"note is {len(note)} bytes, more than {MAX_NOTE_SIZE}")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedDataError("note is not valid UTF-8") from e
    if _CONTROL.search(decoded):
        raise MalformedDataError("note contains control characters other than newline")
    # (2) split at the last blank line
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedDataError("note has no blank line before its signatures")
    text, sig_block = decoded[: split + 1], decoded[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise MalformedDataError("note has no signature lines ending in a newline")
    # (3) parse signature lines
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedDataError(f"note has more than {MAX_SIGNATURES} signatures")
    message = text.encode("utf-8")
    verified: list[Verifier] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedDataError("signature line does not start with an em dash and space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep or not b64 or not is_valid_key_name(name):
            raise MalformedDataError("signature line has a bad key name or no signature")
        try:
            raw = base64.b64decode(b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as e:
            raise MalformedDataError("signature is not base64") from e
        if len(raw) < 5:
            raise MalformedDataError("signature is shorter than a key id and one byte")
        key = (name, raw[:4])
        # (4) unknown keys and repeats are ignored
        verifier = known.get(key)
        if verifier is None or key in seen:
            continue
        seen.add(key)
        # A trusted key's signature in one byte form only: base64 that differs only in
        # padding bits decodes to the same signature, so a note could take another form
        # with the same meaning (stricter than Go's note package, which accepts it).
        if base64.b64encode(raw) != b64.encode("ascii"):
            raise MalformedDataError(f"signature by trusted key {name} is not canonical base64")
        # (5) a known key's signature must verify
        try:
            verifier.verify(message, raw[4:])
        except BadSignatureError as e:
            raise BadSignatureError(f"signature by trusted key {name} does not verify") from e
        verified.append(verifier)
    # (6) enough trusted keys
    if len(verified) < threshold:
        raise UnknownKeyError(
            f"note is signed by {len(verified)} trusted key(s), {threshold} required"
        )
    return VerifiedNote(text=text, verifiers=tuple(verified), signature_lines=tuple(lines))
