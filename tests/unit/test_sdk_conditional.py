"""Conditional reads (docs/adr/0089): a client that holds the results of the cut it
verified is answered without them when they did not change, verifies that answer as
fully as a whole cut, and rejects each lie in it with its own error type."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, with_two_cuts
from tests.unit.test_sdk_attacks import CONFIG, client_for, state_bytes
from veritally_client import (
    BadProofError,
    DigestMismatchError,
    ForkError,
    MalformedDataError,
    RollbackError,
    StaleCheckpointError,
    verify_evidence,
)
from veritally_client._gen.veritally.v1 import acta_pb2, log_pb2, publication_pb2

HEARTBEAT = dt.timedelta(seconds=60)
GetLatestCutResponsePb = publication_pb2.GetLatestCutResponse


@pytest.fixture
def pub() -> FakePublisher:
    return with_two_cuts(FakePublisher())


def unchanged(
    cut: log_pb2.SignedCut, *, proof: list[bytes] | None = None, leaf: bool = True
) -> Callable[[int], GetLatestCutResponsePb]:
    """A publisher that answers ``cut`` without results, claiming they did not change."""
    served = log_pb2.SignedCut(checkpoint=cut.checkpoint)
    if leaf:
        served.cut_leaf = cut.cut_leaf
        served.inclusion_proof.extend(cut.inclusion_proof)
    answer = GetLatestCutResponsePb(
        cut=served, results_unchanged=True, consistency_proof=proof or []
    )
    return lambda _size: answer


def test_heartbeat_is_answered_without_results_and_verified(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    first = client.latest()
    assert first.results_changed  # nothing verified before
    pub.make_cut(advance=HEARTBEAT)  # cut 3: no new acta record
    cut = client.latest()
    ((size, answered),) = pub.since_answers
    assert size == first.tree_size
    assert answered < 1024 < len(first.results_bytes) + answered
    assert (cut.cut_number, cut.tree_size, cut.results_changed) == (3, 10, False)
    assert cut.results_bytes == first.results_bytes
    assert cut.national().contests[0].total_votes == first.national().contests[0].total_votes
    state = client.trusted_state
    assert state is not None
    assert (state.cut_number, state.tree_size) == (3, 10)


def test_same_cut_is_answered_with_its_checkpoint_only(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    first = client.latest()
    again = client.latest()
    ((_, answered),) = pub.since_answers
    assert answered < 400
    assert (again.cut_number, again.results_changed) == (first.cut_number, False)


def test_missed_heartbeats_are_proven_with_a_consistency_proof(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    for _ in range(3):
        pub.make_cut(advance=HEARTBEAT)
    cut = client.latest()
    assert (cut.cut_number, cut.tree_size, cut.results_changed) == (5, 12, False)


def test_new_results_are_sent_whole_and_flagged_changed(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    first = client.latest()
    pub.step(2)
    cut = client.latest()
    assert cut.results_changed
    assert cut.results_bytes != first.results_bytes


def test_verifying_an_unchanged_answer_takes_well_under_a_millisecond(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.make_cut(advance=HEARTBEAT)
    client.latest()
    rounds = 200
    started = time.process_time()
    for _ in range(rounds):
        client.latest()  # the same cut: its checkpoint, verified again
    assert (time.process_time() - started) / rounds < 0.001


def test_rejects_publisher_answering_unchanged_when_results_changed(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    before = state_bytes(client)
    pub.since_override = unchanged(pub.step(2))
    with pytest.raises(DigestMismatchError):
        client.latest()
    assert state_bytes(client) == before


def test_rejects_stale_checkpoint_in_unchanged_answer(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.now += dt.timedelta(seconds=CONFIG.max_checkpoint_age + 60)  # a frozen publisher
    with pytest.raises(StaleCheckpointError):
        client.latest()


def test_rejects_forked_checkpoint_of_the_verified_size_in_unchanged_answer(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    verified = client.latest()
    other = with_two_cuts(FakePublisher(seed=99))  # another history, same keys and size
    pub.since_override = unchanged(other.cuts[-1], leaf=False)
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence == (verified.note, other.cuts[-1].checkpoint)
    assert verify_evidence(client.export_evidence(), trust_root=pub.trust_root()) == 1


def test_rejects_forked_heartbeat_that_does_not_extend_the_verified_tree(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    verified = client.latest()
    digest = acta_pb2.LogLeaf.FromString(verified.cut_leaf).cut_record.results_sha256
    other = with_two_cuts(FakePublisher(seed=99))

    def same_digest(record: acta_pb2.CutRecord) -> None:
        record.results_sha256 = digest

    forked = other.make_cut(record_mutator=same_digest)  # one leaf more, another prefix
    pub.since_override = unchanged(forked)
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence == (verified.note, forked.checkpoint)
    assert verify_evidence(client.export_evidence(), trust_root=pub.trust_root()) == 1


def test_rejects_rollback_to_an_older_heartbeat_in_unchanged_answer(
    pub: FakePublisher, tmp_path: Path
) -> None:
    older = pub.make_cut(advance=HEARTBEAT)  # cut 3
    pub.make_cut(advance=HEARTBEAT)  # cut 4, same results
    client = client_for(pub, tmp_path)
    client.latest()
    pub.since_override = unchanged(older)
    with pytest.raises(RollbackError):
        client.latest()


def test_rejects_altered_consistency_proof_in_unchanged_answer(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    for _ in range(2):
        newest = pub.make_cut(advance=HEARTBEAT)
    proof = pub.tree.consistency_proof(9, 11)
    proof[0] = bytes(32)
    pub.since_override = unchanged(newest, proof=proof)
    with pytest.raises(BadProofError):
        client.latest()


def test_rejects_unchanged_answer_of_a_new_tree_without_its_cut_leaf(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.since_override = unchanged(pub.make_cut(advance=HEARTBEAT), leaf=False)
    with pytest.raises(MalformedDataError):
        client.latest()


def test_rejects_unchanged_answer_carrying_a_results_blob(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    heartbeat = pub.make_cut(advance=HEARTBEAT)
    answer = unchanged(heartbeat)(0)
    answer.cut.results = heartbeat.results
    pub.since_override = lambda _size: answer
    with pytest.raises(MalformedDataError):
        client.latest()


def test_a_new_process_reads_whole_then_knows_a_heartbeat(
    pub: FakePublisher, tmp_path: Path
) -> None:
    with client_for(pub, tmp_path) as client:
        client.latest()
    pub.make_cut(advance=HEARTBEAT)
    with client_for(pub, tmp_path) as client:
        cut = client.latest()  # nothing held: the whole cut, compared with the state
    assert not pub.since_answers
    assert (cut.cut_number, cut.results_changed) == (3, False)
