"""The add-checkpoint request of c2sp.org/tlog-witness and the rules a witness applies.

Pure: bytes, the configured logs and the recorded state in, a checkpoint to cosign or a
:class:`RefusalError` out; no IO, no clock, no HTTP (the server maps :class:`Code` to status
codes). The request body is::

    old <size>\\n
    <base64 hash>\\n            (0 to 63 consistency proof lines)
    \\n
    <checkpoint note>          (text, blank line, signature lines)

Checking a request, in the order of the spec (each step's refusal in brackets):

1. parse the body: the ``old`` line (ASCII decimal, no leading zeroes), at most 63 proof
   lines of canonical base64 of 32 bytes, an empty line, then the note [MALFORMED];
2. the checkpoint's origin must be a configured log [UNKNOWN_LOG];
3. the note must carry a valid signature by one of that log's keys, and none that fails
   (signed-note) [FORBIDDEN]; a note that is not a note is [MALFORMED];
4. the note text must be a checkpoint (extension lines allowed: they are cosigned, but no
   statement is made about them) [MALFORMED];
5. the old size must not exceed the checkpoint's size [MALFORMED];
6. the old size must be the size of the latest checkpoint cosigned for that log, or 0 if
   none [CONFLICT, with that size];
7. a checkpoint of size 0 has the empty tree's root [BAD_PROOF];
8. from old size 0 the proof is empty; from the recorded size the proof must lead from the
   recorded root to the new one; equal sizes need equal roots [BAD_PROOF] (two signed
   roots for one size are kept as evidence: :attr:`RefusalError.equivocation`).

The caller then cosigns, persists the new size and root, and only then answers; steps
6 to the persistence run under one lock, so that two requests cannot both pass step 6
and roll the record back (the race the spec describes).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from veritally.witness.errors import WitnessError
from veritally_client import (
    BadProofError,
    BadSignatureError,
    MalformedDataError,
    UnknownKeyError,
)
from veritally_client.protocol import (
    EMPTY_ROOT,
    HASH_SIZE,
    Checkpoint,
    Verifier,
    open_note,
    parse_checkpoint,
    verify_consistency,
)

__all__ = [
    "MAX_PROOF_LINES",
    "AddCheckpoint",
    "Code",
    "LogRecord",
    "RefusalError",
    "WitnessedLog",
    "check_add_checkpoint",
    "format_add_checkpoint",
    "parse_add_checkpoint",
]

#: Most consistency proof lines (c2sp.org/tlog-witness: a client MUST NOT send more than
#: 63; a proof between trees below 2**64 leaves never needs more).
MAX_PROOF_LINES = 63
_MAX_SIZE = 2**64 - 1
_OLD_RE = re.compile(rb"old (0|[1-9][0-9]{0,19})")


class Code(enum.Enum):
    """Why a request is refused; the server maps each to the spec's HTTP status."""

    MALFORMED = "malformed"  # 400
    FORBIDDEN = "forbidden"  # 403
    UNKNOWN_LOG = "unknown log"  # 404
    CONFLICT = "conflict"  # 409
    BAD_PROOF = "bad proof"  # 422


class RefusalError(WitnessError):
    """A request the witness does not cosign.

    Attributes:
        code: the reason.
        size: with :attr:`Code.CONFLICT`, the size of the latest checkpoint cosigned.
        origin: the log's origin, once known (for the request log).
        equivocation: when the log signed two roots for one tree size, its two signed
            notes (the one cosigned before, the one refused): proof of misbehaviour that
            anyone with the log's key can check.
    """

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        size: int | None = None,
        origin: str | None = None,
        equivocation: tuple[bytes, bytes] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.size = size
        self.origin = origin
        self.equivocation = equivocation


@dataclass(frozen=True)
class WitnessedLog:
    """A log this witness cosigns for: its origin and the keys that sign its checkpoints.

    Attributes:
        origin: the checkpoint origin line.
        keys: the log's verifier keys (Ed25519 signed-note keys, type 0x01).
    """

    origin: str
    keys: tuple[Verifier, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError(f"log {self.origin!r} needs at least one key")


@dataclass(frozen=True)
class LogRecord:
    """What the witness recorded for a log: the latest checkpoint it cosigned.

    Attributes:
        size: its tree size.
        root_hash: its root hash.
        note: the checkpoint note as cosigned (the log's signatures and the witness's
            cosignature), served to monitors.
    """

    size: int
    root_hash: bytes
    note: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.size <= _MAX_SIZE or len(self.root_hash) != HASH_SIZE:
            raise ValueError("a log record has a 64-bit size and a 32-byte root hash")


@dataclass(frozen=True)
class AddCheckpoint:
    """A parsed add-checkpoint request body (not yet checked against anything).

    Attributes:
        old_size: the size of the checkpoint the client believes the witness holds.
        proof: the consistency proof from ``old_size`` to the checkpoint's size.
        note: the signed checkpoint note, exact bytes.
    """

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    @property
    def origin(self) -> str:
        """The note's first line, unverified (to find the log's keys).

        Raises:
            RefusalError: MALFORMED if the line is not UTF-8.
        """
        try:
            return self.note.split(b"\n", 1)[0].decode("utf-8")
        except UnicodeDecodeError as e:
            raise RefusalError(Code.MALFORMED, "the checkpoint's origin line is not UTF-8") from e


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: bytes) -> bytes:
    """The request body a log sends (the writer of the format :func:`parse_add_checkpoint`
    reads).

    Raises:
        ValueError: a negative size, more than 63 proof hashes or one not 32 bytes.
    """
    if not 0 <= old_size <= _MAX_SIZE:
        raise ValueError(f"old size {old_size} out of range")
    if len(proof) > MAX_PROOF_LINES or any(len(h) != HASH_SIZE for h in proof):
        raise ValueError(f"a proof has at most {MAX_PROOF_LINES} hashes of {HASH_SIZE} bytes")
    lines = [f"old {old_size}\n".encode()]
    lines += [base64.b64encode(h) + b"\n" for h in proof]
    return b"".join(lines) + b"\n" + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an add-checkpoint request body (step 1).

    Raises:
        RefusalError: MALFORMED, saying what is wrong.
    """
    header, sep, note = body.partition(b"\n\n")
    if not sep:
        raise RefusalError(Code.MALFORMED, "no empty line between the old size and the checkpoint")
    lines = header.split(b"\n")
    old = _OLD_RE.fullmatch(lines[0])
    if old is None:
        raise RefusalError(
            Code.MALFORMED, "the first line is not 'old <size>' in canonical decimal"
        )
    old_size = int(old.group(1))
    if old_size > _MAX_SIZE:
        raise RefusalError(Code.MALFORMED, "the old size does not fit in 64 bits")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise RefusalError(
            Code.MALFORMED, f"{len(proof_lines)} proof lines, at most {MAX_PROOF_LINES}"
        )
    proof = tuple(_proof_hash(line) for line in proof_lines)
    return AddCheckpoint(old_size=old_size, proof=proof, note=note)


def _proof_hash(line: bytes) -> bytes:
    try:
        value = base64.b64decode(line, validate=True)
    except binascii.Error as e:
        raise RefusalError(Code.MALFORMED, "a proof line is not base64") from e
    if len(value) != HASH_SIZE or base64.b64encode(value) != line:
        raise RefusalError(
            Code.MALFORMED, f"a proof line is not canonical base64 of {HASH_SIZE} bytes"
        )
    return value


def check_add_checkpoint(
    request: AddCheckpoint,
    logs: Mapping[str, WitnessedLog],
    records: Mapping[str, LogRecord],
) -> tuple[Checkpoint, str]:
    """Apply steps 2 to 8 to a parsed request.

    Args:
        request: the parsed body.
        logs: the configured logs, by origin.
        records: what was cosigned so far, by origin.

    Returns:
        The checkpoint to cosign and its exact note text (extension lines included).

    Raises:
        RefusalError: the code and reason of the first rule the request breaks.
    """
    # (2) a configured log
    log = logs.get(request.origin)
    if log is None:
        raise RefusalError(Code.UNKNOWN_LOG, f"this witness does not witness {request.origin!r}")
    origin = log.origin
    # (3) signed by the log
    try:
        text = open_note(request.note, log.keys).text
    except (BadSignatureError, UnknownKeyError) as e:
        raise RefusalError(Code.FORBIDDEN, str(e), origin=origin) from e
    except MalformedDataError as e:
        raise RefusalError(Code.MALFORMED, f"not a signed note: {e}", origin=origin) from e
    # (4) a checkpoint
    try:
        checkpoint = parse_checkpoint(text, allow_extension_lines=True)
    except MalformedDataError as e:
        raise RefusalError(Code.MALFORMED, f"not a checkpoint: {e}", origin=origin) from e
    old_size = request.old_size
    # (5) the old size is not beyond the checkpoint
    if old_size > checkpoint.size:
        raise RefusalError(
            Code.MALFORMED,
            f"old size {old_size} is larger than the checkpoint's size {checkpoint.size}",
            origin=origin,
        )
    # (6) the old size is what this witness cosigned last
    record = records.get(origin)
    recorded = record.size if record is not None else 0
    if old_size != recorded:
        raise RefusalError(
            Code.CONFLICT,
            f"old size {old_size}, but the latest checkpoint cosigned has size {recorded}",
            size=recorded,
            origin=origin,
        )
    # (7) the empty tree has the empty root
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
        raise RefusalError(
            Code.BAD_PROOF, "a checkpoint of size 0 has the empty tree's root", origin=origin
        )
    # (8) consistency with what was cosigned
    if old_size == 0:
        if request.proof:
            raise RefusalError(
                Code.BAD_PROOF, "a proof from the empty tree must be empty", origin=origin
            )
    else:
        assert record is not None  # old_size == recorded > 0
        if checkpoint.size == old_size and checkpoint.root_hash != record.root_hash:
            raise RefusalError(
                Code.BAD_PROOF,
                f"the log signed two root hashes for tree size {old_size}: it equivocated",
                origin=origin,
                equivocation=(record.note, request.note),
            )
        try:
            verify_consistency(
                size1=old_size,
                size2=checkpoint.size,
                root1=record.root_hash,
                root2=checkpoint.root_hash,
                proof=list(request.proof),
            )
        except BadProofError as e:
            raise RefusalError(
                Code.BAD_PROOF,
                f"not consistent with the checkpoint of size {old_size} cosigned: {e}",
                origin=origin,
            ) from e
    return checkpoint, text
