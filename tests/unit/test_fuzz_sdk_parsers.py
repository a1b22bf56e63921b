"""Bad input against the SDK's parsers: every malformed or tampered input raises one of
the SDK's typed errors (a ``VerificationError`` subclass, or ``TrustRootError`` for trust
root documents), never another exception, and never verifies.

Inputs are both arbitrary bytes and mutations (flipped, cut, inserted bytes) of REAL
signed material made by ``tests.unit.sdk_fake.FakePublisher``: mutations reach the deep
code paths that random bytes never get past the first check. The long version of these
properties runs in ``make soak`` (``bench.soak``) with many more examples.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.sdk_fake import START, FakePublisher, small_election, write_bundle
from veritally_client import (
    BadProofError,
    ClientConfig,
    MalformedDataError,
    TrustRootError,
    VerificationError,
    verify_bundle,
    verify_evidence,
)
from veritally_client._checkpoint import Checkpoint, parse_checkpoint
from veritally_client._election import ElectionIndex
from veritally_client._gen.veritally.v1 import acta_pb2, results_pb2
from veritally_client._merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from veritally_client._note import open_note
from veritally_client._recount import Recounter
from veritally_client._trustroot import TrustedRoot
from veritally_client._verify import CutVerifier, SignedCutBytes, claimed_tree_size

# Examples per property in `make test` (the soak runs thousands), and a per-example
# deadline (ms) generous enough for a loaded 2-core machine.
EXAMPLES = int(os.environ.get("VERITALLY_FUZZ_EXAMPLES", "150"))
DEADLINE_MS = 2_000
FAST = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,  # no example database written into the tree
)


def _publisher() -> FakePublisher:
    pub = FakePublisher()
    for _ in range(3):
        pub.step(actas=5)
    return pub


PUB = _publisher()
ROOT = PUB.trust_root()
VERIFIER = CutVerifier(trust_root=ROOT, config=ClientConfig())
LATEST = PUB.cuts[-1]
GOOD = SignedCutBytes(
    checkpoint=LATEST.checkpoint,
    cut_leaf=LATEST.cut_leaf,
    inclusion_proof=tuple(LATEST.inclusion_proof),
    results=LATEST.results,
)
DEFINITION = PUB.election.definition_sha256


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with one to three edits: flip, delete, insert or truncate."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "delete" and data:
            del data[at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    out = bytes(data)
    if out == original:  # every mutation above can cancel out; force a difference
        out += b"\x00"
    return out


def _raises_typed(call: Callable[[], object], *types: type[Exception]) -> None:
    """``call`` raises one of ``types`` (pytest reports any other exception as is)."""
    with pytest.raises(types):
        call()


# -- checkpoint text, signed notes --------------------------------------------------


def _checkpoint_text() -> str:
    return open_note(LATEST.checkpoint, ROOT.verifiers).text


@FAST
@given(st.text(max_size=300) | st.builds(lambda b: b.decode("latin-1"), mutated(b"x")))
def test_checkpoint_parser_rejects_arbitrary_text_with_malformed_data(text: str) -> None:
    try:
        checkpoint = parse_checkpoint(text)
    except MalformedDataError:
        return
    # Whatever parses must round-trip exactly (one text per checkpoint).
    assert checkpoint.to_text() == text


@FAST
@given(st.data())
def test_checkpoint_parser_rejects_mutated_checkpoints(data: st.DataObject) -> None:
    text = _checkpoint_text()
    bad = data.draw(mutated(text.encode())).decode("utf-8", errors="replace")
    try:
        checkpoint = parse_checkpoint(bad)
    except MalformedDataError:
        return
    assert checkpoint.to_text() == bad


@FAST
@given(st.binary(max_size=400))
def test_signed_note_rejects_arbitrary_bytes(note: bytes) -> None:
    _raises_typed(lambda: open_note(note, ROOT.verifiers), VerificationError)


@FAST
@given(st.data())
def test_signed_note_rejects_tampered_notes_or_keeps_the_signed_text(data: st.DataObject) -> None:
    bad = data.draw(mutated(LATEST.checkpoint))
    try:
        verified = open_note(bad, ROOT.verifiers)
    except VerificationError:
        return
    # A mutation confined to an unknown signer's line can still verify: the signed
    # text must then be exactly the original.
    assert verified.text == open_note(LATEST.checkpoint, ROOT.verifiers).text


@FAST
@given(st.binary(max_size=200))
def test_claimed_tree_size_rejects_notes_without_a_size(note: bytes) -> None:
    try:
        size = claimed_tree_size(note)
    except MalformedDataError:
        return
    assert size >= 0


def test_claimed_tree_size_is_the_size_each_honest_cut_verifies_at() -> None:
    # The rejection property above passes for a function that rejects everything; this
    # pins what it must read: each signed cut's size, as the verified checkpoint says
    # and as the publisher's log grew (5 actas and 1 cut record per step).
    sizes = [claimed_tree_size(cut.checkpoint) for cut in PUB.cuts]
    assert sizes == [
        parse_checkpoint(open_note(cut.checkpoint, ROOT.verifiers).text).size for cut in PUB.cuts
    ]
    assert sizes == [6 * n for n in range(1, len(PUB.cuts) + 1)]
    assert sizes[-1] == len(PUB.leaves)


@FAST
@given(size=st.integers(0, 2**64 - 1), root=st.binary(min_size=32, max_size=32))
def test_claimed_tree_size_reads_any_checkpoint_size(size: int, root: bytes) -> None:
    text = Checkpoint(origin="prep.example/e2026", size=size, root_hash=root).to_text()
    note = (text + "\n\u2014 prep.example/e2026 AAAA\n").encode()  # one (bogus) signature line
    assert claimed_tree_size(note) == size


# -- proofs ---------------------------------------------------------------------------

hashes = st.lists(st.binary(min_size=0, max_size=40), max_size=70)


@FAST
@given(
    leaf=st.binary(max_size=40),
    index=st.integers(0, 2**40),
    size=st.integers(0, 2**40),
    proof=hashes,
    root=st.binary(max_size=40),
)
def test_inclusion_verifier_rejects_random_proofs_with_bad_proof(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    _raises_typed(
        lambda: verify_inclusion(leaf_hash=leaf, index=index, size=size, proof=proof, root=root),
        BadProofError,
    )


@FAST
@given(
    size1=st.integers(0, 2**40),
    size2=st.integers(0, 2**40),
    proof=hashes,
    root1=st.binary(max_size=40),
    root2=st.binary(max_size=40),
)
def test_consistency_verifier_rejects_random_proofs_with_bad_proof(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> None:
    try:
        verify_consistency(size1=size1, size2=size2, proof=proof, root1=root1, root2=root2)
    except BadProofError:
        return
    # Only the trivial cases can pass: equal trees, or the empty tree.
    assert (size1 == size2 and root1 == root2 and not proof) or size1 == 0


# -- a whole served cut: checkpoint, cut leaf, inclusion proof, results blob -----------

FIELDS = ("checkpoint", "cut_leaf", "results")


@FAST
@given(st.sampled_from(FIELDS), st.data())
def test_cut_verifier_rejects_any_tampered_field(field: str, data: st.DataObject) -> None:
    value = data.draw(mutated(getattr(GOOD, field)))
    if field == "checkpoint":
        bad = dataclasses.replace(GOOD, checkpoint=value)
    elif field == "cut_leaf":
        bad = dataclasses.replace(GOOD, cut_leaf=value)
    else:
        bad = dataclasses.replace(GOOD, results=value)
    _raises_typed(
        lambda: VERIFIER.verify_offline(bad, definition_sha256=DEFINITION), VerificationError
    )


@FAST
@given(st.integers(0, len(GOOD.inclusion_proof) - 1), st.data())
def test_cut_verifier_rejects_tampered_inclusion_proofs(index: int, data: st.DataObject) -> None:
    proof = list(GOOD.inclusion_proof)
    proof[index] = data.draw(mutated(proof[index]))
    bad = dataclasses.replace(GOOD, inclusion_proof=tuple(proof))
    _raises_typed(
        lambda: VERIFIER.verify_offline(bad, definition_sha256=DEFINITION), VerificationError
    )


def _signed_cut_with_results(blob: bytes) -> SignedCutBytes:
    """A correctly signed cut whose results blob is ``blob`` (digest matches): only the
    results parser and the binding checks stand between ``blob`` and the caller."""
    pub = FakePublisher()
    pub.step(actas=3)
    record = acta_pb2.CutRecord(
        cut_number=2,
        cut_time=(START + 2 * (pub.now - START)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        acta_records=pub.tally.acta_records,
        results_sha256=hashlib.sha256(blob).digest(),
    )
    leaf = acta_pb2.LogLeaf(cut_record=record).SerializeToString(deterministic=True)
    index = pub.tree.append(leaf)
    size = pub.tree.size
    return SignedCutBytes(
        checkpoint=pub.sign(Checkpoint(pub.origin, size, pub.tree.root())),
        cut_leaf=leaf,
        inclusion_proof=tuple(pub.tree.inclusion_proof(index, size)),
        results=blob,
    )


@FAST
@given(st.binary(max_size=300) | mutated(LATEST.results))
def test_results_parser_rejects_bad_blobs_even_when_signed(blob: bytes) -> None:
    cut = _signed_cut_with_results(blob)
    try:
        verified = VERIFIER.verify_offline(cut, definition_sha256=DEFINITION)
    except VerificationError:
        return
    # A mutation can land on a figure and leave a well-formed blob (a flipped vote
    # count, a repeated field that protobuf merges): signed, it is what the publisher
    # said. What comes back must then be exactly that blob and its parse.
    assert verified.results_bytes == blob
    assert verified.results == results_pb2.Results.FromString(blob)


# -- leaves (recount) -----------------------------------------------------------------

ELECTION = small_election()


@FAST
@given(st.lists(st.binary(max_size=120) | mutated(PUB.leaves[0]), min_size=1, max_size=6))
def test_recount_rejects_unparseable_or_inconsistent_leaves(leaves: list[bytes]) -> None:
    # The root is computed over these very leaves, so the root check passes and the
    # leaf parser and the cut checks are what must refuse them.
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf_hash(leaf))
    recounter = Recounter(election=ELECTION, tree_size=len(leaves), root_hash=cr.root())

    def recount() -> object:
        recounter.feed(leaves)
        return recounter.finish()

    _raises_typed(recount, VerificationError)


@FAST
@given(st.binary(max_size=300) | mutated(ELECTION.definition_bytes[:300]))
def test_election_definition_parser_rejects_bad_bytes(data: bytes) -> None:
    try:
        ElectionIndex.from_bytes(data)
    except MalformedDataError:
        return


# -- trust roots and evidence ---------------------------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_trust_root_parser_rejects_arbitrary_bytes(data: bytes) -> None:
    _raises_typed(lambda: TrustedRoot.from_bytes(data, now=START), TrustRootError)


@FAST
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_evidence_parser_rejects_arbitrary_documents(data: bytes) -> None:
    _raises_typed(lambda: verify_evidence(data, trust_root=ROOT), VerificationError)


# -- bundle files -----------------------------------------------------------------------


def _summary(root: Path) -> tuple[object, ...]:
    report = verify_bundle(root, trust_root=ROOT, now=START)
    return (
        report.latest.cut_number,
        report.latest.tree_size,
        report.latest.root_hash,
        tuple((c.cut_number, c.tree_size, c.root_hash) for c in report.cuts),
    )


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[object, ...]]:
    root = tmp_path_factory.mktemp("bundle") / "bundle"
    write_bundle(PUB, root)
    return root, _summary(root)  # the untouched bundle verifies


def _bundle_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@settings(FAST, max_examples=60)
@given(st.data())
def test_bundle_verifier_rejects_tampered_files_or_verifies_the_same_log(
    bundle_dir: tuple[Path, tuple[object, ...]], data: st.DataObject
) -> None:
    original, honest = bundle_dir
    name = data.draw(st.sampled_from(_bundle_files(original)))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(original, copy)
        target = copy / name
        target.write_bytes(data.draw(mutated(target.read_bytes())))
        expected: tuple[type[Exception], ...] = (VerificationError,)
        if name.startswith("trust-root"):
            expected = (VerificationError, TrustRootError)
        try:
            summary = _summary(copy)
        except expected:
            return
        # `latest` is an untrusted pointer (JSON whitespace may change, say): whatever
        # still verifies must be exactly the honest log, never a different one.
        assert summary == honest, f"tampered {name} verified as a different log"
