"""Every attack on a cut is rejected with its own error type, against a fake publisher
that signs real cuts. Nothing is persisted when a check fails."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from tests.unit.sdk_fake import FakePublisher, publisher_key, with_two_cuts
from veritally_client import (
    BadProofError,
    BadSignatureError,
    Client,
    ClientConfig,
    DigestMismatchError,
    ForkError,
    MalformedDataError,
    RollbackError,
    StaleCheckpointError,
    UnknownKeyError,
    VerificationError,
    verify_evidence,
)
from veritally_client._checkpoint import Checkpoint, parse_checkpoint
from veritally_client._gen.veritally.v1 import acta_pb2, log_pb2, results_pb2
from veritally_client._signing import Signer

CONFIG = ClientConfig(max_checkpoint_age=300.0, max_clock_skew=30.0)


def client_for(pub: FakePublisher, state_dir: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=CONFIG, clock=lambda: pub.now
    )


def state_bytes(client: Client) -> bytes | None:
    path = client._store.directory / "state.json"
    return path.read_bytes() if path.exists() else None


def copy(cut: log_pb2.SignedCut) -> log_pb2.SignedCut:
    out = log_pb2.SignedCut()
    out.CopyFrom(cut)
    return out


@pytest.fixture
def pub() -> FakePublisher:
    return with_two_cuts(FakePublisher())


def test_accepts_honest_cuts_and_persists_them(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    first = client.latest()
    assert first.cut_number == 2
    assert first.tree_size == 9
    pub.step(5)
    second = client.latest()
    assert second.cut_number == 3
    state = client.trusted_state
    assert state is not None
    assert (state.cut_number, state.tree_size, state.root_hash) == (3, 15, second.root_hash)
    assert second.national().contests[0].contest_id == "PRES"


def test_rejects_rollback_to_lower_tree_size(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    old = pub.cuts[0]
    pub.latest_override = old
    before = state_bytes(client)
    with pytest.raises(RollbackError):
        client.latest()
    assert state_bytes(client) == before


def test_rejects_replayed_old_cut_in_the_stream(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.step(2)
    pub.stream_cuts_override = [pub.cuts[2], pub.cuts[0]]
    seen: list[int] = []

    def follow() -> None:
        for cut in client.watch():
            seen.append(cut.cut_number)

    with pytest.raises(RollbackError):
        follow()
    assert seen == [3]
    state = client.trusted_state
    assert state is not None
    assert state.cut_number == 3


def test_rejects_fork_at_equal_size_and_keeps_both_notes(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    verified = client.latest()
    # The same keys sign another history of the same size.
    other = with_two_cuts(FakePublisher(seed=99))
    assert other.cuts[-1].checkpoint != verified.note
    pub.latest_override = other.cuts[-1]
    before = state_bytes(client)
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence == (verified.note, other.cuts[-1].checkpoint)
    assert state_bytes(client) == before
    exported = client.export_evidence()
    assert verify_evidence(exported, trust_root=pub.trust_root()) == 1


def test_rejects_fork_by_non_extending_larger_tree(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    verified = client.latest()
    other = with_two_cuts(FakePublisher(seed=99))
    other.step(6)
    pub.latest_override = other.cuts[-1]
    # The forked publisher serves an honest proof of ITS tree: it reaches its signed
    # root, and shows that its first 9 leaves are not the ones verified.
    pub.consistency_override = other.tree.consistency_proof
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence == (verified.note, other.cuts[-1].checkpoint)
    assert client.trusted_state is not None
    assert client.trusted_state.tree_size == verified.tree_size
    assert verify_evidence(client.export_evidence(), trust_root=pub.trust_root()) == 1


def test_exported_evidence_fails_under_another_trust_root(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    other = with_two_cuts(FakePublisher(seed=99))
    pub.latest_override = other.cuts[-1]
    with pytest.raises(ForkError):
        client.latest()
    stranger = FakePublisher(signers=[Signer.generate("prep.example")])
    with pytest.raises(UnknownKeyError):
        verify_evidence(client.export_evidence(), trust_root=stranger.trust_root())


def test_rejects_same_cut_number_in_a_different_tree(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()  # cut 2 at size 9
    # A publisher that re-issues cut 2 over more records: same number, other tree.
    other = FakePublisher(seed=1)
    other.step(4)
    other.add_actas(3)
    other.add_actas(2)
    other.make_cut()
    pub.latest_override = other.cuts[-1]
    pub.consistency_override = other.tree.consistency_proof
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence[1] == other.cuts[-1].checkpoint
    assert client.trusted_state is not None
    assert client.trusted_state.cut_number == 2


def test_rejects_stale_cut(pub: FakePublisher, tmp_path: Path) -> None:
    late = pub.now + dt.timedelta(seconds=CONFIG.max_checkpoint_age + 1)
    client = Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=tmp_path, config=CONFIG, clock=lambda: late
    )
    with pytest.raises(StaleCheckpointError):
        client.latest()
    assert client.trusted_state is None


def test_rejects_cut_from_the_future(pub: FakePublisher, tmp_path: Path) -> None:
    early = pub.now - dt.timedelta(seconds=CONFIG.max_clock_skew + 1)
    client = Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=tmp_path, config=CONFIG, clock=lambda: early
    )
    with pytest.raises(StaleCheckpointError):
        client.latest()


def test_rejects_tampered_results_blob(pub: FakePublisher, tmp_path: Path) -> None:
    cut = copy(pub.cuts[-1])
    blob = bytearray(cut.results)
    blob[-1] ^= 0x01
    cut.results = bytes(blob)
    pub.latest_override = cut
    client = client_for(pub, tmp_path)
    with pytest.raises(DigestMismatchError):
        client.latest()
    assert client.trusted_state is None


def test_rejects_tampered_cut_leaf(pub: FakePublisher, tmp_path: Path) -> None:
    cut = copy(pub.cuts[-1])
    leaf = acta_pb2.LogLeaf.FromString(cut.cut_leaf)
    leaf.cut_record.acta_records += 1  # claim to cover one more record
    cut.cut_leaf = leaf.SerializeToString(deterministic=True)
    pub.latest_override = cut
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).latest()


def test_rejects_cut_record_that_is_not_the_last_leaf(pub: FakePublisher, tmp_path: Path) -> None:
    # Serve the newest signed tree with the FIRST cut's record (leaf 4) and its genuine
    # inclusion proof at index 4: included, but not as the last leaf.
    first_index = 4
    cut = copy(pub.cuts[-1])
    cut.cut_leaf = pub.leaves[first_index]
    del cut.inclusion_proof[:]
    cut.inclusion_proof.extend(pub.tree.inclusion_proof(first_index, pub.tree.size))
    cut.results = pub.cuts[0].results
    pub.latest_override = cut
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).latest()


def test_rejects_truncated_inclusion_proof(pub: FakePublisher, tmp_path: Path) -> None:
    cut = copy(pub.cuts[-1])
    del cut.inclusion_proof[-1]
    pub.latest_override = cut
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).latest()


def test_rejects_altered_inclusion_proof(pub: FakePublisher, tmp_path: Path) -> None:
    cut = copy(pub.cuts[-1])
    cut.inclusion_proof[0] = bytes(32)
    pub.latest_override = cut
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).latest()


def test_rejects_truncated_consistency_proof(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.step(5)
    pub.consistency_override = lambda a, b: pub.tree.consistency_proof(a, b)[:-1]
    before = state_bytes(client)
    with pytest.raises(BadProofError):
        client.latest()
    assert state_bytes(client) == before


def test_rejects_altered_consistency_proof_without_calling_it_a_fork(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.step(5)

    def altered(a: int, b: int) -> list[bytes]:
        proof = pub.tree.consistency_proof(a, b)
        proof[-1] = bytes(32)
        return proof

    pub.consistency_override = altered
    with pytest.raises(BadProofError) as info:
        client.latest()
    assert not isinstance(info.value, ForkError)
    assert client.export_evidence().count(b'"kind"') == 0


def test_rejects_signature_that_does_not_verify_under_a_trusted_key(
    pub: FakePublisher, tmp_path: Path
) -> None:
    cut = copy(pub.cuts[-1])
    # Change the signed text (claim another root) but keep the trusted key's signature.
    text, _, sigs = cut.checkpoint.partition(b"\n\n")
    cp = parse_checkpoint(text.decode() + "\n")
    forged = Checkpoint(cp.origin, cp.size, bytes(32)).to_text().encode()
    cut.checkpoint = forged.rstrip(b"\n") + b"\n\n" + sigs
    pub.latest_override = cut
    with pytest.raises(BadSignatureError):
        client_for(pub, tmp_path).latest()


def test_rejects_checkpoint_signed_by_wrong_key_with_the_trusted_name(
    pub: FakePublisher, tmp_path: Path
) -> None:
    impostor = Signer.generate(pub.signers[0].name)
    pub.make_cut(signers=[impostor])
    with pytest.raises(UnknownKeyError):
        client_for(pub, tmp_path).latest()


def test_rejects_checkpoint_signed_by_unknown_key_only(pub: FakePublisher, tmp_path: Path) -> None:
    pub.make_cut(signers=[Signer.generate("someone-else")])
    with pytest.raises(UnknownKeyError):
        client_for(pub, tmp_path).latest()


def test_ignores_unknown_signature_next_to_a_trusted_one(
    pub: FakePublisher, tmp_path: Path
) -> None:
    pub.make_cut(signers=[Signer.generate("witness"), pub.signers[0]])
    assert client_for(pub, tmp_path).latest().cut_number == 3


def test_rejects_checkpoint_below_the_signing_threshold(tmp_path: Path) -> None:
    a, b = publisher_key("a", b"\x01" * 32), publisher_key("b", b"\x02" * 32)
    pub = FakePublisher(signers=[a, b])
    pub.step(3)
    pub.make_cut(signers=[a])
    client = Client.from_transport(
        pub,
        trust_root=pub.trust_root(threshold=2),
        state_dir=tmp_path,
        config=CONFIG,
        clock=lambda: pub.now,
    )
    with pytest.raises(UnknownKeyError):
        client.latest()


def test_rejects_checkpoint_of_another_log(pub: FakePublisher, tmp_path: Path) -> None:
    cut = copy(pub.cuts[-1])
    cp = parse_checkpoint(cut.checkpoint.partition(b"\n\n")[0].decode() + "\n")
    cut.checkpoint = pub.sign(dataclasses.replace(cp, origin="other.example/log"))
    pub.latest_override = cut
    with pytest.raises(MalformedDataError):
        client_for(pub, tmp_path).latest()


def test_rejects_results_of_another_election_definition(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.add_actas(2)

    def other_definition(results: object) -> None:
        results.definition_sha256 = bytes(32)  # type: ignore[attr-defined]  # a Results

    pub.make_cut(results_mutator=other_definition)
    with pytest.raises(DigestMismatchError):
        client.latest()


def test_rejects_results_that_cover_other_records_than_the_cut(
    pub: FakePublisher, tmp_path: Path
) -> None:
    def shifted(results: object) -> None:
        results.acta_records += 1  # type: ignore[attr-defined]  # a Results

    pub.add_actas(1)
    pub.make_cut(results_mutator=shifted)
    with pytest.raises(MalformedDataError):
        client_for(pub, tmp_path).latest()


def test_state_is_not_persisted_when_any_check_fails(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    before = state_bytes(client)
    assert before is not None
    pub.step(2)
    cut = copy(pub.cuts[-1])
    cut.results = cut.results + b"\x00"
    pub.latest_override = cut
    with pytest.raises(VerificationError):
        client.latest()
    assert state_bytes(client) == before
    pub.latest_override = None
    assert client.latest().cut_number == 3
    assert state_bytes(client) != before


def test_verified_cut_cannot_be_built_outside_the_verifier(pub: FakePublisher) -> None:
    from veritally_client import VerifiedCut

    with pytest.raises(TypeError):
        VerifiedCut(  # type: ignore[call-arg]  # no guard token, on purpose
            checkpoint=Checkpoint("x", 1, bytes(32)),
            note=b"",
            cut_leaf=b"",
            inclusion_proof=(),
            cut_record=acta_pb2.CutRecord(),
            cut_time=dt.datetime.now(dt.UTC),
            results=results_pb2.Results(),
            results_bytes=b"",
        )
