"""Signing key files of the publisher.

A key file holds one Ed25519 signing key, in one of two formats (docs/adr/0022):

* plain: the golang.org/x/mod/sumdb/note private key string
  ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`` and a newline;
* encrypted: a JSON object ``{"format": "veritally-encrypted-signing-key", "version": 1,
  "kdf": "scrypt", "scrypt_n", "scrypt_r", "scrypt_p", "salt", "cipher":
  "chacha20-poly1305", "nonce", "ciphertext", "name", "key_id"}`` whose ciphertext is the
  plain form, sealed with a key derived from a passphrase (scrypt, then
  ChaCha20-Poly1305 with the name and key id as associated data).

Loading refuses, with :class:`KeyFileError`, a missing file, a file readable or
writable by group or others (``mode & 0o077``), a corrupt file, an encrypted file without
(or with the wrong) passphrase.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from veritally.publication.errors import KeyFileError
from veritally_client import MalformedDataError
from veritally_client.protocol import Signer

__all__ = ["load_passphrase", "load_signer", "write_key_files"]

_FORMAT = "veritally-encrypted-signing-key"
# scrypt cost: N = 2**15, r = 8 uses 32 MiB and ~0.1 s per derivation on this class of
# machine; the key is loaded once per process start, so the cost is paid rarely.
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
# Largest key file read, in bytes: both formats are well under 1 KiB; a bigger file is
# not a key file.
_MAX_KEY_FILE = 16 * 1024


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase)


def _aad(name: str, key_id: str) -> bytes:
    return f"{_FORMAT}\n{name}\n{key_id}".encode()


def _encrypt(signer: Signer, passphrase: bytes) -> bytes:
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    key = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    plain = signer.private_key_string().encode()
    sealed = ChaCha20Poly1305(key).encrypt(nonce, plain, _aad(signer.name, signer.key_id.hex()))
    doc = {
        "format": _FORMAT,
        "version": 1,
        "name": signer.name,
        "key_id": signer.key_id.hex(),
        "kdf": "scrypt",
        "scrypt_n": _SCRYPT_N,
        "scrypt_r": _SCRYPT_R,
        "scrypt_p": _SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "cipher": "chacha20-poly1305",
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _decrypt(path: Path, doc: dict[str, Any], passphrase: bytes | None) -> str:
    if passphrase is None:
        raise KeyFileError(f"{path} is encrypted: give its passphrase file")
    try:
        if doc.get("version") != 1 or doc.get("kdf") != "scrypt":
            raise KeyFileError(f"{path}: unsupported encrypted key version or KDF")
        if doc.get("cipher") != "chacha20-poly1305":
            raise KeyFileError(f"{path}: unsupported cipher")
        n, r, p = int(doc["scrypt_n"]), int(doc["scrypt_r"]), int(doc["scrypt_p"])
        # Bound the KDF cost a file can ask for (a hostile file must not hang start-up).
        if not (2**14 <= n <= 2**20 and 1 <= r <= 16 and 1 <= p <= 4):
            raise KeyFileError(f"{path}: scrypt parameters out of range")
        salt = base64.b64decode(doc["salt"], validate=True)
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["ciphertext"], validate=True)
        aad = _aad(str(doc["name"]), str(doc["key_id"]))
        key = _derive(passphrase, salt, n, r, p)
        return ChaCha20Poly1305(key).decrypt(nonce, sealed, aad).decode()
    except InvalidTag as e:
        raise KeyFileError(f"{path}: wrong passphrase or tampered file") from e
    except (KeyError, ValueError, TypeError, binascii.Error, UnicodeDecodeError) as e:
        raise KeyFileError(f"{path}: corrupt encrypted key file") from e


def load_passphrase(path: Path) -> bytes:
    """Read a passphrase file: its content without the trailing newline.

    Raises:
        KeyFileError: if the file is missing, empty, or readable by group or others.
    """
    data = _read_private_file(path, "passphrase file")
    passphrase = data.rstrip(b"\r\n")
    if not passphrase:
        raise KeyFileError(f"passphrase file {path} is empty")
    return passphrase


def _read_private_file(path: Path, what: str) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise KeyFileError(f"{what} {path} does not exist") from e
    except OSError as e:
        raise KeyFileError(f"{what} {path} cannot be read: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can "
            f"access it; run chmod 600 {path}"
        )
    if st.st_size > _MAX_KEY_FILE:
        raise KeyFileError(f"{what} {path} is larger than {_MAX_KEY_FILE} bytes")
    try:
        return path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{what} {path} cannot be read: {e}") from e


def load_signer(path: Path, *, passphrase: bytes | None = None) -> Signer:
    """Load a signing key file.

    Args:
        path: the key file.
        passphrase: needed when the file is encrypted.

    Returns:
        The signer.

    Raises:
        KeyFileError: if the file is missing, group/world accessible, corrupt, or cannot
            be decrypted.
    """
    data = _read_private_file(path, "key file")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise KeyFileError(f"key file {path} is not text") from e
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyFileError(f"key file {path} is corrupt JSON") from e
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise KeyFileError(f"key file {path} is not a veritally key file")
        text = _decrypt(path, doc, passphrase)
    try:
        return Signer.from_private_key_string(text)
    except (MalformedDataError, ValueError) as e:
        raise KeyFileError(f"key file {path} does not hold a valid private key") from e


def write_key_files(signer: Signer, out: Path, *, passphrase: bytes | None = None) -> Path:
    """Write ``out`` (mode 0600, never overwriting) and ``out.pub`` (the verifier key).

    Returns:
        The path of the public key file.

    Raises:
        FileExistsError: if ``out`` or ``out.pub`` already exists.
    """
    pub = out.with_name(out.name + ".pub")
    if pub.exists():
        raise FileExistsError(f"{pub} already exists")
    content = (
        _encrypt(signer, passphrase)
        if passphrase is not None
        else (signer.private_key_string() + "\n").encode()
    )
    # O_EXCL: never overwrite a key; 0o600 from creation, so it is never readable by others.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could only remove bits; make the mode exact
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    pub.write_text(signer.verifier().key_string() + "\n")
    return pub
