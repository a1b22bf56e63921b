"""The bytes ingest logs, built without re-serializing the acta.

Ingest serializes every accepted acta once (deterministically) and reuses those bytes:
to hash its content (the same bytes minus the provenance, which is the last field) and
inside the log leaf (an ``ActaRecord`` wrapping it, wrapped in a ``LogLeaf``). Protobuf's
deterministic serialization writes known fields in field-number order, so concatenating
the encodings of consecutive fields is byte-for-byte what it would produce for the whole
message; tests/unit/test_ingest_leaf.py checks exactly that against the library. When an
acta carries unknown fields (written after the known ones), the slow, obvious path is
taken instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from veritally_client.protocol.pb import acta_pb2

ActaPb = acta_pb2.Acta

# Tags (field number << 3 | wire type): 2 = length-delimited, 0 = varint.
_ACTA_PROVENANCE: Final = bytes([9 << 3 | 2])
_RECORD_ACTA_ID: Final = bytes([1 << 3 | 2])
_RECORD_REVISION: Final = bytes([2 << 3 | 0])
_RECORD_ACTA: Final = bytes([3 << 3 | 2])
_RECORD_RECEIVED: Final = bytes([4 << 3 | 2])
_RECORD_COUNTED_TRUE: Final = bytes([5 << 3 | 0, 1])
_RECORD_REASON: Final = bytes([6 << 3 | 0])
_RECORD_SEQUENCE: Final = bytes([7 << 3 | 0])
_RECORD_REASON_TEXT: Final = bytes([8 << 3 | 2])
_RECORD_APPROVED_BY: Final = bytes([9 << 3 | 2])
_LEAF_ACTA_RECORD: Final = bytes([1 << 3 | 2])


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints below 2^14 (one or two bytes: every length of an acta or a leaf, and early
# sequence numbers) are looked up, not computed: they are encoded several times per acta.
_SMALL_VARINTS: Final = tuple(_encode_varint(i) for i in range(1 << 14))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer.

    Raises:
        ValueError: if ``value`` is negative.
    """
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    if value < 0:
        raise ValueError(f"varint of a negative number {value}")
    return _encode_varint(value)


def serialize_acta(acta: ActaPb) -> tuple[bytes, bytes]:
    """``(serialized acta, content digest)``: the deterministic serialization, and the
    SHA-256 of the acta without its provenance (see ``rules.content_digest``)."""
    full = acta.SerializeToString(deterministic=True)
    if not acta.HasField("provenance"):
        return full, hashlib.sha256(full).digest()
    provenance = acta.provenance.SerializeToString(deterministic=True)
    suffix = _ACTA_PROVENANCE + varint(len(provenance)) + provenance
    if full.endswith(suffix):
        return full, hashlib.sha256(full[: len(full) - len(suffix)]).digest()
    # Unknown fields follow the provenance: take the long way.
    content = ActaPb()
    content.CopyFrom(acta)
    content.ClearField("provenance")
    return full, hashlib.sha256(content.SerializeToString(deterministic=True)).digest()


def encode_timestamp(ts: Timestamp) -> bytes:
    """The ``received_time`` field of an ActaRecord, encoded (computed once per batch)."""
    body = ts.SerializeToString(deterministic=True)
    return _RECORD_RECEIVED + varint(len(body)) + body


def leaf_bytes(
    *,
    acta_id: str,
    revision: int,
    acta: bytes,
    received_time: bytes,
    counted: bool,
    not_counted_reason: int,
    sequence: int,
    reason: str = "",
    approved_by: Sequence[str] = (),
) -> bytes:
    """``LogLeaf(acta_record=ActaRecord(...))`` serialized deterministically.

    Args:
        acta_id: the record's acta id.
        revision: its revision (1 or more).
        acta: the acta, serialized deterministically.
        received_time: the output of :func:`encode_timestamp`.
        counted: whether it counts.
        not_counted_reason: a ``NotCountedReason`` value.
        sequence: its position in the log.
        reason: why a correction or resolution was made ("" for a capture).
        approved_by: the SPIFFE IDs of the operators who approved it, in order.
    """
    aid = acta_id.encode()
    parts = [_RECORD_ACTA_ID, varint(len(aid)), aid]
    if revision:
        parts += [_RECORD_REVISION, varint(revision)]
    parts += [_RECORD_ACTA, varint(len(acta)), acta, received_time]
    if counted:
        parts.append(_RECORD_COUNTED_TRUE)
    if not_counted_reason:
        parts += [_RECORD_REASON, varint(not_counted_reason)]
    if sequence:
        parts += [_RECORD_SEQUENCE, varint(sequence)]
    if reason:
        text = reason.encode()
        parts += [_RECORD_REASON_TEXT, varint(len(text)), text]
    for approver in approved_by:
        text = approver.encode()
        parts += [_RECORD_APPROVED_BY, varint(len(text)), text]
    record = b"".join(parts)
    return _LEAF_ACTA_RECORD + varint(len(record)) + record
