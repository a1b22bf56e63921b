"""The hand-assembled leaf and content digest of veritally.ingest.leaf are byte for byte
what the protobuf library produces (deterministic serialization)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.write_path_support import make_acta, small_election
from veritally.ingest import leaf, rules
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
