"""The results summary a cut record signs (docs/adr/0092-results-summary.md): one pure
writer shared by publication and the recount, one reader that checks the digest before
parsing, and the attacks on it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.pub_support import ORIGIN
from tests.unit.sdk_fake import FakePublisher
from veritally.publication.cutter import Cutter
from veritally.publication.store import PublicationStore
from veritally_client import (
    Client,
    ClientConfig,
    DigestMismatchError,
    MalformedDataError,
    RecountMismatchError,
)
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._signing import Signer
from veritally_client.protocol import (
    MAX_SUMMARY_BYTES,
    parse_cut_leaf,
    results_summary_bytes,
    verify_summary,
)

CONFIG = ClientConfig(max_checkpoint_age=300.0, max_leaves_per_page=5)


def _publisher(cuts: int = 2) -> FakePublisher:
    pub = FakePublisher(sign_summaries=True)
    for _ in range(cuts):
        pub.step(3)
    return pub


def _record(pub: FakePublisher, number: int = -1) -> acta_pb2.CutRecord:
    return parse_cut_leaf(pub.cuts[number].cut_leaf)


def _client(pub: FakePublisher, state_dir: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=CONFIG, clock=lambda: pub.now
    )


# -- the writer ---------------------------------------------------------------------------


def test_summary_holds_nation_and_states_with_the_results_figures() -> None:
    pub = _publisher()
    blob = pub.cuts[-1].results
    results = results_pb2.Results.FromString(blob)
    parties = pub.election.party_ids
    summary = results_pb2.ResultsSummary.FromString(results_summary_bytes(blob, party_ids=parties))
    kept = [u for u in results.units if u.level in (1, 2)]
    assert [(u.level, u.unit_id) for u in summary.units] == [(u.level, u.unit_id) for u in kept]
    assert len(kept) < len(results.units)  # the districts are left out
    assert (summary.acta_records, summary.definition_sha256) == (
        results.acta_records,
        results.definition_sha256,
    )
    for unit, full in zip(summary.units, kept, strict=True):
        for got, want in zip(unit.contests, full.contests, strict=True):
            assert (got.contest_id, got.race_id) == (want.contest_id, want.race_id)
            assert list(got.candidate_votes) == [c.votes for c in want.candidates]
            assert [parties[i] for i in got.party_positions] == [p.party_id for p in want.parties]
            assert list(got.party_votes) == [p.votes for p in want.parties]
            assert got.total_votes == want.total_votes
            assert got.actas_counted == want.completeness.actas_counted
            assert got.counted_percent_e4 == want.completeness.counted_percent_e4


def test_summary_is_a_pure_function_of_the_results() -> None:
    pub = _publisher()
    blob = pub.cuts[-1].results
    parties = pub.election.party_ids
    first = results_summary_bytes(blob, party_ids=parties)
    assert results_summary_bytes(bytes(blob), party_ids=list(parties)) == first
    assert hashlib.sha256(first).digest() == _record(pub).summary_sha256


def test_summary_of_results_naming_an_unknown_party_is_a_caller_bug() -> None:
    pub = _publisher()
    with pytest.raises(ValueError, match="party order"):
        results_summary_bytes(pub.cuts[-1].results, party_ids=())


# -- the reader ---------------------------------------------------------------------------


def test_verify_summary_returns_the_signed_summary() -> None:
    pub = _publisher()
    record = _record(pub)
    summary = verify_summary(pub.summaries[record.summary_sha256], record=record)
    assert summary.acta_records == record.acta_records


def test_rejects_tampered_summary_as_digest_mismatch() -> None:
    pub = _publisher()
    record = _record(pub)
    forged = results_pb2.ResultsSummary.FromString(pub.summaries[record.summary_sha256])
    forged.units[0].contests[0].total_votes += 1000
    with pytest.raises(DigestMismatchError):
        verify_summary(forged.SerializeToString(deterministic=True), record=record)


def test_rejects_older_cuts_summary_served_for_a_newer_cut() -> None:
    pub = _publisher()
    older = _record(pub, -2)
    with pytest.raises(DigestMismatchError):
        verify_summary(pub.summaries[older.summary_sha256], record=_record(pub))


def test_rejects_oversized_summary_before_hashing() -> None:
    pub = _publisher()
    with pytest.raises(MalformedDataError, match="at most"):
        verify_summary(b"\x00" * (MAX_SUMMARY_BYTES + 1), record=_record(pub))


def test_rejects_summary_for_a_cut_that_signs_none() -> None:
    pub = FakePublisher()
    pub.step(3)
    with pytest.raises(MalformedDataError, match="signs no results summary"):
        verify_summary(b"", record=_record(pub))


def test_rejects_signed_summary_of_other_acta_records() -> None:
    pub = _publisher(cuts=1)

    def elsewhere(summary: results_pb2.ResultsSummary) -> None:
        summary.acta_records += 1

    pub.add_actas(2)
    pub.make_cut(summary_mutator=elsewhere)
    record = _record(pub)
    with pytest.raises(MalformedDataError, match="acta records"):
        verify_summary(pub.summaries[record.summary_sha256], record=record)


def test_rejects_garbage_summary_with_a_matching_digest() -> None:
    record = acta_pb2.CutRecord(cut_number=1, summary_sha256=hashlib.sha256(b"\xff").digest())
    with pytest.raises(MalformedDataError, match="does not parse"):
        verify_summary(b"\xff", record=record)


# -- the recount --------------------------------------------------------------------------


def test_recount_checks_every_signed_summary(tmp_path: Path) -> None:
    pub = _publisher(cuts=3)
    with _client(pub, tmp_path) as client:
        assert len(client.recount().cuts) == 3


def test_recount_rejects_signed_summary_that_is_not_the_results(tmp_path: Path) -> None:
    pub = _publisher(cuts=1)

    def inflate(summary: results_pb2.ResultsSummary) -> None:
        summary.units[0].contests[0].total_votes += 1000

    pub.add_actas(2)
    pub.make_cut(summary_mutator=inflate)  # cut 2: its results are right, its summary not
    pub.step(2)
    with _client(pub, tmp_path) as client:
        assert client.latest().cut_number == 3
        with pytest.raises(RecountMismatchError, match="summary"):
            client.recount()


# -- publication --------------------------------------------------------------------------


def test_cutter_signs_and_stores_the_summary_given_the_party_order(tmp_path: Path) -> None:
    pub = _publisher(cuts=1)
    record = _record(pub)
    leaves = [pub.leaves[i] for i in range(record.acta_records)]
    blob = pub.cuts[-1].results
    store = PublicationStore(tmp_path / "p.db")
    cutter = Cutter(store=store, signers=[Signer.from_seed(ORIGIN, bytes(32))], origin=ORIGIN)
    row = cutter.make_cut(
        acta_leaves=leaves,
        acta_records=len(leaves),
        results=blob,
        party_ids=pub.election.party_ids,
    )
    signed = parse_cut_leaf(row.cut_leaf)
    assert signed.summary_sha256 == record.summary_sha256
    assert store.results(signed.summary_sha256) == pub.summaries[record.summary_sha256]
    # Without the party order (no definition stored yet) the cut signs no summary.
    bare = Cutter(
        store=PublicationStore(tmp_path / "q.db"),
        signers=[Signer.from_seed(ORIGIN, bytes(32))],
        origin=ORIGIN,
    )
    unsigned = bare.make_cut(acta_leaves=leaves, acta_records=len(leaves), results=blob)
    assert parse_cut_leaf(unsigned.cut_leaf).summary_sha256 == b""
