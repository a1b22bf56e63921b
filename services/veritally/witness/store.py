"""The witness's durable state: per log, the latest checkpoint it cosigned.

Layout of the state directory::

    STATE/
      witness.key      the cosigning key (private key string, mode 0600)      keep
      witness.vkey     its verifier key, to give to the logs and their users  keep
      logs.json        the logs witnessed: origin and verifier keys           keep
      lock             held (flock) by the one process serving this directory
      logs/<h>.json    h = hex SHA-256 of the origin: {"origin", "size",
                       "root_hash", "note"} of the latest checkpoint cosigned
      evidence/<h>-<d>.json  two checkpoints the log signed for one size
                       ({"origin", "cosigned", "refused"}, the signed notes); d: a
                       digest of both, so a repeated request adds no file

A record is written to a temporary file, fsynced, renamed over the old one and the
directory fsynced, before the cosignature leaves the process: after a crash (kill -9,
power loss) the file holds either the old record or the new one, and a cosignature was
only ever given for a record on disk. A record that does not parse stops the witness at
start (:class:`WitnessStateError`): starting from nothing would let it cosign a fork of
what it cosigned before.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
from pathlib import Path
from types import TracebackType

from veritally.witness.errors import WitnessStateError
from veritally.witness.protocol import LogRecord

__all__ = ["MAX_EVIDENCE_FILES", "StateStore", "origin_hash"]

#: Most evidence files kept: each needs a valid signature by a witnessed log, so only
#: a log can add them, and one equivocation is enough to prove; the bound keeps a
#: misbehaving log from filling the disk.
MAX_EVIDENCE_FILES = 100
# Largest record file read, in bytes: the note of a checkpoint with the most signatures
# a note may carry (100 ML-DSA cosignatures, ~3.3 kB each in base64) stays under this.
_MAX_RECORD_BYTES = 512 * 1024


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of an origin (record file name, monitoring URL)."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


class StateStore:
    """The records of one state directory, held by this process alone.

    Use as a context manager: entering takes the directory's lock and loads every record;
    leaving releases the lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._records: dict[str, LogRecord] = {}
        self._lock_fd: int | None = None

    @property
    def records(self) -> dict[str, LogRecord]:
        """The records loaded or written, by origin (do not modify: use :meth:`put`)."""
        return self._records

    def __enter__(self) -> StateStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Take the lock and load the records.

        Raises:
            WitnessStateError: another process holds the directory, or a record is
                corrupt.
        """
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise WitnessStateError(
                f"another witness process serves {self.root}: one process per state directory"
            ) from e
        self._lock_fd = fd
        try:
            self._records = self._load()
        except WitnessStateError:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _load(self) -> dict[str, LogRecord]:
        records: dict[str, LogRecord] = {}
        for path in sorted((self.root / "logs").glob("*.json")):
            origin, record = _read_record(path)
            records[origin] = record
        return records

    def put(self, origin: str, record: LogRecord) -> None:
        """Write a log's record durably (temporary file, fsync, rename, fsync directory).

        Raises:
            RuntimeError: if the store is not open (a caller bug).
            OSError: if the disk refuses; the old record is then still in place.
        """
        if self._lock_fd is None:
            raise RuntimeError("the state store is not open")
        directory = self.root / "logs"
        path = directory / f"{origin_hash(origin)}.json"
        doc = {
            "origin": origin,
            "size": record.size,
            "root_hash": base64.b64encode(record.root_hash).decode("ascii"),
            "note": record.note.decode("utf-8"),
        }
        _write_atomically(path, (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
        self._records[origin] = record

    def put_evidence(self, origin: str, cosigned: bytes, refused: bytes) -> Path | None:
        """Keep two checkpoints the log signed for one size (see the module docstring).

        Returns:
            The evidence file, or None when :data:`MAX_EVIDENCE_FILES` are kept already.

        Raises:
            OSError: if the disk refuses.
        """
        directory = self.root / "evidence"
        directory.mkdir(exist_ok=True)
        digest = hashlib.sha256(cosigned + b"\0" + refused).hexdigest()[:16]
        path = directory / f"{origin_hash(origin)}-{digest}.json"
        if path.exists():
            return path
        if sum(1 for _ in directory.glob("*.json")) >= MAX_EVIDENCE_FILES:
            return None
        doc = {
            "origin": origin,
            "cosigned": cosigned.decode("utf-8"),
            "refused": refused.decode("utf-8"),
        }
        _write_atomically(path, (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8"))
        return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename, and
    fsync the directory, so that after a crash ``path`` holds the old or the new bytes."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss
    finally:
        os.close(dir_fd)


def _read_record(path: Path) -> tuple[str, LogRecord]:
    try:
        if path.stat().st_size > _MAX_RECORD_BYTES:
            raise WitnessStateError(f"{path} is larger than {_MAX_RECORD_BYTES} bytes")
        doc = json.loads(path.read_bytes())
        origin = doc["origin"]
        if not isinstance(origin, str) or path.stem != origin_hash(origin):
            raise WitnessStateError(f"{path} is not the record of the origin it names")
        size = doc["size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise WitnessStateError(f"{path}: the size is not an integer")
        root = base64.b64decode(doc["root_hash"], validate=True)
        note = str(doc["note"]).encode("utf-8")
        return origin, LogRecord(size=size, root_hash=root, note=note)
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as e:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise WitnessStateError(f"witness record {path} is corrupt: {e}") from e
