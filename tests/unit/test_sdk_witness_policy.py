"""The trust root's witness policy (k of n cosignatures), enforced by the SDK on every cut,
against a fake publisher that signs real cuts and real witness keys that cosign them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.unit.sdk_fake import (
    START,
    FakePublisher,
    make_trust_root,
    publisher_key,
    with_two_cuts,
    witness_key,
)
from veritally_client import (
    Client,
    ClientConfig,
    ForkError,
    InsufficientCosignaturesError,
    StaleCheckpointError,
    TrustRootError,
    VerificationError,
    verify_evidence,
)
from veritally_client._checkpoint import Checkpoint
from veritally_client._cosignature import Cosignature, CosignatureSigner
from veritally_client._gen.veritally.v1 import log_pb2
from veritally_client._trustroot import TrustedRoot

CONFIG = ClientConfig(max_checkpoint_age=300.0, max_clock_skew=30.0)


def witnessed(*, cosigning: list[int] | None = None, k: int = 2) -> FakePublisher:
    """A publisher with witnesses w0, w1, w2 and a k-of-3 policy, and two cuts."""
    pub = FakePublisher(
        witnesses=[witness_key(i) for i in range(3)], witness_threshold=k, cosigning=cosigning
    )
    return with_two_cuts(pub)


def client_for(pub: FakePublisher, state_dir: Path) -> Client:
    return Client.from_transport(
        pub, trust_root=pub.trust_root(), state_dir=state_dir, config=CONFIG, clock=lambda: pub.now
    )


def with_lines(cut: log_pb2.SignedCut, *lines: str) -> log_pb2.SignedCut:
    out = log_pb2.SignedCut()
    out.CopyFrom(cut)
    out.checkpoint = cut.checkpoint + "".join(lines).encode()
    return out


def text_of(cut: log_pb2.SignedCut) -> str:
    return cut.checkpoint.decode().split("\n\n", 1)[0] + "\n"


def assert_refused_with_valid(pub: FakePublisher, state_dir: Path, valid: int) -> None:
    with pytest.raises(InsufficientCosignaturesError) as e:
        client_for(pub, state_dir).latest()
    assert e.value.valid == valid


def test_accepts_a_cut_cosigned_by_two_of_three_witnesses(tmp_path: Path) -> None:
    pub = witnessed(cosigning=[0, 2])
    cut = client_for(pub, tmp_path).latest()
    assert cut.cut_number == 2
    # The cosigned note is what the client keeps.
    assert cut.note == pub.cuts[-1].checkpoint
    assert cut.note.count("— witness.example/".encode()) == 2


def test_rejects_cut_cosigned_by_one_witness_of_a_two_of_three_policy(tmp_path: Path) -> None:
    pub = witnessed(cosigning=[1])
    client = client_for(pub, tmp_path)
    with pytest.raises(InsufficientCosignaturesError) as e:
        client.latest()
    assert (e.value.valid, e.value.required) == (1, 2)
    assert e.value.note == pub.cuts[-1].checkpoint  # signed by the publisher: evidence
    assert isinstance(e.value, VerificationError)
    assert not (client._store.directory / "state.json").exists()


def test_rejects_k_minus_one_valid_cosignatures_plus_forged_ones(tmp_path: Path) -> None:
    pub = witnessed(cosigning=[0])
    honest = pub.cuts[-1]
    real = witness_key(1)
    # w1's name and key id over a signature by another key; and w2's over another text.
    forger = CosignatureSigner(name=real.name, seed=b"\x99" * 32)
    stamp = int(pub.now.timestamp())
    forged = Cosignature(
        name=real.name,
        key_id=real.key_id,
        timestamp=stamp,
        signature=forger.cosign(text_of(honest), timestamp=stamp).signature,
    )
    other_text = Checkpoint(pub.origin, 1, bytes(32)).to_text()
    wrong_message = witness_key(2).cosign(other_text, timestamp=stamp)
    pub.latest_override = with_lines(honest, forged.line(), wrong_message.line())
    assert_refused_with_valid(pub, tmp_path, 1)


def test_counts_a_cosigner_repeated_in_one_note_once(tmp_path: Path) -> None:
    pub = witnessed(cosigning=[0])
    stamp = int(pub.now.timestamp())
    again = witness_key(0).cosign(text_of(pub.cuts[-1]), timestamp=stamp - 1)
    pub.latest_override = with_lines(pub.cuts[-1], again.line())
    assert_refused_with_valid(pub, tmp_path, 1)


def test_ignores_cosignatures_of_witnesses_not_in_the_trust_root(tmp_path: Path) -> None:
    pub = witnessed(cosigning=[0])
    stamp = int(pub.now.timestamp())
    stranger = witness_key(7).cosign(text_of(pub.cuts[-1]), timestamp=stamp)
    pub.latest_override = with_lines(pub.cuts[-1], stranger.line())
    with pytest.raises(InsufficientCosignaturesError):
        client_for(pub, tmp_path / "a").latest()
    # Nor do they make a note with its quorum malformed.
    pub = witnessed(cosigning=[0, 1])
    pub.latest_override = with_lines(pub.cuts[-1], stranger.line())
    assert client_for(pub, tmp_path / "b").latest().cut_number == 2


def test_rejects_cut_whose_cosignatures_are_stale(tmp_path: Path) -> None:
    pub = FakePublisher(
        witnesses=[witness_key(i) for i in range(3)],
        witness_threshold=2,
        cosign_offset=dt.timedelta(seconds=-400),  # cosigned long before the cut time
    )
    with_two_cuts(pub)
    with pytest.raises(StaleCheckpointError):
        client_for(pub, tmp_path).latest()


def test_kth_newest_cosignature_bounds_freshness(tmp_path: Path) -> None:
    # One fresh cosignature and one stale one: the second newest (k = 2) is stale.
    pub = witnessed(cosigning=[0])
    stale = witness_key(1).cosign(text_of(pub.cuts[-1]), timestamp=int(pub.now.timestamp()) - 400)
    pub.latest_override = with_lines(pub.cuts[-1], stale.line())
    with pytest.raises(StaleCheckpointError):
        client_for(pub, tmp_path).latest()


def test_rejects_cosignatures_from_beyond_the_clock_skew(tmp_path: Path) -> None:
    pub = FakePublisher(
        witnesses=[witness_key(i) for i in range(3)],
        witness_threshold=2,
        cosign_offset=dt.timedelta(seconds=120),
    )
    with_two_cuts(pub)
    with pytest.raises(StaleCheckpointError):
        client_for(pub, tmp_path).latest()


def test_uncosigned_second_root_for_a_verified_size_is_kept_as_fork_evidence(
    tmp_path: Path,
) -> None:
    pub = witnessed()
    client = client_for(pub, tmp_path)
    verified = client.latest()
    # The same key signs another history of the same size, which no witness cosigned.
    other = with_two_cuts(FakePublisher(seed=99))
    pub.latest_override = other.cuts[-1]
    with pytest.raises(ForkError) as info:
        client.latest()
    assert info.value.evidence == (verified.note, other.cuts[-1].checkpoint)
    exported = client.export_evidence()
    assert verify_evidence(exported, trust_root=pub.trust_root()) == 1


def test_policy_zero_accepts_cuts_without_cosignatures(tmp_path: Path) -> None:
    pub = with_two_cuts(FakePublisher())
    assert client_for(pub, tmp_path).latest().cut_number == 2


@pytest.mark.parametrize(("keys", "k"), [(0, 1), (2, 0), (2, 3)])
def test_rejects_trust_root_with_witness_threshold_out_of_range(keys: int, k: int) -> None:
    doc = make_trust_root(
        [publisher_key()], witnesses=[witness_key(i) for i in range(keys)], witness_threshold=k
    )
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(doc, now=START)


def test_rejects_trust_root_listing_a_witness_twice() -> None:
    doc = make_trust_root(
        [publisher_key()], witnesses=[witness_key(1), witness_key(1)], witness_threshold=1
    )
    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(doc, now=START)


def test_rejects_trust_root_with_a_publisher_key_listed_as_witness() -> None:
    body = log_pb2.TrustRoot.FromString(make_trust_root([publisher_key()])).body
    pb = log_pb2.TrustRootBody.FromString(body)
    pb.witness_keys.append(publisher_key().verifier().key_string())  # type 0x01, not 0x04
    pb.witness_threshold = 1
    from veritally_client._trustroot import sign_trust_root

    with pytest.raises(TrustRootError):
        TrustedRoot.from_bytes(sign_trust_root(pb, [publisher_key()]), now=START)


def test_rotation_adds_witnesses_signed_by_the_old_publisher_key(tmp_path: Path) -> None:
    key = publisher_key()
    v1 = TrustedRoot.from_bytes(make_trust_root([key]), now=START)
    v2_doc = make_trust_root(
        [key], version=2, witnesses=[witness_key(0), witness_key(1)], witness_threshold=2
    )
    v2 = v1.update(v2_doc, now=START)
    assert [w.name for w in v2.witnesses] == ["witness.example/w0", "witness.example/w1"]
    assert v2.witness_threshold == 2
    # Not by a witness's key or anyone else's.
    stranger = publisher_key("stranger.example", b"\x05" * 32)
    forged = make_trust_root(
        [key], version=2, witnesses=[witness_key(0)], witness_threshold=1, signed_by=[stranger]
    )
    with pytest.raises(TrustRootError):
        v1.update(forged, now=START)


def test_client_follows_a_rotation_that_adds_witnesses(tmp_path: Path) -> None:
    pub = witnessed()
    key = pub.signers[0]
    v1 = make_trust_root([key])
    v2 = make_trust_root([key], version=2, witnesses=pub.witnesses, witness_threshold=2)
    pub.trust_root_versions = [v1, v2]
    client = Client.from_transport(
        pub,
        trust_root=TrustedRoot.from_bytes(v1, now=START),
        state_dir=tmp_path,
        config=CONFIG,
        clock=lambda: pub.now,
    )
    assert client.latest().cut_number == 2
    assert client.refresh_trust_root().witness_threshold == 2
    # Now under v2, a cut with one cosignature is refused.
    pub.cosigning = [2]
    pub.step()
    with pytest.raises(InsufficientCosignaturesError):
        client.latest()
