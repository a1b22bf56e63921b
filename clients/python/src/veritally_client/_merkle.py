"""RFC 9162 Merkle tree hashing, proofs and their verification (SHA-256).

Hashing (RFC 9162 §2.1.1): ``leaf = SHA-256(0x00 || data)``,
``node = SHA-256(0x01 || left || right)``, and the empty tree hashes to
``SHA-256("")``. The tree over ``n`` leaves splits at ``k``, the largest power of two
strictly below ``n``.

Verification of an inclusion proof (RFC 9162 §2.1.3.2):

1. reject hashes that are not 32 bytes and an index outside the tree;
2. walk the proof from the leaf up, combining on the side given by the index bits;
3. accept only if the walk consumed exactly the tree's height and reached the root.

Verification of a consistency proof (RFC 9162 §2.1.4.2):

1. reject hashes that are not 32 bytes and ``size1 > size2``;
2. equal sizes: the proof must be empty and the roots equal;
3. ``size1 == 0``: the empty tree is consistent with every tree (the C2SP witness rule,
   see docs/adr/0020); the proof must be empty and ``root1`` the empty root;
4. otherwise walk the proof, rebuilding both roots, and accept only if both match.

Proof *generation* works over a ``subtree_hash(start, end)`` accessor so that the
server's store (which keeps perfect-subtree hashes) and in-memory trees share one
implementation. The accessor contract: it is only called with ``0 <= start < end`` where
``start`` is a multiple of the smallest power of two ``>= end - start`` (the ranges of
RFC 9162's recursive definitions), and must return the Merkle tree hash of leaves
``[start, end)``. :func:`subtree_hash_from_perfect` implements it from perfect-subtree
hashes only (``level``, ``index``) -> hash of leaves ``[index * 2**level, (index+1) *
2**level)``, in at most ``log2(n)`` lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from veritally_client._errors import BadProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MemoryTree",
    "consistency_proof",
    "consistency_roots",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "root_from_leaf_hashes",
    "subtree_hash_from_perfect",
    "verify_consistency",
    "verify_inclusion",
]

#: Size of every hash in the tree, in bytes (SHA-256).
HASH_SIZE = 32
#: The Merkle tree hash of the empty tree: SHA-256 of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

SubtreeHash = Callable[[int, int], bytes]
PerfectHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash: ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise BadProofError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


# --------------------------------------------------------------------------------------
# Verification


def verify_inclusion(
    *, leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises:
        BadProofError: if the proof does not lead to ``root`` or any input is malformed.
        ValueError: if ``index`` or ``size`` is negative (a caller bug).
    """
    if index < 0 or size < 0:
        raise ValueError("index and size must not be negative")
    # (1) well-formed inputs only
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root hash")
    for p in proof:
        _check_hash(p, "proof hash")
    if index >= size:
        raise BadProofError(f"leaf index {index} is outside a tree of size {size}")
    # (2) walk up from the leaf
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise BadProofError("inclusion proof is longer than the tree is high")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # (3) exact height and root
    if sn != 0:
        raise BadProofError("inclusion proof is shorter than the tree is high")
    if r != root:
        raise BadProofError("inclusion proof does not lead to the root hash")


def verify_consistency(
    *, size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Verify that the tree (size2, root2) extends the tree (size1, root1).

    Raises:
        BadProofError: if the proof does not show consistency or any input is malformed.
        ValueError: if a size is negative (a caller bug).
    """
    if size1 < 0 or size2 < 0:
        raise ValueError("sizes must not be negative")
    # (1) well-formed inputs only
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    for p in proof:
        _check_hash(p, "proof hash")
    if size1 > size2:
        raise BadProofError(f"size1 {size1} is larger than size2 {size2}")
    # (2) equal sizes
    if size1 == size2:
        if proof:
            raise BadProofError("a consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise BadProofError("different roots for the same tree size")
        return
    # (3) the empty tree is a prefix of every tree
    if size1 == 0:
        if proof:
            raise BadProofError("a consistency proof from the empty tree must be empty")
        if root1 != EMPTY_ROOT:
            raise BadProofError("root1 is not the empty tree's root")
        return
    # (4) the RFC 9162 walk rebuilds both roots
    fr, sr = consistency_roots(size1=size1, size2=size2, proof=proof, root1=root1)
    if fr != root1:
        raise BadProofError("consistency proof does not lead to root1")
    if sr != root2:
        raise BadProofError("consistency proof does not lead to root2")


def consistency_roots(
    *, size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> tuple[bytes, bytes]:
    """Both roots a consistency proof commits to: ``(root of size1, root of size2)``.

    RFC 9162 §2.1.4.2's walk, returning the two roots it rebuilds instead of comparing
    them. :func:`verify_consistency` is the acceptance check; this tells what a rejected
    proof shows, e.g. a proof that leads to a signed new root but to another old root
    shows two incompatible trees (docs/adr/0051-sdk-fork-versus-bad-proof.md). ``root1``
    enters the walk only when ``size1`` is a power of two, and is then returned as is.

    Raises:
        BadProofError: if ``size1`` is not strictly between 0 and ``size2``, a hash is not
            32 bytes, or the proof is empty, too long or too short for the sizes.
    """
    if not 0 < size1 < size2:
        raise BadProofError(f"no consistency walk between sizes {size1} and {size2}")
    _check_hash(root1, "root1")
    for p in proof:
        _check_hash(p, "proof hash")
    if not proof:
        raise BadProofError("empty consistency proof between different sizes")
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise BadProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise BadProofError("consistency proof is too short")
    return fr, sr


# --------------------------------------------------------------------------------------
# Building trees


class CompactRange:
    """An incremental Merkle accumulator over leaves ``[0, size)``.

    Keeps only the hashes of the perfect subtrees of the binary decomposition of
    ``size`` (at most 64), so memory is O(log n) and each append costs amortised O(1)
    hashes. The SDK uses it to recount a whole log; the server uses it to learn which
    perfect-subtree nodes each append completes.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, *, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Resume from a known state.

        Args:
            size: number of leaves already accumulated.
            hashes: hashes of the perfect subtrees of ``size``'s binary decomposition,
                largest (leftmost) first; one per set bit of ``size``.

        Raises:
            ValueError: if ``hashes`` does not match ``size``.
        """
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError("a compact range has one hash per set bit of its size")
        self._size = size
        self._hashes = [bytes(h) for h in hashes]

    @property
    def size(self) -> int:
        """Number of leaves accumulated."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Perfect-subtree hashes, largest first (see the constructor)."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash."""
        hashes = self._hashes
        s = self._size
        h = leaf_hash
        while s & 1:
            h = _sha256(_NODE_PREFIX + hashes.pop() + h).digest()
            s >>= 1
        hashes.append(h)
        self._size += 1

    def append_collect(self, leaf_hash: bytes, out: list[tuple[int, int, bytes]]) -> None:
        """Append one leaf hash and add every completed perfect subtree to ``out``.

        Each entry is ``(level, index, hash)``: the hash of leaves
        ``[index * 2**level, (index + 1) * 2**level)``; the leaf itself is level 0.
        """
        hashes = self._hashes
        s = self._size
        index = s
        level = 0
        h = leaf_hash
        out.append((0, index, h))
        while s & 1:
            h = _sha256(_NODE_PREFIX + hashes.pop() + h).digest()
            s >>= 1
            index >>= 1
            level += 1
            out.append((level, index, h))
        hashes.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append many leaf hashes."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves accumulated so far."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        h = hashes[-1]
        for left in reversed(hashes[:-1]):
            h = _sha256(_NODE_PREFIX + left + h).digest()
        return h


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> bytes:
    """The Merkle tree hash of a sequence of leaf hashes."""
    cr = CompactRange()
    cr.extend(leaf_hashes)
    return cr.root()


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` covering ``[start, end)``, left to right.

    Greedy: at each step the largest aligned power-of-two block that fits. For the
    aligned ranges of the accessor contract the sizes strictly decrease.

    Raises:
        ValueError: if the range is empty or negative.
    """
    if start < 0 or end <= start:
        raise ValueError(f"bad leaf range [{start}, {end})")
    out: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        # Largest block aligned at pos (pos's lowest set bit; any size at 0) that fits.
        level = (end - pos).bit_length() - 1
        if pos:
            level = min(level, (pos & -pos).bit_length() - 1)
        out.append((level, pos >> level))
        pos += 1 << level
    return out


def subtree_hash_from_perfect(start: int, end: int, perfect: PerfectHash) -> bytes:
    """Merkle tree hash of ``[start, end)`` from perfect-subtree hashes.

    Args:
        start: first leaf; a multiple of the smallest power of two ``>= end - start``.
        end: one past the last leaf.
        perfect: ``perfect(level, index)`` returns the hash of the complete subtree of
            leaves ``[index * 2**level, (index + 1) * 2**level)``.

    Raises:
        ValueError: if the range is empty or not aligned as required.
    """
    n = end - start
    if n <= 0:
        raise ValueError(f"bad leaf range [{start}, {end})")
    if start % (1 << (n - 1).bit_length()):
        raise ValueError(f"leaf range [{start}, {end}) is not aligned")
    blocks = perfect_subtrees(start, end)
    h = perfect(*blocks[-1])
    for level, index in reversed(blocks[:-1]):
        h = node_hash(perfect(level, index), h)
    return h


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """The RFC 9162 inclusion proof (PATH) of leaf ``index`` in the tree of ``size``.

    Raises:
        ValueError: if ``index`` is not inside the tree.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end, m = 0, size, index
    # Walk down from the root, collecting siblings; reverse at the end (leaf first).
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            proof.append(subtree_hash(start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k))
            start += k
            m -= k
    proof.reverse()
    return proof


def consistency_proof(size1: int, size2: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``size1 <= size2``.

    The proof from the empty tree, or between equal sizes, is empty.

    Raises:
        ValueError: if ``not 0 <= size1 <= size2``.
    """
    if not 0 <= size1 <= size2:
        raise ValueError(f"bad sizes {size1}, {size2} for a consistency proof")
    if size1 in (0, size2):
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, size2, size1, True
    # SUBPROOF(m, D[start:end], complete), iteratively; siblings collected top-down.
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(subtree_hash(start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(subtree_hash(start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k))
            start += k
            m -= k
            complete = False
    proof.reverse()
    return proof


class MemoryTree:
    """An append-only Merkle tree held in memory (tests and in-memory publishers)."""

    def __init__(self) -> None:
        """An empty tree."""
        self._levels: list[list[bytes]] = [[]]
        self._range = CompactRange()

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    def append(self, data: bytes) -> int:
        """Append a leaf's data; returns its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, h: bytes) -> int:
        """Append a leaf hash; returns its index."""
        nodes: list[tuple[int, int, bytes]] = []
        index = self._range.size
        self._range.append_collect(h, nodes)
        for level, _i, value in nodes:
            if level == len(self._levels):
                self._levels.append([])
            self._levels[level].append(value)
        return index

    def leaf_hash(self, index: int) -> bytes:
        """The hash of leaf ``index``."""
        return self._levels[0][index]

    def _perfect(self, level: int, index: int) -> bytes:
        return self._levels[level][index]

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Merkle tree hash of leaves ``[start, end)`` (accessor contract above).

        Raises:
            ValueError: if the range is outside the tree or not aligned.
        """
        if end > self.size:
            raise ValueError(f"leaf range [{start}, {end}) is outside the tree")
        return subtree_hash_from_perfect(start, end, self._perfect)

    def root(self, size: int | None = None) -> bytes:
        """The root hash at ``size`` (default: the current size).

        Raises:
            ValueError: if ``size`` is larger than the tree.
        """
        size = self.size if size is None else size
        if size == 0:
            return EMPTY_ROOT
        return self.subtree_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``index`` at ``size`` (default: current size).

        Raises:
            ValueError: if the index or size is outside the tree.
        """
        size = self.size if size is None else size
        if size > self.size:
            raise ValueError(f"size {size} is larger than the tree ({self.size})")
        return inclusion_proof(index, size, self.subtree_hash)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof between ``size1`` and ``size2`` (default: current size).

        Raises:
            ValueError: if the sizes are out of order or larger than the tree.
        """
        size2 = self.size if size2 is None else size2
        if size2 > self.size:
            raise ValueError(f"size {size2} is larger than the tree ({self.size})")
        return consistency_proof(size1, size2, self.subtree_hash)


def consistency_from_last_leaf(size: int, leaf_hash: bytes, path: Sequence[bytes]) -> list[bytes]:
    """The RFC 9162 consistency proof from ``size - 1`` to ``size``, rebuilt from the
    inclusion proof (``path``, leaf first) of the tree's last leaf and that leaf's hash.

    Every hash of that consistency proof is a subtree of the smaller tree (the siblings
    on the last leaf's path) or the new leaf itself, so a publisher need not send it
    (docs/adr/0089). The result is only a candidate: it is accepted by
    :func:`verify_consistency`, like a served proof.

    Raises:
        BadProofError: if ``path`` does not have the length of such a path.
        ValueError: if ``size`` is below 2.
    """
    if size < 2:
        raise ValueError(f"no consistency proof from {size - 1} to {size} leaves")
    ranges: list[tuple[int, int]] = []

    def record(start: int, end: int) -> bytes:
        ranges.append((start, end))
        return b""

    inclusion_proof(size - 1, size, record)
    ranges.reverse()  # inclusion_proof asks root first; the path is leaf first
    if len(ranges) != len(path):
        raise BadProofError(
            f"inclusion proof of leaf {size - 1} has {len(path)} hashes, expected {len(ranges)}"
        )
    known = dict(zip(ranges, path, strict=True))
    known[(size - 1, size)] = leaf_hash
    return consistency_proof(size - 1, size, lambda start, end: known[(start, end)])
