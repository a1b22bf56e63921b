"""consistency_roots: the two roots a consistency proof commits to (RFC 9162 §2.1.4.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veritally_client._errors import BadProofError
from veritally_client._merkle import MemoryTree, consistency_roots, verify_consistency

MAX_SIZE = 40  # leaves: every split shape of a tree up to six levels high


def _tree(size: int, tag: bytes = b"a") -> MemoryTree:
    tree = MemoryTree()
    for i in range(size):
        tree.append(tag + i.to_bytes(4, "big"))
    return tree


TREE = _tree(MAX_SIZE)
ROOTS = {n: TREE.root(n) for n in range(MAX_SIZE + 1)}


def test_honest_proofs_lead_to_both_roots_for_every_pair_of_sizes() -> None:
    for size2 in range(2, MAX_SIZE + 1):
        for size1 in range(1, size2):
            proof = TREE.consistency_proof(size1, size2)
            got = consistency_roots(size1=size1, size2=size2, proof=proof, root1=ROOTS[size1])
            assert got == (ROOTS[size1], ROOTS[size2]), (size1, size2)


def test_a_fork_shows_as_another_old_root_with_the_new_root() -> None:
    # Another tree whose first leaf differs: its honest proof leads to its own roots.
    other = _tree(MAX_SIZE, b"b")
    for size1, size2 in ((3, 7), (5, 8), (6, 40), (13, 21)):  # size1 not a power of two
        proof = other.consistency_proof(size1, size2)
        old, new = consistency_roots(size1=size1, size2=size2, proof=proof, root1=ROOTS[size1])
        assert new == other.root(size2)
        assert old == other.root(size1) != ROOTS[size1]


@pytest.mark.parametrize(
    ("size1", "size2", "change"),
    [
        (0, 5, "none"),
        (5, 5, "none"),
        (6, 5, "none"),
        (3, 7, "empty"),
        (3, 7, "short-hash"),
        (3, 7, "extra"),
        (3, 7, "missing"),
    ],
)
def test_rejects_proofs_without_the_right_shape(size1: int, size2: int, change: str) -> None:
    proof = TREE.consistency_proof(min(size1, size2), max(size1, size2))
    if change == "empty":
        proof = []
    elif change == "short-hash":
        proof[0] = proof[0][:31]
    elif change == "extra":
        proof.append(bytes(32))
    elif change == "missing":
        proof.pop()
    with pytest.raises(BadProofError):
        consistency_roots(size1=size1, size2=size2, proof=proof, root1=ROOTS[size1])


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.tuples(
        st.integers(min_value=1, max_value=MAX_SIZE - 1),
        st.integers(min_value=2, max_value=MAX_SIZE),
    ).filter(lambda s: s[0] < s[1]),
    flip=st.one_of(st.none(), st.tuples(st.integers(min_value=0), st.integers(0, 31))),
)
def test_agrees_with_verify_consistency(
    sizes: tuple[int, int], flip: tuple[int, int] | None
) -> None:
    size1, size2 = sizes
    proof = TREE.consistency_proof(size1, size2)
    if flip is not None:  # damage one byte of one proof hash
        which, byte = flip[0] % len(proof), flip[1]
        damaged = bytearray(proof[which])
        damaged[byte] ^= 0x01
        proof[which] = bytes(damaged)
    roots = consistency_roots(size1=size1, size2=size2, proof=proof, root1=ROOTS[size1])
    accepted = roots == (ROOTS[size1], ROOTS[size2])
    try:
        verify_consistency(
            size1=size1, size2=size2, proof=proof, root1=ROOTS[size1], root2=ROOTS[size2]
        )
    except BadProofError:
        assert not accepted
    else:
        assert accepted
