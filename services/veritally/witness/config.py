"""The witness's own key and the list of logs it witnesses, in its state directory.

* ``witness.key``: the cosigning key's private key string
  (``PRIVATE+KEY+<name>+<key id>+<base64(0x04 || seed)>``), mode 0600, never overwritten;
* ``witness.vkey``: its verifier key (type 0x04), what the witness's operator publishes;
* ``logs.json``: ``{"logs": [{"origin": "...", "keys": ["<log vkey>", ...]}, ...]}``, the
  logs it cosigns for, each with the Ed25519 keys (type 0x01) its checkpoints are signed
  with. Written by ``veritally witness add-log``; read once at start.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from veritally.witness.errors import WitnessConfigError
from veritally.witness.protocol import WitnessedLog
from veritally_client import MalformedDataError
from veritally_client.protocol import CosignatureSigner, Verifier, is_valid_key_name

__all__ = [
    "KEY_FILE",
    "LOGS_FILE",
    "MAX_KEYS_PER_LOG",
    "MAX_LOGS",
    "VKEY_FILE",
    "add_log",
    "create_key",
    "load_key",
    "load_logs",
]

KEY_FILE = "witness.key"
VKEY_FILE = "witness.vkey"
LOGS_FILE = "logs.json"
#: Most logs one witness is configured for: far more than one election authority runs,
#: and it bounds the start-up work and the memory of the records.
MAX_LOGS = 1000
#: Most keys per log: a log rotating its key lists two; a trust root at most a few.
MAX_KEYS_PER_LOG = 16
# Largest key file and logs file read, in bytes: a key string is ~100 bytes, a log entry
# ~150 bytes per key.
_MAX_KEY_FILE = 4096
_MAX_LOGS_FILE = 4 * 1024 * 1024


def create_key(state: Path, name: str) -> CosignatureSigner:
    """Generate the witness's key into ``state`` (``witness.key`` 0600, ``witness.vkey``).

    Raises:
        WitnessConfigError: if the name is not a valid key name or a key exists already.
    """
    if not is_valid_key_name(name):
        raise WitnessConfigError(f"invalid key name {name!r}: empty, or has spaces or '+'")
    state.mkdir(parents=True, exist_ok=True)
    signer = CosignatureSigner.generate(name)
    path = state / KEY_FILE
    try:
        # O_EXCL: never overwrite a key; 0o600 from creation, never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise WitnessConfigError(f"{path} exists: a witness keeps its key") from e
    try:
        os.fchmod(fd, 0o600)  # the umask could only remove bits; make the mode exact
        os.write(fd, (signer.private_key_string() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    (state / VKEY_FILE).write_text(signer.verifier().key_string() + "\n", encoding="ascii")
    return signer


def load_key(state: Path) -> CosignatureSigner:
    """Load ``state/witness.key``.

    Raises:
        WitnessConfigError: missing, readable by group or others, too large, or not a
            cosignature private key string.
    """
    path = state / KEY_FILE
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_KEY_FILE:
            raise WitnessConfigError(f"{path} is not a key file")
        if st.st_mode & 0o077:
            raise WitnessConfigError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: run chmod 600 {path}"
            )
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise WitnessConfigError(
            f"cannot read the witness key {path} (veritally witness keygen writes it): {e}"
        ) from e
    try:
        return CosignatureSigner.from_private_key_string(text)
    except MalformedDataError as e:
        raise WitnessConfigError(f"{path} does not hold a cosignature key: {e}") from e


def _read_logs_doc(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    try:
        if path.stat().st_size > _MAX_LOGS_FILE:
            raise WitnessConfigError(f"{path} is larger than {_MAX_LOGS_FILE} bytes")
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise WitnessConfigError(f"{path} is not readable JSON: {e}") from e
    logs = doc.get("logs") if isinstance(doc, dict) else None
    if not isinstance(logs, list) or not all(isinstance(e, dict) for e in logs):
        raise WitnessConfigError(f'{path} is not {{"logs": [{{"origin", "keys"}}, ...]}}')
    return logs


def _witnessed(entry: dict[str, object], path: Path) -> WitnessedLog:
    origin, keys = entry.get("origin"), entry.get("keys")
    if not isinstance(origin, str) or not origin or any(ord(c) < 0x20 for c in origin):
        raise WitnessConfigError(f"{path}: a log's origin is a non-empty line, got {origin!r}")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS_PER_LOG:
        raise WitnessConfigError(f"{path}: log {origin!r} has 1 to {MAX_KEYS_PER_LOG} keys")
    try:
        verifiers = tuple(Verifier.from_key_string(str(k)) for k in keys)
    except MalformedDataError as e:
        raise WitnessConfigError(f"{path}: a key of log {origin!r} is malformed: {e}") from e
    if len(set(verifiers)) != len(verifiers):
        raise WitnessConfigError(f"{path}: log {origin!r} lists a key twice")
    return WitnessedLog(origin=origin, keys=verifiers)


def load_logs(state: Path) -> dict[str, WitnessedLog]:
    """The logs witnessed, by origin (none if ``logs.json`` does not exist yet).

    Raises:
        WitnessConfigError: if the file is not a valid list of logs.
    """
    path = state / LOGS_FILE
    entries = _read_logs_doc(path)
    if len(entries) > MAX_LOGS:
        raise WitnessConfigError(f"{path} lists {len(entries)} logs, at most {MAX_LOGS}")
    logs: dict[str, WitnessedLog] = {}
    for entry in entries:
        log = _witnessed(entry, path)
        if log.origin in logs:
            raise WitnessConfigError(f"{path} lists log {log.origin!r} twice")
        logs[log.origin] = log
    return logs


def add_log(state: Path, origin: str, keys: list[str]) -> WitnessedLog:
    """Add (or replace the keys of) a witnessed log in ``logs.json``, atomically.

    A running witness reads the file at start: restart it to take the change.

    Raises:
        WitnessConfigError: a bad origin or key, or too many logs.
    """
    path = state / LOGS_FILE
    entries = [e for e in _read_logs_doc(path) if e.get("origin") != origin]
    entry: dict[str, object] = {"origin": origin, "keys": keys}
    log = _witnessed(entry, path)
    entries.append(entry)
    if len(entries) > MAX_LOGS:
        raise WitnessConfigError(f"at most {MAX_LOGS} logs per witness")
    state.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"logs": entries}, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # readers never see a partial file
    return log
