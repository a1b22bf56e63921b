"""Log leaf bytes: the one module that writes an acta record leaf and reads any leaf.

A leaf is a serialized ``LogLeaf``: the exact bytes hashed into the log, which verifiers
hash as received and never re-serialize (DESIGN: "the signed cut"). Ingest writes acta
record leaves here, publication reads them when it appends them, and the SDK's tally and
verifier read them back, so every field number comes from the generated descriptors in
one place; nothing here hard-codes a tag.

Writing (ingest, once per accepted acta):

* :func:`serialize_acta` serializes the acta once, deterministically, and hashes its
  content (the same bytes minus the provenance, the last field but the counts) from those
  bytes;
* :func:`leaf_bytes` wraps those bytes in an ``ActaRecord`` inside a ``LogLeaf`` without
  re-serializing them. Protobuf's deterministic serialization writes known fields in
  field-number order, so concatenating the encodings of consecutive fields is byte for
  byte what it would produce for the whole message; tests/unit/test_ingest_leaf.py checks
  exactly that against the library. When an acta carries unknown fields (written after
  the known ones), :func:`serialize_acta` takes the slow, obvious path instead.

Reading:

* :func:`parse_leaf` parses a leaf into the real ``LogLeaf`` type (the reference path);
* :func:`parse_leaf_view` parses it into a *view* of ``LogLeaf`` in which
  ``Acta.option_votes`` is ``repeated bytes``: protobuf then hands over each option's
  encoded bytes without building a message per option, which is most of what a recount
  of a national log saves (see ``veritally_client._tally``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2

__all__ = [
    "ActaRecordView",
    "ActaView",
    "LeafView",
    "encode_timestamp",
    "field_tag",
    "leaf_bytes",
    "parse_leaf",
    "parse_leaf_view",
    "serialize_acta",
    "varint",
]

ActaPb = acta_pb2.Acta
ActaRecordPb = acta_pb2.ActaRecord
LogLeafPb = acta_pb2.LogLeaf


# -- varints and tags ---------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Varints below 2^14 (one or two bytes: every length of an acta or a leaf, and early
# sequence numbers) are looked up, not computed: they are encoded several times per acta.
# Built byte by byte, not with _encode_varint, so that importing the SDK stays quick.
_SMALL_VARINTS: Final = tuple(bytes((i,)) for i in range(1 << 7)) + tuple(
    bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(1 << 7, 1 << 14)
)


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


# Wire types (protobuf encoding guide): 0 = varint, 2 = length-delimited. The leaf and
# results formats use no fixed-width field.
_WIRE_TYPES: Final = {
    FieldDescriptor.TYPE_BOOL: 0,
    FieldDescriptor.TYPE_ENUM: 0,
    FieldDescriptor.TYPE_INT32: 0,
    FieldDescriptor.TYPE_INT64: 0,
    FieldDescriptor.TYPE_UINT32: 0,
    FieldDescriptor.TYPE_UINT64: 0,
    FieldDescriptor.TYPE_STRING: 2,
    FieldDescriptor.TYPE_BYTES: 2,
    FieldDescriptor.TYPE_MESSAGE: 2,
}


def field_tag(message: Descriptor, name: str) -> bytes:
    """The tag (field number << 3 | wire type) of one field, as protobuf writes it.

    Args:
        message: the message's descriptor (``SomePb.DESCRIPTOR``).
        name: the field's name in it.

    Raises:
        KeyError: if the message has no such field.
        ValueError: if the field is fixed-width or a packed repeated scalar (none of the
            fields written by hand is).
    """
    field = message.fields_by_name[name]
    wire = _WIRE_TYPES.get(field.type)
    if wire is None or (wire == 0 and field.is_repeated):
        raise ValueError(f"{message.full_name}.{name} is not written by hand")
    return varint(field.number << 3 | wire)


# -- writing ------------------------------------------------------------------------------

_ACTA = ActaPb.DESCRIPTOR
_RECORD = ActaRecordPb.DESCRIPTOR
_ACTA_PROVENANCE: Final = field_tag(_ACTA, "provenance")
_ACTA_COUNTS: Final = field_tag(_ACTA, "counts")
# leaf_bytes writes the record's fields in this order: their field-number order
# (test_ingest_leaf.py holds the two equal).
_RECORD_ACTA_ID: Final = field_tag(_RECORD, "acta_id")
_RECORD_REVISION: Final = field_tag(_RECORD, "revision")
_RECORD_ACTA: Final = field_tag(_RECORD, "acta")
_RECORD_RECEIVED: Final = field_tag(_RECORD, "received_time")
_RECORD_COUNTED_TRUE: Final = field_tag(_RECORD, "counted") + varint(1)
_RECORD_REASON: Final = field_tag(_RECORD, "not_counted_reason")
_RECORD_SEQUENCE: Final = field_tag(_RECORD, "sequence")
_RECORD_REASON_TEXT: Final = field_tag(_RECORD, "reason")
_RECORD_APPROVED_BY: Final = field_tag(_RECORD, "approved_by")
_LEAF_ACTA_RECORD: Final = field_tag(LogLeafPb.DESCRIPTOR, "acta_record")


def serialize_acta(acta: acta_pb2.Acta) -> tuple[bytes, bytes]:
    """``(serialized acta, content digest)``: the deterministic serialization, and the
    SHA-256 of the acta without its provenance (as ingest's ``rules.content_digest``)."""
    full = acta.SerializeToString(deterministic=True)
    if not acta.HasField("provenance"):
        return full, hashlib.sha256(full).digest()
    provenance = acta.provenance.SerializeToString(deterministic=True)
    suffix = _ACTA_PROVENANCE + varint(len(provenance)) + provenance
    # The counts, the only field after the provenance, stay in the content.
    after = b""
    if acta.HasField("counts"):
        counts = acta.counts.SerializeToString(deterministic=True)
        after = _ACTA_COUNTS + varint(len(counts)) + counts
    if full.endswith(suffix + after):
        return full, hashlib.sha256(full[: len(full) - len(suffix) - len(after)] + after).digest()
    # Unknown fields follow: take the long way.
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

    Raises:
        ValueError: if ``revision``, ``not_counted_reason`` or ``sequence`` is negative.
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


# -- reading ------------------------------------------------------------------------------


def parse_leaf(leaf: bytes) -> acta_pb2.LogLeaf:
    """Parse a serialized ``LogLeaf`` into the real message type.

    Raises:
        MalformedDataError: if the bytes do not parse.
    """
    pb = LogLeafPb()
    try:
        pb.ParseFromString(leaf)
    except DecodeError as e:
        raise MalformedDataError(f"log leaf does not parse: {e}") from e
    return pb


def _view_classes() -> type:
    """``LogLeaf`` with ``Acta.option_votes`` as ``repeated bytes``, in the default pool.

    Same field numbers and wire types otherwise (copied from the generated descriptors),
    so a view parses every valid leaf to the same values (repeated elements are never
    merged, whatever their type); only the UTF-8 check of option ids is deferred, to the
    decoding of each option's bytes.
    """
    package = "veritally_client.internal.tally"
    pool = descriptor_pool.Default()
    name = f"{package}.LogLeafView"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto(
        name="veritally_client/internal/tally_view.proto",
        package=package,
        syntax="proto3",
        dependency=[acta_pb2.DESCRIPTOR.name],
    )
    renamed = {
        "Acta": "ActaView",
        "ActaRecord": "ActaRecordView",
        "LogLeaf": "LogLeafView",
    }
    # Fields of these types point at their views; every other type is the real one.
    retarget = {
        f".{acta_pb2.DESCRIPTOR.package}.{original}": f".{package}.{view}"
        for original, view in renamed.items()
    }
    for original, view in renamed.items():
        message = descriptor_pb2.DescriptorProto()
        acta_pb2.DESCRIPTOR.message_types_by_name[original].CopyToProto(message)
        message.name = view
        for field in message.field:
            if original == "Acta" and field.name == "option_votes":
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                field.ClearField("type_name")
            elif field.type_name in retarget:
                field.type_name = retarget[field.type_name]
        file.message_type.append(message)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


class ActaView(Protocol):
    """The acta of a :class:`LeafView` (options as their encoded bytes)."""

    casilla_id: str
    contest_id: str
    option_votes: Sequence[bytes]
    unregistered_votes: int
    unregistered_mark: acta_pb2.FieldMark.ValueType
    null_votes: int
    null_mark: acta_pb2.FieldMark.ValueType
    counts: acta_pb2.ActaCounts

    def HasField(self, field_name: str) -> bool:  # noqa: N802 - protobuf's name
        """Whether a message field is set."""


class ActaRecordView(Protocol):
    """The acta record of a :class:`LeafView`."""

    acta_id: str
    revision: int
    acta: ActaView
    received_time: Timestamp
    counted: bool
    not_counted_reason: acta_pb2.NotCountedReason.ValueType
    sequence: int
    reason: str
    approved_by: Sequence[str]


class LeafView(Protocol):
    """A parsed log leaf as :func:`parse_leaf_view` returns it."""

    @property
    def acta_record(self) -> ActaRecordView:
        """The acta record (options as their encoded bytes)."""

    @property
    def cut_record(self) -> acta_pb2.CutRecord:
        """The cut record (the real message type)."""

    def WhichOneof(self, oneof_group: str) -> str | None:  # noqa: N802 - protobuf's name
        """Which field of the ``kind`` oneof is set."""


_LEAF_VIEW: Final = _view_classes()


def parse_leaf_view(leaf: bytes) -> LeafView:
    """Parse a serialized ``LogLeaf`` for ``Tally.apply_view``.

    Raises:
        MalformedDataError: if the bytes do not parse.
    """
    try:
        return cast(LeafView, _LEAF_VIEW.FromString(leaf))  # type: ignore[attr-defined]  # a runtime-built message class
    except DecodeError as e:
        raise MalformedDataError(f"log leaf does not parse: {e}") from e
