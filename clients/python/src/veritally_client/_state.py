"""Trusted state of a client, persisted atomically per log origin.

The state is what the client has verified so far: the last verified signed checkpoint
(exact note bytes), its tree size and root hash, the cut number and the digest of the
election definition the results were bound to; and, for the stall check, the cut's
ingest figure and since which cut the cuts have been behind ingest without covering a new
record; whether the cut was final; the trust root it was verified under (version and
SHA-256 of the exact document), which binds the state to one publisher; and the results
digest its cut record signs, which tells a cut with new results from a heartbeat. Those
keys are optional in the file: a state written before they existed loads with none of
them, and a client that does not know them ignores them. It is
written only by the client, and only after every check on a new cut has passed
(python-tuf writes metadata the same way: verify, then persist).

One client at a time: a :class:`StateStore` holds an exclusive ``flock`` on the origin's
``lock`` file from its creation until :meth:`StateStore.close` (or the process ends), so a
second client on the same directory, in this process or another, is refused with
:class:`~veritally_client.StateInUseError` instead of overwriting the first one's state.

Writes are atomic: a temporary file in the same directory, ``fsync``, ``os.replace`` and
an ``fsync`` of the directory, so a crash leaves either the old state or the new one.

The same directory keeps an evidence store: when a publisher equivocates (two different
signed roots for one tree size, or a signed tree that is provably not an extension of a
verified one) both signed checkpoints are kept, and :meth:`StateStore.export_evidence`
writes them as JSON that anyone holding the trust root can check.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veritally_client._errors import MalformedDataError, StateInUseError

__all__ = ["EVIDENCE_FORMAT", "ForkEvidence", "StateStore", "TrustedState"]

#: Format tag of exported evidence documents.
EVIDENCE_FORMAT = "veritally-fork-evidence/v1"
_STATE_FORMAT = "veritally-client-state/v1"
_HASH_SIZE = 32  # bytes of a SHA-256 digest


@dataclass(frozen=True, kw_only=True)
class TrustedState:
    """The last verified cut of one log, as persisted.

    Attributes:
        origin: the log's checkpoint origin line.
        checkpoint: the exact signed note bytes that were verified.
        tree_size: its tree size.
        root_hash: its root hash (32 bytes).
        cut_number: the cut number of its cut record.
        definition_sha256: SHA-256 of the election definition its results were bound to.
        ingest_records: its cut record's ingest figure (None if it had none).
        stall_since: the cut time of the first verified cut that was behind ingest at
            the same acta records as this one, or None if this cut is not behind.
        stall_since_cut: that cut's number (0 when ``stall_since`` is None).
        final: whether its results were the night's final ones (nothing may follow).
        trust_root_version: the version of the trust root it was verified under (0 in a
            state written before the binding existed).
        trust_root_sha256: SHA-256 of that trust root's exact document (None likewise).
        results_sha256: the results digest its cut record signs (None in a state written
            before it was kept), to tell a cut with new results from a heartbeat.
    """

    origin: str
    checkpoint: bytes
    tree_size: int
    root_hash: bytes
    cut_number: int
    definition_sha256: bytes
    ingest_records: int | None = None
    stall_since: dt.datetime | None = None
    stall_since_cut: int = 0
    final: bool = False
    trust_root_version: int = 0
    trust_root_sha256: bytes | None = None
    results_sha256: bytes | None = None

    def __post_init__(self) -> None:
        if self.tree_size < 1 or self.cut_number < 1:
            raise ValueError("a trusted state has a positive tree size and cut number")
        if len(self.root_hash) != _HASH_SIZE or len(self.definition_sha256) != _HASH_SIZE:
            raise ValueError("root_hash and definition_sha256 are 32-byte digests")
        if self.ingest_records is not None and self.ingest_records < self.acta_records:
            raise ValueError("ingest_records is below the acta records of the cut")
        if (self.stall_since is None) != (self.stall_since_cut == 0):
            raise ValueError("stall_since and stall_since_cut are set together")
        if self.stall_since is not None and self.stall_since.tzinfo is None:
            raise ValueError("stall_since must be timezone-aware")
        if self.stall_since_cut > self.cut_number:
            raise ValueError("stall_since_cut is after the cut")
        if (self.trust_root_version == 0) != (self.trust_root_sha256 is None):
            raise ValueError("trust_root_version and trust_root_sha256 are set together")
        if self.trust_root_sha256 is not None and len(self.trust_root_sha256) != _HASH_SIZE:
            raise ValueError("trust_root_sha256 is a 32-byte digest")
        if self.results_sha256 is not None and len(self.results_sha256) != _HASH_SIZE:
            raise ValueError("results_sha256 is a 32-byte digest")
        if self.trust_root_version < 0:
            raise ValueError("trust_root_version is not negative")

    @property
    def acta_records(self) -> int:
        """Acta records the cut covers (a cut's tree holds them and one record per cut)."""
        return self.tree_size - self.cut_number

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON-able dict (binary fields in base64)."""
        doc: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "origin": self.origin,
            "checkpoint": base64.b64encode(self.checkpoint).decode("ascii"),
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode("ascii"),
            "cut_number": self.cut_number,
            "definition_sha256": self.definition_sha256.hex(),
        }
        # Optional keys (see the module docstring): absent when not set.
        if self.ingest_records is not None:
            doc["ingest_records"] = self.ingest_records
        if self.stall_since is not None:
            doc["stall_since"] = self.stall_since.isoformat()
            doc["stall_since_cut"] = self.stall_since_cut
        if self.final:
            doc["final"] = True
        if self.trust_root_sha256 is not None:
            doc["trust_root_version"] = self.trust_root_version
            doc["trust_root_sha256"] = self.trust_root_sha256.hex()
        if self.results_sha256 is not None:
            doc["results_sha256"] = self.results_sha256.hex()
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrustedState:
        """Parse a dict written by :meth:`to_json`.

        Raises:
            MalformedDataError: if the document is not a state of this format.
        """
        try:
            if data["format"] != _STATE_FORMAT:
                raise MalformedDataError(f"state format is {data['format']!r}")
            return cls(
                origin=str(data["origin"]),
                checkpoint=base64.b64decode(data["checkpoint"], validate=True),
                tree_size=int(data["tree_size"]),
                root_hash=base64.b64decode(data["root_hash"], validate=True),
                cut_number=int(data["cut_number"]),
                definition_sha256=bytes.fromhex(data["definition_sha256"]),
                ingest_records=(int(data["ingest_records"]) if "ingest_records" in data else None),
                stall_since=(
                    dt.datetime.fromisoformat(str(data["stall_since"]))
                    if "stall_since" in data
                    else None
                ),
                stall_since_cut=int(data.get("stall_since_cut", 0)),
                final=data.get("final", False) is True,
                trust_root_version=int(data.get("trust_root_version", 0)),
                trust_root_sha256=(
                    bytes.fromhex(str(data["trust_root_sha256"]))
                    if "trust_root_sha256" in data
                    else None
                ),
                results_sha256=(
                    bytes.fromhex(str(data["results_sha256"])) if "results_sha256" in data else None
                ),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise MalformedDataError(f"unreadable trusted state: {e}") from e


@dataclass(frozen=True, kw_only=True)
class ForkEvidence:
    """Two signed checkpoints of one origin that cannot both be true.

    Attributes:
        kind: ``"same-size"`` (one tree size, two roots), ``"non-extending"`` (a larger
            tree whose consistency proof shows a different prefix) or ``"same-cut"``
            (one cut number in two different signed trees).
        origin: the log origin.
        first: the signed note verified earlier (exact bytes).
        second: the conflicting signed note (exact bytes).
        consistency_proof: for ``"non-extending"``, the proof hashes between the two
            sizes (each 32 bytes) that lead to the larger root but not to the smaller.
    """

    kind: str
    origin: str
    first: bytes
    second: bytes
    consistency_proof: tuple[bytes, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The evidence as a JSON-able dict; notes are kept as their exact UTF-8 text."""
        return {
            "kind": self.kind,
            "origin": self.origin,
            "first": self.first.decode("utf-8"),
            "second": self.second.decode("utf-8"),
            "consistency_proof": [h.hex() for h in self.consistency_proof],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ForkEvidence:
        """Parse one entry written by :meth:`to_json`.

        Raises:
            MalformedDataError: if it is not well formed.
        """
        try:
            return cls(
                kind=str(data["kind"]),
                origin=str(data["origin"]),
                first=str(data["first"]).encode("utf-8"),
                second=str(data["second"]).encode("utf-8"),
                consistency_proof=tuple(bytes.fromhex(h) for h in data["consistency_proof"]),
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise MalformedDataError(f"unreadable evidence: {e}") from e


def encode_evidence(items: Sequence[ForkEvidence]) -> bytes:
    """Serialize evidence entries as the exported JSON document."""
    doc = {"format": EVIDENCE_FORMAT, "evidence": [e.to_json() for e in items]}
    return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8") + b"\n"


def decode_evidence(data: bytes) -> list[ForkEvidence]:
    """Parse an exported evidence document.

    Raises:
        MalformedDataError: if it is not an evidence document of this format.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedDataError(f"evidence is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != EVIDENCE_FORMAT:
        raise MalformedDataError(f"evidence document is not {EVIDENCE_FORMAT}")
    entries = doc.get("evidence")
    if not isinstance(entries, list):
        raise MalformedDataError("evidence document has no evidence list")
    return [ForkEvidence.from_json(e) for e in entries]


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _lock(path: Path) -> int:
    """An exclusive flock on ``path`` (created), with this process id written in it.

    Raises:
        StateInUseError: another open descriptor holds the lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another client"
        raise StateInUseError(
            f"the state directory {path.parent.parent} is in use by {who}: every client "
            "needs a state directory of its own (--state-dir)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


class StateStore:
    """Trusted state and fork evidence of one log origin, in a directory.

    Layout: ``<state_dir>/<sha256(origin) hex, 16 chars>/state.json`` and
    ``.../evidence.json``. The origin is hashed into the directory name so that any
    origin line is a safe path; the origin itself is inside the files and checked on load.
    """

    def __init__(self, state_dir: Path, *, origin: str) -> None:
        """Open (and create) the state directory of ``origin`` and lock it.

        Args:
            state_dir: the client's state directory.
            origin: the log origin of the trust root.

        Raises:
            StateInUseError: another live store (client) holds the directory.
            OSError: the directory cannot be created or its lock file opened.
        """
        self._origin = origin
        digest = hashlib.sha256(origin.encode("utf-8")).hexdigest()[:16]
        self._dir = Path(state_dir) / digest
        self._dir.mkdir(parents=True, exist_ok=True)
        self._state_path = self._dir / "state.json"
        self._evidence_path = self._dir / "evidence.json"
        self._lock_fd: int | None = _lock(self._dir / "lock")

    def close(self) -> None:
        """Release the directory for another client (idempotent)."""
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases its flock

    def __del__(self) -> None:
        self.close()

    @property
    def directory(self) -> Path:
        """Where this origin's files are."""
        return self._dir

    def load(self) -> TrustedState | None:
        """The persisted trusted state, or None before the first verified cut.

        Raises:
            MalformedDataError: if the state file is corrupt or of another origin.
        """
        try:
            raw = self._state_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise MalformedDataError(f"state file {self._state_path} is corrupt") from e
        if not isinstance(doc, dict):
            raise MalformedDataError(f"state file {self._state_path} is corrupt")
        state = TrustedState.from_json(doc)
        if state.origin != self._origin:
            raise MalformedDataError(
                f"state file is for origin {state.origin!r}, expected {self._origin!r}"
            )
        return state

    def save(self, state: TrustedState) -> None:
        """Persist ``state`` atomically. Call only after every check on it has passed.

        Raises:
            ValueError: if the state is of another origin (a caller bug).
        """
        if state.origin != self._origin:
            raise ValueError(f"state of origin {state.origin!r} saved in {self._origin!r}")
        data = json.dumps(state.to_json(), indent=2, sort_keys=True).encode("utf-8")
        _atomic_write(self._state_path, data + b"\n")

    def evidence(self) -> list[ForkEvidence]:
        """Every piece of fork evidence recorded so far, oldest first.

        Raises:
            MalformedDataError: if the evidence file is corrupt.
        """
        try:
            return decode_evidence(self._evidence_path.read_bytes())
        except FileNotFoundError:
            return []

    def record_evidence(self, item: ForkEvidence) -> None:
        """Add ``item`` to the evidence store (atomically; duplicates are kept once).

        Raises:
            MalformedDataError: if the existing evidence file is corrupt.
        """
        items = self.evidence()
        if item not in items:
            items.append(item)
            _atomic_write(self._evidence_path, encode_evidence(items))

    def trust_root_documents(self, *, after_version: int) -> list[bytes]:
        """Stored trust root documents of versions above ``after_version``, in order
        (untrusted: the caller verifies each as an update of the one before)."""
        docs = []
        version = after_version + 1
        while (path := self._dir / f"trust-root-v{version}.binpb").exists():
            docs.append(path.read_bytes())
            version += 1
        return docs

    def save_trust_root(self, version: int, document: bytes) -> None:
        """Keep a verified trust root document (atomically)."""
        _atomic_write(self._dir / f"trust-root-v{version}.binpb", document)

    def export_evidence(self) -> bytes:
        """The evidence store as a JSON document that others can check.

        Raises:
            MalformedDataError: if the evidence file is corrupt.
        """
        return encode_evidence(self.evidence())
