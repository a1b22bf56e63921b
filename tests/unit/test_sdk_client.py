"""The client's verbs against a fake publisher signing real cuts: watch with reconnection,
past cuts, acta proofs, recount, offline bundles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.unit.sdk_fake import (
    FakePublisher,
    make_trust_root,
    publisher_key,
    with_two_cuts,
    write_bundle,
)
from veritally_client import (
    BadProofError,
    Client,
    ClientConfig,
    DigestMismatchError,
    ForkError,
    MalformedDataError,
    RecountMismatchError,
    TransportError,
    TrustRootError,
    UnknownIdError,
    WatchEvent,
    verify_bundle,
)
from veritally_client._gen.veritally.v1 import acta_pb2, log_pb2, publication_pb2, results_pb2
from veritally_client._signing import Signer

CONFIG = ClientConfig(
    max_checkpoint_age=300.0,
    watch_backoff_initial=0.001,
    watch_backoff_max=0.004,
    max_leaves_per_page=5,
)


def client_for(pub: FakePublisher, state_dir: Path, config: ClientConfig = CONFIG) -> Client:
    client = Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=config, clock=lambda: pub.now
    )
    client._sleep = lambda _s: None  # backoff is exercised, not waited for
    return client


@pytest.fixture
def pub() -> FakePublisher:
    return with_two_cuts(FakePublisher())


# -- watch -------------------------------------------------------------------------------


def test_watch_reconnects_after_stream_failures_and_resumes(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()  # cut 2 verified before
    pub.step(2)
    pub.step(2)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            pub.step(1)  # cut 5 is made while the client backs off

    client._sleep = sleep
    numbers = []
    for cut in client.watch():
        numbers.append(cut.cut_number)
        if cut.cut_number == 4:
            pub.stream_failures = 3
        if cut.cut_number == 5:
            break
    # The newest cut is verified first on (re)connection; cut 3 was covered by the
    # consistency proof from 2 to 4 and is not yielded on its own.
    assert numbers == [4, 5]
    assert pub.stream_failures == 0
    assert sleeps[:3] == [0.001, 0.002, 0.004]


def test_watch_yields_each_new_cut_once_in_order(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    stream = client.watch()
    assert next(stream).cut_number == 2
    pub.step(1)
    pub.step(1)
    assert [next(stream).cut_number, next(stream).cut_number] == [3, 4]
    stream.close()
    # A silent stream is dropped after the longest a cut may age.
    assert set(pub.idle_timeouts) == {CONFIG.max_checkpoint_age}


def test_watch_gives_up_after_configured_failures(pub: FakePublisher, tmp_path: Path) -> None:
    config = ClientConfig(
        max_checkpoint_age=300.0,
        watch_backoff_initial=0.001,
        watch_backoff_max=0.002,
        watch_max_failures=3,
    )
    client = client_for(pub, tmp_path, config)
    pub.stream_failures = 10
    events: list[WatchEvent] = []
    stream = client.watch(on_event=events.append)
    assert next(stream).cut_number == 2
    with pytest.raises(TransportError, match="gave up after 3 attempts"):
        next(stream)
    # Each failed attempt but the last was heard, with its attempt and backoff; between
    # them the reconnection's check of the newest cut worked (then the stream broke).
    assert [(e.kind, e.failures, e.retry_in) for e in events] == [
        ("reconnecting", 1, 0.001),
        ("connected", 0, 0.0),
        ("reconnecting", 2, 0.002),
        ("connected", 0, 0.0),
    ]
    assert all(e.error for e in events if e.kind == "reconnecting")


def test_watch_says_when_it_reconnects_and_when_it_is_connected_again(
    pub: FakePublisher, tmp_path: Path
) -> None:
    config = ClientConfig(
        max_checkpoint_age=300.0, watch_backoff_initial=0.001, watch_backoff_max=0.002
    )
    client = client_for(pub, tmp_path, config)
    pub.stream_failures = 1
    events: list[WatchEvent] = []
    stream = client.watch(on_event=events.append)
    assert next(stream).cut_number == 2
    pub.step(1)
    assert next(stream).cut_number == 3
    assert [(e.kind, e.failures) for e in events] == [("reconnecting", 1), ("connected", 0)]


def test_watch_checks_consistency_across_gaps(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.step(2)
    pub.step(2)
    # The stream skips cut 3; cut 4 must still be proven to extend cut 2.
    pub.stream_cuts_override = [pub.cuts[3]]
    asked: list[tuple[int, int]] = []

    def record(a: int, b: int) -> list[bytes]:
        asked.append((a, b))
        return pub.tree.consistency_proof(a, b)

    pub.consistency_override = record
    stream = client.watch()
    assert next(stream).cut_number == 4
    assert asked == [(9, pub.tree.size)]


# -- past cuts ---------------------------------------------------------------------------


def test_past_cut_is_verified_against_the_trusted_tree(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    pub.step(3)
    client.latest()
    first = client.cut(1)
    assert (first.cut_number, first.tree_size) == (1, 5)
    state = client.trusted_state
    assert state is not None
    assert state.cut_number == 3  # a past cut never moves the trusted state


def test_rejects_past_cut_under_another_number(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    original = pub.get_cut
    pub.get_cut = lambda cut_number: original(1)  # type: ignore[method-assign]  # misbehave
    with pytest.raises(MalformedDataError):
        client.cut(2)


# -- acta proofs -------------------------------------------------------------------------


def test_proves_acta_and_its_correction(pub: FakePublisher, tmp_path: Path) -> None:
    aid = pub.add_actas(1)[0]
    pub.correct(aid)
    pub.make_cut()
    client = client_for(pub, tmp_path)
    latest = client.prove_acta(aid)
    first = client.prove_acta(aid, revision=1)
    assert (latest.record.revision, first.record.revision) == (2, 1)
    assert latest.leaf_index > first.leaf_index
    assert latest.tree_size == pub.tree.size


def test_rejects_tampered_acta_leaf(pub: FakePublisher, tmp_path: Path) -> None:
    def tamper(leaf: bytes, proof: log_pb2.InclusionProof) -> tuple[bytes, log_pb2.InclusionProof]:
        pb = acta_pb2.LogLeaf.FromString(leaf)
        pb.acta_record.acta.option_votes[0].votes += 100
        return pb.SerializeToString(deterministic=True), proof

    pub.inclusion_override = tamper
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).prove_acta("01-01-0001-B1/PRES")


def test_rejects_proof_of_another_acta(pub: FakePublisher, tmp_path: Path) -> None:
    other_index = 1

    def swap(leaf: bytes, proof: log_pb2.InclusionProof) -> tuple[bytes, log_pb2.InclusionProof]:
        p = log_pb2.InclusionProof(
            leaf_index=other_index,
            tree_size=proof.tree_size,
            hashes=pub.tree.inclusion_proof(other_index, proof.tree_size),
        )
        return pub.leaves[other_index], p

    pub.inclusion_override = swap
    with pytest.raises(MalformedDataError):
        client_for(pub, tmp_path).prove_acta("01-01-0001-B1/PRES")


def test_rejects_acta_proof_for_another_tree_size(pub: FakePublisher, tmp_path: Path) -> None:
    def smaller(leaf: bytes, proof: log_pb2.InclusionProof) -> tuple[bytes, log_pb2.InclusionProof]:
        size = proof.tree_size - 1
        return leaf, log_pb2.InclusionProof(
            leaf_index=proof.leaf_index,
            tree_size=size,
            hashes=pub.tree.inclusion_proof(proof.leaf_index, size),
        )

    pub.inclusion_override = smaller
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).prove_acta("01-01-0001-B1/PRES")


# -- recount -----------------------------------------------------------------------------


def test_recount_recomputes_every_cut_and_the_root(pub: FakePublisher, tmp_path: Path) -> None:
    aid = pub.add_actas(2)[0]
    pub.correct(aid)
    pub.make_cut(final=True)
    client = client_for(pub, tmp_path)
    progress: list[tuple[int, int]] = []
    report = client.recount(progress=lambda done, total: progress.append((done, total)))
    assert [c.cut_number for c in report.cuts] == [1, 2, 3]
    assert report.cuts[-1].final
    assert report.root_hash == pub.tree.root()
    assert progress[-1] == (pub.tree.size, pub.tree.size)
    assert len(progress) == -(-pub.tree.size // CONFIG.max_leaves_per_page)
    # Navigation below the signed levels, from the recounted records.
    casilla = report.unit("casilla", "01-01-0001-B1")
    assert casilla.contests[0].completeness.actas_counted == 1
    section = report.unit("section", "01-01-0001")
    district = client.latest().unit("district", "01-01")
    assert report.unit("district", "01-01") == district
    assert section.contests[0].total_votes <= district.contests[0].total_votes
    # An unknown unit says which ids there are (it used to be a bare LookupError).
    with pytest.raises(UnknownIdError, match="valid state ids: '01', '02'") as caught:
        report.unit("state", "9")
    assert caught.value.valid == ("01", "02")
    with pytest.raises(UnknownIdError, match="no casilla 'nope'"):
        report.unit("casilla", "nope")


def test_recount_finds_results_differing_from_a_signed_cut(
    pub: FakePublisher, tmp_path: Path
) -> None:
    pub.add_actas(2)

    def inflate(results: results_pb2.Results) -> None:
        results.units[0].contests[0].options[0].votes += 1000

    pub.make_cut(results_mutator=inflate)  # cut 3: signed, but not its log's results
    pub.step(2)
    client = client_for(pub, tmp_path)
    assert client.latest().cut_number == 4  # each cut verifies on its own
    with pytest.raises(RecountMismatchError):
        client.recount()


def test_recount_rejects_tampered_leaf_as_bad_proof(pub: FakePublisher, tmp_path: Path) -> None:
    pb = acta_pb2.LogLeaf.FromString(pub.leaves[2])
    pb.acta_record.acta.null_votes += 1
    pub.leaf_override[2] = pb.SerializeToString(deterministic=True)
    with pytest.raises(BadProofError):
        client_for(pub, tmp_path).recount()


def test_recount_rejects_short_pages_that_never_end(pub: FakePublisher, tmp_path: Path) -> None:
    pub.get_leaves = lambda start, count: []  # type: ignore[method-assign]  # misbehave
    with pytest.raises(MalformedDataError):
        client_for(pub, tmp_path).recount()


def test_rejects_election_definition_other_than_the_signed_one(
    pub: FakePublisher, tmp_path: Path
) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    pub.get_election_definition = lambda: b"\x0a\x01x"  # type: ignore[method-assign]
    with pytest.raises((DigestMismatchError, MalformedDataError)):
        client.election()


# -- offline bundle ----------------------------------------------------------------------


def test_verifies_offline_bundle(pub: FakePublisher, tmp_path: Path) -> None:
    pub.step(5)
    write_bundle(pub, tmp_path / "b")
    report = verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)
    assert report.latest.cut_number == 3
    assert [c.cut_number for c in report.recount.cuts] == [1, 2, 3]


def test_bundle_read_mid_cut_verifies_the_cut_latest_names(
    pub: FakePublisher, tmp_path: Path
) -> None:
    # The publisher writes a cut's file before it moves ``latest``: a reader (or a
    # mirror) in between sees a cut file newer than the cut ``latest`` names.
    write_bundle(pub, tmp_path / "b")
    newer = pub.step(2)
    (tmp_path / "b" / "cuts" / "3.cut").write_bytes(newer.SerializeToString(deterministic=True))
    report = verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)
    assert report.latest.cut_number == 2
    assert [c.cut_number for c in report.cuts] == [1, 2]


def test_rejects_bundle_whose_latest_names_a_cut_it_lacks(
    pub: FakePublisher, tmp_path: Path
) -> None:
    write_bundle(pub, tmp_path / "b")
    (tmp_path / "b" / "cuts" / "1.cut").unlink()
    with pytest.raises(MalformedDataError):
        verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)


@pytest.mark.parametrize("legacy_format", [1, 2])
def test_verifies_offline_bundle_of_an_earlier_format(
    pub: FakePublisher, tmp_path: Path, legacy_format: int
) -> None:
    pub.step(5)
    write_bundle(pub, tmp_path / "b", legacy_format=legacy_format)
    report = verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)
    assert [c.cut_number for c in report.recount.cuts] == [1, 2, 3]
    assert report.recount.tree_size == 15


def test_rejects_first_format_bundle_with_tampered_leaf_page(
    pub: FakePublisher, tmp_path: Path
) -> None:
    write_bundle(pub, tmp_path / "b", legacy_format=1)
    page = tmp_path / "b" / "leaves" / "0-4.binpb"
    resp = publication_pb2.GetLeavesResponse.FromString(page.read_bytes())
    leaf = acta_pb2.LogLeaf.FromString(resp.leaves[1])
    leaf.acta_record.acta.option_votes[1].votes += 7
    resp.leaves[1] = leaf.SerializeToString(deterministic=True)
    page.write_bytes(resp.SerializeToString())
    with pytest.raises(BadProofError):
        verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)


def test_rejects_bundle_with_swapped_results(pub: FakePublisher, tmp_path: Path) -> None:
    write_bundle(pub, tmp_path / "b")
    cut = log_pb2.SignedCut.FromString((tmp_path / "b" / "cuts" / "2.cut").read_bytes())
    cut.results = pub.cuts[0].results
    (tmp_path / "b" / "cuts" / "2.cut").write_bytes(cut.SerializeToString())
    with pytest.raises(DigestMismatchError):
        verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)


def test_rejects_bundle_whose_old_cut_is_a_fork(pub: FakePublisher, tmp_path: Path) -> None:
    other = FakePublisher(seed=42)
    other.step(4)
    write_bundle(pub, tmp_path / "b")
    (tmp_path / "b" / "cuts" / "1.cut").write_bytes(other.cuts[0].SerializeToString())
    # Both trees are signed; the newest one's tiles prove the old cut is not its prefix.
    with pytest.raises(ForkError) as fork:
        verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)
    assert fork.value.evidence == (other.cuts[0].checkpoint, pub.cuts[-1].checkpoint)


def test_rejects_first_format_bundle_whose_old_cut_is_not_a_prefix(
    pub: FakePublisher, tmp_path: Path
) -> None:
    other = FakePublisher(seed=42)
    other.step(4)
    write_bundle(pub, tmp_path / "b", legacy_format=1)
    (tmp_path / "b" / "cuts" / "1.cut").write_bytes(other.cuts[0].SerializeToString())
    with pytest.raises(BadProofError):  # the recount: leaves that do not hash to its root
        verify_bundle(tmp_path / "b", trust_root=pub.trust_root(), now=pub.now)


def test_results_digest_in_bundle_matches_served_cut(pub: FakePublisher, tmp_path: Path) -> None:
    write_bundle(pub, tmp_path / "b")
    digest = hashlib.sha256(pub.cuts[-1].results).hexdigest()
    assert (tmp_path / "b" / "results" / digest).read_bytes() == pub.cuts[-1].results


# -- trust root rotation -----------------------------------------------------------------


def _rotate(pub: FakePublisher, new: Signer) -> None:
    """Trust root v2 lists only ``new``, signed by the old and the new key."""
    old = pub.signers[0]
    v1 = make_trust_root([old])
    v2 = make_trust_root([new], version=2, signed_by=[old, new])
    pub.trust_root_versions = [v1, v2]
    pub.signers = [new]


def test_follows_a_key_rotation_signed_by_the_old_keys(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    _rotate(pub, publisher_key("prep.example", b"\x09" * 32))
    pub.step(2)  # signed by the new key only
    assert client.latest().cut_number == 3
    assert client.trust_root.version == 2
    # A new client with the same state directory starts from v2 (re-verified from v1).
    client.close()
    again = client_for(pub, tmp_path)
    assert again.trust_root.version == 2


def test_refuses_a_rotation_not_signed_by_the_old_keys(pub: FakePublisher, tmp_path: Path) -> None:
    client = client_for(pub, tmp_path)
    client.latest()
    new = publisher_key("prep.example", b"\x09" * 32)
    forged = make_trust_root([new], version=2, signed_by=[new])
    pub.trust_root_versions = [make_trust_root(pub.signers), forged]
    pub.signers = [new]
    pub.step(2)
    with pytest.raises(TrustRootError):
        client.latest()
    assert client.trust_root.version == 1
    state = client.trusted_state
    assert state is not None
    assert state.cut_number == 2
