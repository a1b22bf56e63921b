"""Our RFC 9162 Merkle code against independent vectors (tests/vectors/merkle).

Two points of judgement (tests/vectors/README.md, docs/adr/0020-merkle-judgement-calls.md):

* We reject any "hash" that is not 32 bytes, so the transparency-dev probe
  ``sizes-are-equal-one-and-proof-is-empty`` (12-byte placeholder roots, expected to
  verify there) is rejected here on purpose: :data:`REJECTED_ON_PURPOSE`.
* A consistency proof from the empty tree (size 0) is valid iff it is empty and root1 is
  the empty root (the C2SP witness rule). Every size-0 probe in the set still gets the
  expected verdict under that rule.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from tests.conftest import VECTORS_DIR
from veritally_client._errors import BadProofError
from veritally_client._merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    consistency_proof,
    leaf_hash,
    node_hash,
    perfect_subtrees,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

MERKLE = VECTORS_DIR / "merkle"
REFERENCE: dict[str, Any] = json.loads((MERKLE / "rfc6962-reference-tree.json").read_text())
INCLUSION: list[dict[str, Any]] = json.loads(
    (MERKLE / "transparency-dev-merkle-inclusion-probes.json").read_text()
)["probes"]
CONSISTENCY: list[dict[str, Any]] = json.loads(
    (MERKLE / "transparency-dev-merkle-consistency-probes.json").read_text()
)["probes"]
#: Probes whose expected verdict we deliberately do not follow (judgement call 1).
REJECTED_ON_PURPOSE = {
    "testdata/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"
}


def _b64(v: str | None) -> bytes:
    return base64.b64decode(v) if v else b""


def _proof(v: list[str] | None) -> list[bytes]:
    return [_b64(h) for h in v or []]


def _leaves() -> list[bytes]:
    return [bytes.fromhex(h) for h in REFERENCE["leaf_inputs_hex"]]


def test_every_vector_set_is_loaded_and_nonempty() -> None:
    # The loops and parametrizations below are only as strong as what they iterate over:
    # an emptied or truncated vector file must fail here, not pass vacuously.
    for name in ("inclusion", "consistency"):
        data = json.loads((MERKLE / f"transparency-dev-merkle-{name}-probes.json").read_text())
        assert len(data["probes"]) == data["count"] > 0
    assert len(INCLUSION) > 0
    assert len(CONSISTENCY) > 0
    assert {r["path"] for r in CONSISTENCY} >= REJECTED_ON_PURPOSE
    leaves = len(REFERENCE["leaf_inputs_hex"])
    assert leaves > 0
    assert len(REFERENCE["root_hashes_hex_by_tree_size"]) == leaves + 1  # sizes 0..n
    assert len(REFERENCE["node_hashes_hex_by_level"][0]) == leaves
    assert REFERENCE["inclusion_proofs"]
    assert REFERENCE["consistency_proofs"]
    assert {v["kind"] for v in REFERENCE["hasher_vectors"]} == {"empty_root", "leaf", "node"}


def test_hasher_known_answers() -> None:
    for v in REFERENCE["hasher_vectors"]:
        want = bytes.fromhex(v["expected_hex"])
        if v["kind"] == "empty_root":
            assert want == EMPTY_ROOT
        elif v["kind"] == "leaf":
            assert leaf_hash(bytes.fromhex(v["input_hex"])) == want
        else:
            assert node_hash(bytes.fromhex(v["left_hex"]), bytes.fromhex(v["right_hex"])) == want


def test_roots_for_every_size_match_reference() -> None:
    leaves = _leaves()
    tree = MemoryTree()
    for x in leaves:
        tree.append(x)
    for size, want in enumerate(REFERENCE["root_hashes_hex_by_tree_size"]):
        assert tree.root(size) == bytes.fromhex(want)
        assert root_from_leaf_hashes(leaf_hash(x) for x in leaves[:size]) == bytes.fromhex(want)


def test_perfect_subtree_hashes_match_reference() -> None:
    tree = MemoryTree()
    for x in _leaves():
        tree.append(x)
    for level, hashes in enumerate(REFERENCE["node_hashes_hex_by_level"]):
        for index, h in enumerate(hashes):
            start = index << level
            assert tree.subtree_hash(start, start + (1 << level)) == bytes.fromhex(h)


def test_generated_proofs_match_reference_proofs() -> None:
    tree = MemoryTree()
    for x in _leaves():
        tree.append(x)
    for p in REFERENCE["inclusion_proofs"]:
        want = [bytes.fromhex(h) for h in p["proof_hex"]]
        assert tree.inclusion_proof(p["leaf_index"], p["tree_size"]) == want
        verify_inclusion(
            leaf_hash=tree.leaf_hash(p["leaf_index"]),
            index=p["leaf_index"],
            size=p["tree_size"],
            proof=want,
            root=tree.root(p["tree_size"]),
        )
    for p in REFERENCE["consistency_proofs"]:
        want = [bytes.fromhex(h) for h in p["proof_hex"]]
        assert tree.consistency_proof(p["size1"], p["size2"]) == want
        verify_consistency(
            size1=p["size1"],
            size2=p["size2"],
            proof=want,
            root1=tree.root(p["size1"]),
            root2=tree.root(p["size2"]),
        )


@pytest.mark.parametrize("record", INCLUSION, ids=[r["path"] for r in INCLUSION])
def test_inclusion_probe(record: dict[str, Any]) -> None:
    p = record["probe"]

    def check() -> None:
        verify_inclusion(
            leaf_hash=_b64(p["leafHash"]),
            index=p["leafIdx"],
            size=p["treeSize"],
            proof=_proof(p["proof"]),
            root=_b64(p["root"]),
        )

    if p["wantErr"]:
        with pytest.raises(BadProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("record", CONSISTENCY, ids=[r["path"] for r in CONSISTENCY])
def test_consistency_probe(record: dict[str, Any]) -> None:
    p = record["probe"]

    def check() -> None:
        verify_consistency(
            size1=p["size1"],
            size2=p["size2"],
            proof=_proof(p["proof"]),
            root1=_b64(p["root1"]),
            root2=_b64(p["root2"]),
        )

    if p["wantErr"] or record["path"] in REJECTED_ON_PURPOSE:
        with pytest.raises(BadProofError):
            check()
    else:
        check()


def test_rejects_placeholder_hashes_that_are_not_32_bytes() -> None:
    # Judgement call 1, stated on its own: equal sizes and equal 12-byte "roots".
    with pytest.raises(BadProofError):
        verify_consistency(size1=1, size2=1, proof=[], root1=b"x" * 12, root2=b"x" * 12)


def test_empty_tree_is_consistent_with_every_tree() -> None:
    # Judgement call 2: the C2SP witness rule.
    tree = MemoryTree()
    for i in range(5):
        tree.append(bytes([i]))
    verify_consistency(size1=0, size2=5, proof=[], root1=EMPTY_ROOT, root2=tree.root())
    with pytest.raises(BadProofError):
        verify_consistency(
            size1=0, size2=5, proof=[tree.root()], root1=EMPTY_ROOT, root2=tree.root()
        )
    with pytest.raises(BadProofError):
        verify_consistency(size1=0, size2=5, proof=[], root1=tree.root(1), root2=tree.root())
    assert consistency_proof(0, 5, tree.subtree_hash) == []


def test_proofs_roundtrip_on_every_pair_of_small_sizes() -> None:
    tree = MemoryTree()
    for i in range(70):
        tree.append(i.to_bytes(2, "big"))
    for size in range(1, 71):
        root = tree.root(size)
        for index in range(size):
            verify_inclusion(
                leaf_hash=tree.leaf_hash(index),
                index=index,
                size=size,
                proof=tree.inclusion_proof(index, size),
                root=root,
            )
        for size1 in range(size + 1):
            verify_consistency(
                size1=size1,
                size2=size,
                proof=tree.consistency_proof(size1, size),
                root1=tree.root(size1),
                root2=root,
            )


def test_rejects_inclusion_proof_for_the_wrong_leaf() -> None:
    tree = MemoryTree()
    for i in range(13):
        tree.append(bytes([i]))
    with pytest.raises(BadProofError):
        verify_inclusion(
            leaf_hash=tree.leaf_hash(4),
            index=5,
            size=13,
            proof=tree.inclusion_proof(5),
            root=tree.root(),
        )


def test_compact_range_resumes_and_reports_completed_nodes() -> None:
    rng = random.Random(7)
    hashes = [rng.randbytes(32) for _ in range(1000)]
    full = CompactRange()
    full.extend(hashes[:611])
    resumed = CompactRange(size=full.size, hashes=full.hashes)
    nodes: list[tuple[int, int, bytes]] = []
    for h in hashes[611:]:
        resumed.append_collect(h, nodes)
    assert resumed.root() == root_from_leaf_hashes(hashes)
    tree = MemoryTree()
    for h in hashes:
        tree.append_hash(h)
    for level, index, value in nodes:
        assert tree.subtree_hash(index << level, (index + 1) << level) == value
    # Appending leaf i completes the leaf itself plus one node per trailing 1 bit of i.
    trailing_ones = [(i ^ (i + 1)).bit_length() - 1 for i in range(611, 1000)]
    assert len(nodes) == sum(1 + t for t in trailing_ones)


def test_perfect_subtrees_cover_ranges_exactly() -> None:
    for start, end in [(0, 1), (0, 13), (8, 13), (12, 13), (16, 32), (0, 1000)]:
        covered: list[int] = []
        for level, index in perfect_subtrees(start, end):
            covered.extend(range(index << level, (index + 1) << level))
        assert covered == list(range(start, end))
