"""The tally's leaf path (a view with option bytes) decides exactly as ``Tally.apply``.

``apply_leaf`` reads a leaf through a view whose options are raw bytes and remembers
each option encoding it has decoded; these tests feed both paths the same leaves, odd
ones included (options out of order, repeated, missing, unknown, with marks or unknown
fields, not UTF-8, unknown contests, wrong sequences) and compare every outcome: the
error type, and the results bytes after each leaf.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_tally import ACTA_KEYS, ELECTION, REASONS
from veritally_client._election import acta_id
from veritally_client._errors import MalformedDataError
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._leaf import parse_leaf_view
from veritally_client._tally import Tally

_ACTA_OPTIONS_TAG = b"\x1a"  # Acta.option_votes: field 3, length-delimited
_RECORD_ACTA_TAG = b"\x1a"  # ActaRecord.acta: field 3, length-delimited
_LEAF_RECORD_TAG = b"\x0a"  # LogLeaf.acta_record: field 1, length-delimited


def _len(data: bytes) -> bytes:
    out = bytearray()
    n = len(data)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(tag: bytes, data: bytes) -> bytes:
    return tag + _len(data) + data


@st.composite
def option_encodings(draw: st.DrawFn, contest_id: str) -> list[bytes]:
    """The option_votes entries of one acta: usually the ballot, sometimes not."""
    option_ids = list(ELECTION.option_ids(contest_id))
    chosen = list(option_ids)
    change = draw(
        st.sampled_from(
            ["none"] * 6 + ["shuffle", "repeat", "drop", "unknown", "not-utf8", "extra-field"]
        )
    )
    if change == "shuffle":
        chosen = draw(st.permutations(chosen))
    elif change == "repeat":
        chosen.insert(draw(st.integers(0, len(chosen))), draw(st.sampled_from(option_ids)))
    elif change == "drop":
        chosen.pop(draw(st.integers(0, len(chosen) - 1)))
    elif change == "unknown":
        chosen[draw(st.integers(0, len(chosen) - 1))] = "NOPE"
    out = []
    for oid in chosen:
        # Few vote values, so that encodings repeat and the remembered ones are used.
        option = acta_pb2.OptionVotes(
            option_id=oid,
            votes=draw(st.sampled_from([0, 1, 7, 300, 20_000])),
            mark=draw(
                st.sampled_from(
                    [acta_pb2.FIELD_MARK_UNSPECIFIED] * 3
                    + [acta_pb2.FIELD_MARK_ILLEGIBLE, acta_pb2.FIELD_MARK_BLANK]
                )
            ),
        )
        out.append(option.SerializeToString(deterministic=True))
    if change == "not-utf8":
        out[draw(st.integers(0, len(out) - 1))] = b"\x0a\x02\xff\xfe\x10\x01"
    elif change == "extra-field":
        i = draw(st.integers(0, len(out) - 1))
        out[i] += b"\x20\x05"  # field 4, varint: unknown to OptionVotes
    return out


@st.composite
def leaf_streams(draw: st.DrawFn) -> list[bytes]:
    """Serialized leaves: records with corrections, some malformed in their options."""
    n = draw(st.integers(min_value=1, max_value=30))
    revisions: dict[str, int] = {}
    leaves = []
    for seq in range(n):
        casilla_id, contest_id = draw(st.sampled_from(ACTA_KEYS))
        acta_contest = draw(st.sampled_from([contest_id] * 8 + ["SEN", "PRES", "GOV"]))
        key = acta_id(casilla_id, contest_id)
        revision = revisions.get(key, 0) + 1
        counted = draw(st.integers(0, 3)) != 0
        record = acta_pb2.ActaRecord(
            acta_id=key,
            revision=revision,
            counted=counted,
            not_counted_reason=(
                acta_pb2.NOT_COUNTED_REASON_UNSPECIFIED
                if counted
                else draw(st.sampled_from(REASONS))
            ),
            sequence=seq + draw(st.sampled_from([0] * 15 + [1])),
        )
        acta = acta_pb2.Acta(
            casilla_id=casilla_id,
            contest_id=acta_contest,
            unregistered_votes=draw(st.integers(0, 5)),
            null_votes=draw(st.integers(0, 5)),
        )
        options = draw(option_encodings(acta_contest if acta_contest != "GOV" else "SEN"))
        acta_bytes = acta.SerializeToString(deterministic=True) + b"".join(
            _delimited(_ACTA_OPTIONS_TAG, o) for o in options
        )
        record_bytes = record.SerializeToString(deterministic=True) + _delimited(
            _RECORD_ACTA_TAG, acta_bytes
        )
        leaves.append(_delimited(_LEAF_RECORD_TAG, record_bytes))
        revisions[key] = revision
    return leaves


def _reference(tally: Tally, leaf: bytes) -> None:
    """The reference path: the real LogLeaf type and Tally.apply."""
    try:
        record = acta_pb2.LogLeaf.FromString(leaf).acta_record
    except DecodeError as e:
        raise MalformedDataError(str(e)) from e
    tally.apply(record)


def _outcome(step: Callable[[bytes], None], leaf: bytes) -> type[Exception] | None:
    try:
        step(leaf)
    except (MalformedDataError, ValueError) as e:
        return type(e)
    return None


def test_apply_leaf_decides_and_counts_as_apply() -> None:
    verdicts: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None)
    @given(leaves=leaf_streams())
    def check(leaves: list[bytes]) -> None:
        reference = Tally(ELECTION)
        viewed = Tally(ELECTION)
        for leaf in leaves:
            expected = _outcome(lambda data: _reference(reference, data), leaf)
            got = _outcome(viewed.apply_leaf, leaf)
            assert got is expected
            assert viewed.acta_records == reference.acta_records
            for final in (False, True):
                assert viewed.results_bytes(final=final) == reference.results_bytes(final=final)
            verdicts["accepted" if expected is None else "refused"] += 1

    check()
    # The comparison passes trivially if every drawn leaf is refused (or every one
    # accepted): the streams must have reached both verdicts, many times.
    assert verdicts["accepted"] >= 50
    assert verdicts["refused"] >= 50


def test_apply_leaves_applies_in_order_and_stops_at_the_first_refusal() -> None:
    records = [
        acta_pb2.ActaRecord(
            acta_id=acta_id("01-0001-B", "SEN"),
            revision=revision,
            acta=acta_pb2.Acta(
                casilla_id="01-0001-B",
                contest_id="SEN",
                option_votes=[
                    acta_pb2.OptionVotes(option_id="A", votes=revision),
                    acta_pb2.OptionVotes(option_id="C", votes=1),
                ],
            ),
            counted=True,
            sequence=sequence,
        )
        for sequence, revision in enumerate((1, 2, 4))  # the third skips a revision
    ]
    leaves = [acta_pb2.LogLeaf(acta_record=r).SerializeToString() for r in records]
    tally = Tally(ELECTION)
    with pytest.raises(MalformedDataError):
        tally.apply_leaves(leaves)
    reference = Tally(ELECTION)
    for r in records[:2]:
        reference.apply(r)
    assert tally.acta_records == 2
    assert tally.results_bytes() == reference.results_bytes()


def test_leaf_view_reads_cut_records_as_the_real_type() -> None:
    cut = acta_pb2.CutRecord(cut_number=3, acta_records=7, results_sha256=b"\x01" * 32)
    view = parse_leaf_view(acta_pb2.LogLeaf(cut_record=cut).SerializeToString())
    assert view.WhichOneof("kind") == "cut_record"
    assert view.cut_record == cut
