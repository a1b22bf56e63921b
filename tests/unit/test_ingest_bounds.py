"""The bounds of what a client sends to ingest (veritally.bounds), as
``rules.validate`` applies them: one attack per case, each refused INVALID_ARGUMENT
naming the field, with a message that never quotes unbounded input."""

from __future__ import annotations

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.write_path_support import make_acta, padded, small_election
from veritally import bounds
from veritally.ingest import rules
from veritally.reject import RejectCode, Rejection
from veritally_client import _leaf as leaf
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client.protocol import MAX_ENTRY_BYTES

ELECTION = small_election()
CATALOGUE = rules.Catalogue.from_index(ELECTION)
CASILLA = "01-01-0001-B1"
# Longest message a rejection may carry: the rule, the limit and a clipped quote.
MESSAGE_CHARS = 200


def _acta() -> acta_pb2.Acta:
    return make_acta(ELECTION, CASILLA, "PRES", [10, 20, 5])


def _refused(acta: acta_pb2.Acta) -> Rejection:
    result = rules.validate(acta, CATALOGUE)
    assert isinstance(result, Rejection), result
    assert result.code == RejectCode.INVALID_ARGUMENT
    assert len(result.message) < MESSAGE_CHARS, result.message
    return result


def _with_unknown_field(message: bytes, *, field_number: int = 15) -> bytes:
    # A varint field the schema does not define, appended to a serialized message.
    return message + leaf.varint(field_number << 3) + b"\x01"


def test_rejects_an_acta_above_the_max_acta_size() -> None:
    acta = _acta()
    # Padding a real acta to just over the limit (the image digest is checked later).
    acta.image_sha256 = b"\x00" * bounds.MAX_ACTA_BYTES
    rejection = _refused(acta)
    assert rejection.field == "acta"
    assert str(bounds.MAX_ACTA_BYTES) in rejection.message


def test_accepts_an_acta_of_ordinary_size_well_under_the_limit() -> None:
    acta = _acta()
    assert isinstance(rules.validate(acta, CATALOGUE), rules.Verdict)
    assert acta.ByteSize() * 20 < bounds.MAX_ACTA_BYTES


@pytest.mark.parametrize(("length", "field"), [(50_000, "acta"), (8_000, "casilla_id")])
def test_rejects_a_huge_casilla_id_without_echoing_it(length: int, field: str) -> None:
    acta = _acta()
    acta.casilla_id = "X" * length
    # Above the acta size the size is what is named; below it, the identifier rule.
    assert _refused(acta).field == field
    # The outcome's acta id does not carry it either.
    assert rules.acta_id_of(acta) == ""


@pytest.mark.parametrize(
    ("where", "confusable"),
    [
        ("casilla_id", "01-01-0001-B\u0031\u0301"),  # a combining accent
        ("contest_id", "PR\u0415S"),  # Cyrillic capital Ie for E
        ("provenance.operator_id", "\u043ep-1"),  # Cyrillic o for o
        ("provenance.capture_centre_id", "centre 1"),  # a space
    ],
)
def test_rejects_confusable_or_non_ascii_identifiers(where: str, confusable: str) -> None:
    acta = _acta()
    target: acta_pb2.Acta | acta_pb2.Provenance = acta
    name = where
    if where.startswith("provenance."):
        target, name = acta.provenance, where.removeprefix("provenance.")
    setattr(target, name, confusable)
    assert _refused(acta).field == where


def test_rejects_a_non_ascii_option_id_naming_its_position() -> None:
    acta = _acta()
    acta.option_votes[1].option_id = "P\u0412"  # Cyrillic Ve for B
    assert _refused(acta).field == "option_votes[1].option_id"


def test_rejects_an_identifier_one_character_too_long() -> None:
    acta = _acta()
    acta.provenance.operator_id = "o" * (bounds.MAX_IDENTIFIER_CHARS + 1)
    assert _refused(acta).field == "provenance.operator_id"
    acta.provenance.operator_id = "o" * bounds.MAX_IDENTIFIER_CHARS
    assert isinstance(rules.validate(acta, CATALOGUE), rules.Verdict)


def test_rejects_unknown_fields_at_the_top_of_the_acta() -> None:
    acta = acta_pb2.Acta.FromString(_with_unknown_field(_acta().SerializeToString()))
    assert _refused(acta).field == "acta"


def test_rejects_unknown_fields_nested_in_an_option_or_a_timestamp() -> None:
    acta = _acta()
    # MergeFrom keeps the unknown fields of the parsed message.
    acta.option_votes[2].MergeFrom(acta_pb2.OptionVotes.FromString(_with_unknown_field(b"")))
    assert _refused(acta).field == "option_votes[2]"
    acta = _acta()
    acta.provenance.captured_time.MergeFrom(Timestamp.FromString(_with_unknown_field(b"")))
    assert _refused(acta).field == "provenance.captured_time"


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (2**62, 0),  # far beyond year 9999
        (bounds.MAX_TIMESTAMP_SECONDS + 1, 0),
        (bounds.MIN_TIMESTAMP_SECONDS - 1, 0),
        (1_780_000_000, -1),  # negative nanos
        (1_780_000_000, 1_000_000_000),
    ],
)
def test_rejects_timestamps_out_of_the_timestamp_range(seconds: int, nanos: int) -> None:
    acta = _acta()
    acta.provenance.digitised_time.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    assert _refused(acta).field == "provenance.digitised_time"


def test_accepts_timestamps_at_the_edges_of_the_range() -> None:
    acta = _acta()
    acta.provenance.captured_time.seconds = bounds.MAX_TIMESTAMP_SECONDS
    acta.provenance.captured_time.nanos = 999_999_999
    acta.provenance.received_at_centre_time.seconds = bounds.MIN_TIMESTAMP_SECONDS
    assert isinstance(rules.validate(acta, CATALOGUE), rules.Verdict)


@pytest.mark.parametrize("name", ["origin", "digitisation"])
def test_rejects_undefined_enum_values(name: str) -> None:
    acta = _acta()
    setattr(acta.provenance, name, 99)
    assert _refused(acta).field == f"provenance.{name}"


def test_rejects_undefined_mark_value_99() -> None:
    acta = _acta()
    acta.null_mark = 99  # type: ignore[assignment]  # an open enum accepts unknown values
    assert _refused(acta).field == "null_mark"


def test_a_leaf_of_the_largest_acta_fits_the_max_leaf_size() -> None:
    acta = _acta()
    acta.casilla_id = acta.contest_id = "c" * bounds.MAX_IDENTIFIER_CHARS
    padded(acta, bounds.MAX_ACTA_BYTES)
    ts = Timestamp(seconds=bounds.MAX_TIMESTAMP_SECONDS, nanos=999_999_999)
    largest = leaf.leaf_bytes(
        acta_id=f"{acta.casilla_id}/{acta.contest_id}",
        revision=2**32 - 1,
        acta=acta.SerializeToString(deterministic=True),
        received_time=leaf.encode_timestamp(ts),
        counted=True,
        not_counted_reason=acta_pb2.NOT_COUNTED_REASON_ALL_BLANK,
        sequence=2**63,
    )
    assert len(largest) <= bounds.MAX_LEAF_BYTES


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("01-01-0001-B1", True),
        ("PB_PC", True),
        ("op.17:night", True),
        ("a" * bounds.MAX_IDENTIFIER_CHARS, True),
        ("", False),
        ("-leading-dash", False),
        ("a/b", False),  # the separator of an acta id
        ("tab\there", False),
        ("caf\u00e9", False),
    ],
)
def test_identifier_rule(value: str, ok: bool) -> None:
    assert bounds.is_identifier(value) is ok


def test_acta_id_is_two_identifiers() -> None:
    assert bounds.acta_id_problem(f"{CASILLA}/PRES") is None
    for bad in ("", CASILLA, f"{CASILLA}/PRES/x", f"/{CASILLA}", "x" * 50_000):
        problem = bounds.acta_id_problem(bad)
        assert problem is not None
        assert len(problem) < MESSAGE_CHARS


def test_reason_is_bounded_printable_text_in_any_script() -> None:
    assert bounds.reason_problem("Se corrigió la suma: el acta dice 105, no 150.") is None
    assert bounds.reason_problem("two\nlines") is None
    assert bounds.reason_problem("r" * (bounds.MAX_REASON_CHARS + 1)) is not None
    assert bounds.reason_problem("bell\x07") is not None


def test_clip_quotes_at_most_a_few_dozen_characters() -> None:
    assert bounds.clip("short") == "'short'"
    clipped = bounds.clip("y" * 1_000_000)
    assert len(clipped) < 2 * bounds.ECHO_CHARS
    assert "1000000" in clipped


def test_the_longest_leaf_fits_a_tlog_tiles_entry() -> None:
    # Publication logs no leaf longer than this; the bundle's entry bundles give each
    # leaf a 16-bit length.
    assert bounds.MAX_LEAF_BYTES <= MAX_ENTRY_BYTES
