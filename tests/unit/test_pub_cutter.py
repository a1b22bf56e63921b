"""The cutter and its store: append, sign, persist in one transaction; never re-sign."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pub_support import ORIGIN, ActaLog, acta_leaf, results_blob
from veritally.publication.cutter import Cutter
from veritally.publication.errors import StoreIntegrityError, UpstreamDataError
from veritally.publication.store import CutRow, PublicationStore
from veritally_client._checkpoint import parse_checkpoint
from veritally_client._gen.veritally.v1 import acta_pb2
from veritally_client._merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from veritally_client._note import open_note
from veritally_client._signing import Signer
from veritally_client.protocol import format_cut_time

SIGNER = Signer.from_seed(ORIGIN, bytes(range(32)))


def _clock() -> Callable[[], dt.datetime]:
    ticks = itertools.count()
    start = dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC)
    return lambda: start + dt.timedelta(seconds=2 * next(ticks))


def _cutter(path: Path) -> Cutter:
    return Cutter(store=PublicationStore(path), signers=[SIGNER], origin=ORIGIN, clock=_clock())


def _cut(cutter: Cutter, log: ActaLog, n: int) -> CutRow:
    new = log.add(n)
    return cutter.make_cut(
        acta_leaves=new, acta_records=len(log.leaves), results=results_blob(log.leaves)
    )


def test_cut_appends_actas_then_cut_leaf_and_signs_the_root(tmp_path: Path) -> None:
    cutter, log, ref = _cutter(tmp_path / "p.db"), ActaLog(), MemoryTree()
    for n in (5, 0, 17):
        before = len(log.leaves)
        row = _cut(cutter, log, n)
        for leaf in log.leaves[before:]:
            ref.append(leaf)
        ref.append(row.cut_leaf)
        note = open_note(row.checkpoint, [SIGNER.verifier()])
        cp = parse_checkpoint(note.text)
        assert (cp.origin, cp.size, cp.root_hash) == (ORIGIN, ref.size, ref.root())
        verify_inclusion(
            leaf_hash=leaf_hash(row.cut_leaf),
            index=cp.size - 1,
            size=cp.size,
            proof=row.proof,
            root=cp.root_hash,
        )
        record = acta_pb2.LogLeaf.FromString(row.cut_leaf).cut_record
        assert record.acta_records == len(log.leaves)
        assert record.results_sha256 == hashlib.sha256(results_blob(log.leaves)).digest()
        assert record.cut_time.endswith("Z")


def test_heartbeat_cut_adds_only_the_cut_leaf(tmp_path: Path) -> None:
    cutter, log = _cutter(tmp_path / "p.db"), ActaLog()
    first = _cut(cutter, log, 3)
    second = _cut(cutter, log, 0)
    assert second.tree_size == first.tree_size + 1
    assert second.cut_number == first.cut_number + 1
    assert second.acta_records == first.acta_records


def test_rejects_records_out_of_sequence(tmp_path: Path) -> None:
    cutter = _cutter(tmp_path / "p.db")
    with pytest.raises(UpstreamDataError):
        cutter.make_cut(acta_leaves=[acta_leaf(1, "C1/P")], acta_records=1, results=b"r")
    assert cutter.store.tree_size == 0


def test_rejects_results_position_not_matching_records(tmp_path: Path) -> None:
    cutter = _cutter(tmp_path / "p.db")
    with pytest.raises(UpstreamDataError):
        cutter.make_cut(acta_leaves=[acta_leaf(0, "C0/P")], acta_records=2, results=b"r")


def test_rejects_a_cut_record_disguised_as_an_acta(tmp_path: Path) -> None:
    cutter = _cutter(tmp_path / "p.db")
    fake = acta_pb2.LogLeaf(cut_record=acta_pb2.CutRecord(cut_number=9)).SerializeToString()
    with pytest.raises(UpstreamDataError):
        cutter.make_cut(acta_leaves=[fake], acta_records=1, results=b"r")


def test_crash_between_signing_and_persisting_leaves_no_trace(tmp_path: Path) -> None:
    signed: list[bytes] = []

    class CrashError(Exception):
        pass

    def crash(note: bytes) -> None:
        signed.append(note)
        raise CrashError

    path = tmp_path / "p.db"
    cutter, log = _cutter(path), ActaLog()
    good = _cut(cutter, log, 4)
    crashing = Cutter(
        store=cutter.store, signers=[SIGNER], origin=ORIGIN, clock=_clock(), before_commit=crash
    )
    with pytest.raises(CrashError):
        _cut(crashing, log, 2)
    assert len(signed) == 1
    # Nothing of the failed cut is in the store, in memory or on disk.
    assert cutter.store.tree_size == good.tree_size
    assert (
        cutter.store.root()
        == parse_checkpoint(open_note(good.checkpoint, [SIGNER.verifier()]).text).root_hash
    )
    cutter.store.close()
    reopened = PublicationStore(path)
    assert reopened.tree_size == good.tree_size
    latest = reopened.latest_cut()
    assert latest is not None
    assert latest.checkpoint == good.checkpoint


def test_restart_at_the_same_size_reserves_the_stored_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    cutter, log = _cutter(path), ActaLog()
    row = _cut(cutter, log, 6)
    cutter.store.close()
    again = _cutter(path)
    again.check_latest()
    assert again.store.latest_cut() == row
    # The next cut (even with nothing new) is at a larger size, consistent with the first.
    nxt = again.make_cut(acta_leaves=[], acta_records=6, results=results_blob(log.leaves))
    assert nxt.tree_size == row.tree_size + 1
    roots = [
        parse_checkpoint(open_note(r.checkpoint, [SIGNER.verifier()]).text) for r in (row, nxt)
    ]
    verify_consistency(
        size1=roots[0].size,
        size2=roots[1].size,
        proof=again.store.consistency_proof(roots[0].size, roots[1].size),
        root1=roots[0].root_hash,
        root2=roots[1].root_hash,
    )


def test_store_refuses_a_second_cut_for_a_tree_size(tmp_path: Path) -> None:
    cutter, log = _cutter(tmp_path / "p.db"), ActaLog()
    row = _cut(cutter, log, 2)
    other = CutRow(
        cut_number=row.cut_number + 1,
        tree_size=row.tree_size,
        acta_records=row.acta_records,
        cut_time=row.cut_time,
        checkpoint=b"different",
        cut_leaf=row.cut_leaf,
        proof=row.proof,
        results_sha256=row.results_sha256,
    )
    with pytest.raises(StoreIntegrityError), cutter.store.transaction():
        cutter.store.put_cut(other)
    assert cutter.store.latest_cut() == row


def test_refuses_to_open_a_store_with_leaves_beyond_its_last_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    cutter, log = _cutter(path), ActaLog()
    _cut(cutter, log, 2)
    store = cutter.store
    with store.transaction():
        store.append_leaves([b"x"], [leaf_hash(b"x")])  # as if someone wrote behind our back
    store.close()
    with pytest.raises(StoreIntegrityError):
        PublicationStore(path)


def test_refuses_a_store_of_another_origin(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    cutter, log = _cutter(path), ActaLog()
    _cut(cutter, log, 1)
    cutter.store.close()
    other = Cutter(store=PublicationStore(path), signers=[SIGNER], origin="other.example/x")
    with pytest.raises(StoreIntegrityError):
        other.check_latest()


def test_cut_time_never_goes_back(tmp_path: Path) -> None:
    times = iter(
        [dt.datetime(2026, 6, 2, 21, tzinfo=dt.UTC), dt.datetime(2026, 6, 2, 20, tzinfo=dt.UTC)]
    )
    cutter = Cutter(
        store=PublicationStore(tmp_path / "p.db"),
        signers=[SIGNER],
        origin=ORIGIN,
        clock=lambda: next(times),
    )
    a = cutter.make_cut(acta_leaves=[], acta_records=0, results=b"r")
    b = cutter.make_cut(acta_leaves=[], acta_records=0, results=b"r")
    assert b.cut_time >= a.cut_time


def test_cut_time_is_rfc3339_utc_with_z() -> None:
    when = dt.datetime(2026, 6, 2, 14, 3, 4, 500000, tzinfo=dt.timezone(dt.timedelta(hours=-6)))
    assert format_cut_time(when) == "2026-06-02T20:03:04.500Z"


def test_store_proofs_match_memory_tree_across_many_cuts(tmp_path: Path) -> None:
    cutter, log, ref = _cutter(tmp_path / "p.db"), ActaLog(), MemoryTree()
    for n in (1, 7, 0, 30, 2, 64, 0, 5):
        before = len(log.leaves)
        row = _cut(cutter, log, n)
        for leaf in log.leaves[before:]:
            ref.append(leaf)
        ref.append(row.cut_leaf)
    store = cutter.store
    size = store.tree_size
    for s in range(1, size + 1, 7):
        assert store.root(s) == ref.root(s)
        for i in range(0, s, 5):
            assert store.inclusion_proof(i, s) == ref.inclusion_proof(i, s)
        for s1 in range(0, s + 1, 3):
            assert store.consistency_proof(s1, s) == ref.consistency_proof(s1, s)
    # Acta lookup: latest revision within a size, exact leaf bytes.
    index = store.acta_leaf_index("C00003/P", 0, size)
    assert index is not None
    assert store.leaves(index, 1)[0] == log.leaves[3]
    assert store.acta_leaf_index("C00003/P", 2, size) is None
    assert store.acta_leaf_index("nope/P", 0, size) is None


@settings(max_examples=15, deadline=None)  # each example fsyncs a few commits
@given(batches=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_stored_tree_matches_memory_tree_for_any_batches(batches: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = PublicationStore(Path(tmp) / "p.db")
        ref = MemoryTree()
        for batch in batches:
            leaves = [b"leaf %d" % (ref.size + i) for i in range(batch)]
            with store.transaction():
                store.append_leaves(leaves, [leaf_hash(x) for x in leaves])
            for x in leaves:
                ref.append(x)
            assert store.root() == ref.root()
        size = ref.size
        for index in {0, size // 2, size - 1}:
            assert store.inclusion_proof(index, size) == ref.inclusion_proof(index, size)
        for size1 in {0, 1, size // 3, size}:
            assert store.consistency_proof(size1, size) == ref.consistency_proof(size1, size)
        store.close()


def _ingest_figure(row: CutRow) -> int | None:
    record = acta_pb2.LogLeaf.FromString(row.cut_leaf).cut_record
    return record.ingest_records if record.HasField("ingest_records") else None


def test_heartbeat_cut_over_a_stuck_aggregation_signs_how_far_behind_ingest_it_is(
    tmp_path: Path,
) -> None:
    cutter, log = _cutter(tmp_path / "p.db"), ActaLog()
    new = log.add(3)
    results = results_blob(log.leaves)
    first = cutter.make_cut(acta_leaves=new, acta_records=3, results=results, ingest_records=3)
    # Aggregation stays at 3 while ingest goes on accepting: the heartbeats say so.
    behind = [
        cutter.make_cut(acta_leaves=[], acta_records=3, results=results, ingest_records=n)
        for n in (5, 9)
    ]
    assert [_ingest_figure(r) for r in (first, *behind)] == [3, 5, 9]
    assert [r.acta_records for r in behind] == [3, 3]


def test_ingest_figure_never_goes_back_nor_below_the_records_covered(tmp_path: Path) -> None:
    cutter, log = _cutter(tmp_path / "p.db"), ActaLog()
    results = results_blob(log.leaves)
    first = cutter.make_cut(acta_leaves=[], acta_records=0, results=results, ingest_records=7)
    # A restarted aggregation knows only its own position until ingest speaks: the
    # largest figure seen is still a true lower bound of ingest's (append-only) log.
    second = cutter.make_cut(acta_leaves=[], acta_records=0, results=results, ingest_records=0)
    new = log.add(9)
    third = cutter.make_cut(
        acta_leaves=new, acta_records=9, results=results_blob(log.leaves), ingest_records=2
    )
    assert [_ingest_figure(r) for r in (first, second, third)] == [7, 7, 9]


def test_cut_without_an_ingest_figure_leaves_it_out(tmp_path: Path) -> None:
    row = _cut(_cutter(tmp_path / "p.db"), ActaLog(), 2)
    assert _ingest_figure(row) is None
