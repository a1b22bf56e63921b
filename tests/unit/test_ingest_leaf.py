"""The hand-assembled leaf and content digest of veritally_client._leaf (the one writer
of the acta record leaf ingest logs) are byte for byte what the protobuf library produces
(deterministic serialization), and its readers give back what it wrote."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from tests.write_path_support import make_acta, small_election
from veritally.ingest import rules
from veritally_client import _leaf as leaf
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2

ELECTION = small_election()
CASILLAS = [c.id for c in ELECTION.casillas]


@st.composite
def _actas(draw: st.DrawFn) -> acta_pb2.Acta:
    casilla = draw(st.sampled_from(CASILLAS))
    contest = draw(st.sampled_from(ELECTION.contest_ids))
    n = len(ELECTION.option_ids(contest))
    votes = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
    acta = make_acta(
        ELECTION,
        casilla,
        contest,
        votes,
        unregistered=draw(st.integers(0, 300)),
        null=draw(st.integers(0, 2**20)),
        operator=draw(st.text(max_size=20)),
    )
    choice = draw(st.integers(0, 3))
    if choice == 0:
        acta.ClearField("provenance")
    elif choice == 1:
        acta.provenance.Clear()
        acta.provenance.SetInParent()  # present but empty
    elif choice == 2:
        acta.provenance.captured_time.seconds = draw(st.integers(0, 2**33))
    if draw(st.booleans()):
        # An unknown field (number 99, varint) sent by a newer client.
        acta.MergeFromString(bytes([99 << 3 & 0xFF | 0x80, 99 >> 4, 7]))
    return acta


@given(acta=_actas())
def test_content_digest_fast_path_equals_clearing_provenance(acta: acta_pb2.Acta) -> None:
    full, digest = leaf.serialize_acta(acta)
    assert full == acta.SerializeToString(deterministic=True)
    assert digest == rules.content_digest(acta)


@given(
    acta=_actas(),
    revision=st.integers(1, 2**32 - 1),
    counted=st.booleans(),
    reason=st.integers(0, 3),
    sequence=st.integers(0, 2**64 - 1),
    seconds=st.integers(0, 2**35),
    nanos=st.integers(0, 999_999_999),
    why=st.text(max_size=40),
    approved_by=st.lists(st.text(max_size=30), max_size=2),
)
def test_leaf_bytes_equal_protobuf_deterministic_serialization(
    acta: acta_pb2.Acta,
    revision: int,
    counted: bool,
    reason: int,
    sequence: int,
    seconds: int,
    nanos: int,
    why: str,
    approved_by: list[str],
) -> None:
    expected = acta_pb2.LogLeaf()
    record = expected.acta_record
    record.acta_id = f"{acta.casilla_id}/{acta.contest_id}"
    record.revision = revision
    record.acta.CopyFrom(acta)
    record.received_time.seconds = seconds
    record.received_time.nanos = nanos
    record.counted = counted
    record.not_counted_reason = reason  # type: ignore[assignment]  # a NotCountedReason value
    record.sequence = sequence
    record.reason = why
    record.approved_by.extend(approved_by)
    got = leaf.leaf_bytes(
        acta_id=record.acta_id,
        revision=revision,
        acta=acta.SerializeToString(deterministic=True),
        received_time=leaf.encode_timestamp(record.received_time),
        counted=counted,
        not_counted_reason=reason,
        sequence=sequence,
        reason=why,
        approved_by=approved_by,
    )
    assert got == expected.SerializeToString(deterministic=True)
    assert acta_pb2.LogLeaf.FromString(got) == expected


def test_varint_matches_known_encodings() -> None:
    assert leaf.varint(0) == b"\x00"
    assert leaf.varint(127) == b"\x7f"
    assert leaf.varint(128) == b"\x80\x01"
    assert leaf.varint(300) == b"\xac\x02"


# Written by ingest's leaf encoder before it moved into the SDK (veritally.ingest.leaf at
# commit 62cf739), for the acta and record of _fixed_acta() and _fixed_leaf(): the
# encoder's output must never change, whoever calls it.
_FIXED_ACTA_HEX = (
    "0a0c303130312d303030312d42311204505245531a070a0350414e10781a0d0a064d4f52454e4110ad"
    "021801200230074220000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "4a160a0563632d30311203616e613a080880cae2d0061005"
)
_FIXED_DIGEST_HEX = "1d1ee3eb5b26a3a13d97d68de39af9e6522e9084fffdb3e711bf2bcd975d11f7"
_FIXED_LEAF_HEX = (
    "0aef010a11303130312d303030312d42312f5052455310021a6a" + _FIXED_ACTA_HEX + "220c08fbca"
    "e2d006108084b8d901300238ac02420f66696775726573206d6973726561644a237370696666653a2f2f"
    "707265702e6578616d706c652f6f70657261746f722f6f702d314a237370696666653a2f2f7072657"
    "02e6578616d706c652f6f70657261746f722f6f702d32"
)
_FIXED_FIRST_LEAF_HEX = (
    "0a8b010a11303130312d303030312d42312f5052455310011a6a"
    + _FIXED_ACTA_HEX
    + "220608fbcae2d0062801"
)
_APPROVERS = ("spiffe://prep.example/operator/op-1", "spiffe://prep.example/operator/op-2")


def _fixed_acta() -> acta_pb2.Acta:
    return acta_pb2.Acta(
        casilla_id="0101-0001-B1",
        contest_id="PRES",
        option_votes=[
            acta_pb2.OptionVotes(option_id="PAN", votes=120),
            acta_pb2.OptionVotes(option_id="MORENA", votes=301, mark=acta_pb2.FIELD_MARK_ILLEGIBLE),
        ],
        unregistered_votes=2,
        null_votes=7,
        image_sha256=bytes(range(32)),
        provenance=acta_pb2.Provenance(
            capture_centre_id="cc-01",
            operator_id="ana",
            captured_time=Timestamp(seconds=1_780_000_000, nanos=5),
        ),
    )


def test_serialize_acta_of_a_fixed_acta_is_what_ingest_always_wrote() -> None:
    full, digest = leaf.serialize_acta(_fixed_acta())
    assert full.hex() == _FIXED_ACTA_HEX
    assert digest.hex() == _FIXED_DIGEST_HEX


def test_leaf_bytes_of_a_fixed_record_are_what_ingest_always_wrote() -> None:
    acta = bytes.fromhex(_FIXED_ACTA_HEX)
    correction = leaf.leaf_bytes(
        acta_id="0101-0001-B1/PRES",
        revision=2,
        acta=acta,
        received_time=leaf.encode_timestamp(Timestamp(seconds=1_780_000_123, nanos=456_000_000)),
        counted=False,
        not_counted_reason=acta_pb2.NOT_COUNTED_REASON_ALL_ILLEGIBLE,
        sequence=300,
        reason="figures misread",
        approved_by=_APPROVERS,
    )
    assert correction.hex() == _FIXED_LEAF_HEX
    first = leaf.leaf_bytes(
        acta_id="0101-0001-B1/PRES",
        revision=1,
        acta=acta,
        received_time=leaf.encode_timestamp(Timestamp(seconds=1_780_000_123)),
        counted=True,
        not_counted_reason=acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED,
        sequence=0,
    )
    assert first.hex() == _FIXED_FIRST_LEAF_HEX


class _Record(Protocol):
    """What both readers give of an acta record, besides the acta."""

    @property
    def acta_id(self) -> str: ...
    @property
    def revision(self) -> int: ...
    @property
    def received_time(self) -> Timestamp: ...
    @property
    def counted(self) -> bool: ...
    @property
    def not_counted_reason(self) -> int: ...
    @property
    def sequence(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def approved_by(self) -> Sequence[str]: ...


def _leaf_bytes_of(record: _Record, acta: bytes) -> bytes:
    """Encode again what a reader decoded (``acta`` is the record's acta, serialized)."""
    return leaf.leaf_bytes(
        acta_id=record.acta_id,
        revision=record.revision,
        acta=acta,
        received_time=leaf.encode_timestamp(record.received_time),
        counted=record.counted,
        not_counted_reason=record.not_counted_reason,
        sequence=record.sequence,
        reason=record.reason,
        approved_by=record.approved_by,
    )


@st.composite
def _written_leaves(draw: st.DrawFn) -> bytes:
    """Acta record leaves as ingest writes them, every field drawn."""
    acta = draw(_actas())
    seconds, nanos = draw(st.integers(0, 2**35)), draw(st.integers(0, 999_999_999))
    return leaf.leaf_bytes(
        acta_id=f"{acta.casilla_id}/{acta.contest_id}",
        revision=draw(st.integers(1, 2**32 - 1)),
        acta=leaf.serialize_acta(acta)[0],
        received_time=leaf.encode_timestamp(Timestamp(seconds=seconds, nanos=nanos)),
        counted=draw(st.booleans()),
        not_counted_reason=draw(st.integers(0, 3)),
        sequence=draw(st.integers(0, 2**64 - 1)),
        reason=draw(st.text(max_size=40)),
        approved_by=draw(st.lists(st.text(max_size=30), max_size=2)),
    )


@given(written=_written_leaves())
def test_leaf_bytes_round_trip_through_both_readers(written: bytes) -> None:
    # encode -> decode (reference reader) -> encode
    parsed = leaf.parse_leaf(written)
    assert parsed.WhichOneof("kind") == "acta_record"
    record = parsed.acta_record
    again = _leaf_bytes_of(record, record.acta.SerializeToString(deterministic=True))
    assert again == written
    # encode -> decode (the tally's view, options as bytes) -> encode
    view = leaf.parse_leaf_view(written)
    assert view.WhichOneof("kind") == "acta_record"
    view_acta: bytes = view.acta_record.acta.SerializeToString(deterministic=True)  # type: ignore[attr-defined]  # a runtime-built message
    assert _leaf_bytes_of(view.acta_record, view_acta) == written


def test_readers_reject_bytes_that_are_not_a_leaf() -> None:
    for garbage in (b"\x0a\x05ab", b"\xff\xff\xff", b"\x0a\x02\x0a\xff"):
        with pytest.raises(MalformedDataError):
            leaf.parse_leaf(garbage)
        with pytest.raises(MalformedDataError):
            leaf.parse_leaf_view(garbage)


def test_leaf_bytes_writes_the_record_in_field_number_order() -> None:
    # leaf_bytes concatenates the fields in this order; deterministic serialization
    # writes them in field-number order, so the two orders must be one.
    written = [
        "acta_id",
        "revision",
        "acta",
        "received_time",
        "counted",
        "not_counted_reason",
        "sequence",
        "reason",
        "approved_by",
    ]
    fields = acta_pb2.ActaRecord.DESCRIPTOR.fields_by_name
    numbers = [fields[name].number for name in written]
    assert numbers == sorted(numbers)
    assert set(written) == set(fields)


def test_provenance_is_followed_only_by_the_counts_in_an_acta() -> None:
    # serialize_acta finds the content digest by cutting the provenance out of the end.
    fields = sorted(acta_pb2.Acta.DESCRIPTOR.fields, key=lambda f: f.number)
    assert [f.name for f in fields[-2:]] == ["provenance", "counts"]


def test_content_digest_of_an_acta_with_counts_keeps_the_counts() -> None:
    acta = acta_pb2.Acta(casilla_id="c", contest_id="P", image_sha256=b"\x01" * 32)
    acta.provenance.operator_id = "ana"
    acta.counts.total_votes_written = 7
    acta.counts.voters = 0
    full, digest = leaf.serialize_acta(acta)
    content = acta_pb2.Acta()
    content.CopyFrom(acta)
    content.ClearField("provenance")
    assert full == acta.SerializeToString(deterministic=True)
    assert digest == hashlib.sha256(content.SerializeToString(deterministic=True)).digest()
    other = acta_pb2.Acta()
    other.CopyFrom(acta)
    other.counts.total_votes_written = 8
    assert leaf.serialize_acta(other)[1] != digest


def test_tags_come_from_the_descriptors() -> None:
    assert leaf.field_tag(acta_pb2.ActaRecord.DESCRIPTOR, "acta_id") == b"\x0a"
    assert leaf.field_tag(acta_pb2.ActaRecord.DESCRIPTOR, "revision") == b"\x10"
    assert leaf.field_tag(acta_pb2.ActaRecord.DESCRIPTOR, "approved_by") == b"\x4a"
    assert leaf.field_tag(acta_pb2.Acta.DESCRIPTOR, "provenance") == b"\x4a"
    assert leaf.field_tag(acta_pb2.LogLeaf.DESCRIPTOR, "cut_record") == b"\x12"
    with pytest.raises(KeyError):
        leaf.field_tag(acta_pb2.ActaRecord.DESCRIPTOR, "no_such_field")


def test_varint_rejects_a_negative_number() -> None:
    with pytest.raises(ValueError, match="negative"):
        leaf.varint(-1)
    assert leaf.varint(2**64 - 1) == b"\xff" * 9 + b"\x01"


def test_the_table_of_small_varints_is_the_encoding() -> None:
    for value in range(1 << 15):
        assert leaf.varint(value) == leaf._encode_varint(value), value
