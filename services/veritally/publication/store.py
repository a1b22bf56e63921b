"""The publication store: the Merkle log, its perfect-subtree hashes, and the cuts.

One SQLite file (WAL, synchronous=FULL), created with sqlite-utils:

* ``leaves(idx, data)``: every leaf, exactly as hashed; every read checks it against its
  level-0 node (below), so a leaf edited in the file is refused, never served;
* ``nodes(id, hash)``: the hash of every *complete* subtree, keyed by
  ``level << 48 | index`` (level 0 = leaf hashes). Appending k leaves to a log of n adds
  at most 2k rows and reads nothing, and any subtree hash needs at most log2(n) rows, so
  a cut costs O(k + log n) and a proof O(log^2 n) row reads at worst (O(log n) typical);
* ``actas(acta_id, revision, leaf_index)``: where each acta record is in the log;
* ``cuts``: one row per cut, with the signed checkpoint, written in the SAME
  transaction as its leaves; ``tree_size`` is UNIQUE, so the store itself refuses a
  second checkpoint for a size;
* ``results(sha256, data)``: results blobs by digest (heartbeat cuts share them); every
  read checks the blob against its key, the digest its cut record signs;
* ``meta(key, value)``: the election definition, the last cut written to the bundle.

Not thread-safe: the service runs every call on one worker thread, so a reader never
sees a cut's transaction half done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from veritally.publication.errors import StoreIntegrityError, TamperedDataError
from veritally.storage import connect
from veritally_client.protocol import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    subtree_hash_from_perfect,
)

__all__ = ["CutRow", "PublicationStore"]

# Index bits of a node id: 2**48 leaves is far beyond any election (10**9 would be a lot).
_INDEX_BITS = 48
_HASH = 32


def _node_id(level: int, index: int) -> int:
    return (level << _INDEX_BITS) | index


@dataclass(frozen=True, kw_only=True)
class CutRow:
    """A stored cut.

    Attributes:
        cut_number: 1 for the first cut.
        tree_size: size of the tree its checkpoint signs (its cut leaf is the last leaf).
        acta_records: number of acta records it covers.
        cut_time: RFC 3339 UTC time in the cut leaf.
        checkpoint: the signed note, exact bytes.
        cut_leaf: the cut leaf, exact bytes.
        proof: inclusion proof of the cut leaf at ``tree_size``.
        results_sha256: digest of the results blob.
    """

    cut_number: int
    tree_size: int
    acta_records: int
    cut_time: str
    checkpoint: bytes
    cut_leaf: bytes
    proof: tuple[bytes, ...]
    results_sha256: bytes


def _row_to_cut(row: tuple[int, int, int, str, bytes, bytes, bytes, bytes]) -> CutRow:
    proof = row[6]
    return CutRow(
        cut_number=row[0],
        tree_size=row[1],
        acta_records=row[2],
        cut_time=row[3],
        checkpoint=row[4],
        cut_leaf=row[5],
        proof=tuple(proof[i : i + _HASH] for i in range(0, len(proof), _HASH)),
        results_sha256=row[7],
    )


_CUT_COLUMNS = (
    "cut_number, tree_size, acta_records, cut_time, checkpoint, cut_leaf, proof, results_sha256"
)


class PublicationStore:
    """The log and its cuts in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        """Open or create the store at ``path`` and load the log's compact range.

        Raises:
            StoreIntegrityError: if the leaves, nodes and cuts do not agree.
            sqlite3.Error: if the file cannot be opened.
        """
        self.path = path
        self._conn = connect(path, check_same_thread=False)
        self._create()
        self._size = self._count_leaves()
        self._range = self._load_range(self._size)
        latest = self.latest_cut()
        if self._size and (latest is None or latest.tree_size != self._size):
            # Leaves and their cut are one transaction, so this means outside tampering.
            raise StoreIntegrityError(
                f"{path}: the log has {self._size} leaves but its newest cut signs "
                f"{latest.tree_size if latest else 0}"
            )

    # -- schema ---------------------------------------------------------------------

    def _create(self) -> None:
        db = sqlite_utils.Database(self._conn)
        names = set(db.table_names())
        if "leaves" not in names:
            db.table("leaves").create({"idx": int, "data": bytes}, pk="idx", not_null={"data"})
        if "nodes" not in names:
            db.table("nodes").create({"id": int, "hash": bytes}, pk="id", not_null={"hash"})
        if "actas" not in names:
            db.table("actas").create(
                {"acta_id": str, "revision": int, "leaf_index": int},
                pk=("acta_id", "revision"),
                not_null={"leaf_index"},
            )
        if "cuts" not in names:
            db.table("cuts").create(
                {
                    "cut_number": int,
                    "tree_size": int,
                    "acta_records": int,
                    "cut_time": str,
                    "checkpoint": bytes,
                    "cut_leaf": bytes,
                    "proof": bytes,
                    "results_sha256": bytes,
                },
                pk="cut_number",
                not_null={"tree_size", "acta_records", "checkpoint", "cut_leaf"},
            )
            db.table("cuts").create_index(["tree_size"], unique=True)
        if "results" not in names:
            db.table("results").create({"sha256": bytes, "data": bytes}, pk="sha256")
        if "meta" not in names:
            db.table("meta").create({"key": str, "value": bytes}, pk="key")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    # -- the tree ------------------------------------------------------------------

    def _count_leaves(self) -> int:
        row = self._conn.execute("SELECT max(idx) FROM leaves").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def _load_range(self, size: int) -> CompactRange:
        if size == 0:
            return CompactRange()
        hashes = [self._perfect(level, index) for level, index in perfect_subtrees(0, size)]
        return CompactRange(size=size, hashes=hashes)

    def _perfect(self, level: int, index: int) -> bytes:
        row = self._conn.execute(
            "SELECT hash FROM nodes WHERE id = ?", (_node_id(level, index),)
        ).fetchone()
        if row is None:
            raise StoreIntegrityError(f"missing node level {level} index {index}")
        value: bytes = row[0]
        return value

    def perfect_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Hashes of the complete subtrees of ``2**level`` leaves ``start..end - 1`` (one
        range read: a bundle tile is 256 of them).

        Raises:
            StoreIntegrityError: if one is missing (they are written with their leaves).
        """
        rows = self._conn.execute(
            "SELECT hash FROM nodes WHERE id >= ? AND id < ? ORDER BY id",
            (_node_id(level, start), _node_id(level, end)),
        ).fetchall()
        if len(rows) != end - start:
            raise StoreIntegrityError(
                f"{len(rows)} of the nodes of level {level} from {start} to {end} are stored"
            )
        return [r[0] for r in rows]

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Merkle tree hash of leaves ``[start, end)`` (the _merkle accessor contract)."""
        return subtree_hash_from_perfect(start, end, self._perfect)

    @property
    def tree_size(self) -> int:
        """Number of leaves (including any appended in an open transaction)."""
        return self._size

    def root(self, size: int | None = None) -> bytes:
        """Root hash at ``size`` (default: the current size).

        Raises:
            ValueError: if ``size`` is larger than the log.
        """
        if size is None or size == self._size:
            return self._range.root()
        if size > self._size:
            raise ValueError(f"size {size} is larger than the log ({self._size})")
        return EMPTY_ROOT if size == 0 else self.subtree_hash(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of leaf ``index`` at ``size``.

        Raises:
            ValueError: if the index or size is outside the log.
        """
        if size > self._size:
            raise ValueError(f"size {size} is larger than the log ({self._size})")
        return inclusion_proof(index, size, self.subtree_hash)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof between two sizes.

        Raises:
            ValueError: if the sizes are out of order or larger than the log.
        """
        if size2 > self._size:
            raise ValueError(f"size {size2} is larger than the log ({self._size})")
        return consistency_proof(size1, size2, self.subtree_hash)

    def leaves(self, start: int, count: int) -> list[bytes]:
        """Up to ``count`` leaves from ``start``, each checked against its stored node.

        Every read of leaf bytes goes through here (GetLeaves, inclusion proofs, bundle
        pages), and the level-0 node of a leaf is its hash as appended (``nodes.id`` of
        level 0 is the leaf index), so one join and one SHA-256 per leaf are enough to
        refuse a leaf edited in the file. A leaf edited together with its whole chain of
        nodes changes a perfect-subtree hash that the signed root covers: the check of
        the newest checkpoint at start, or a client's proof, catches that.

        Raises:
            TamperedDataError: if a leaf does not hash to its stored node.
        """
        rows = self._conn.execute(
            "SELECT l.idx, l.data, n.hash FROM leaves AS l LEFT JOIN nodes AS n ON n.id = l.idx "
            "WHERE l.idx >= ? AND l.idx < ? ORDER BY l.idx",
            (start, start + count),
        ).fetchall()
        for idx, data, stored in rows:
            if stored is None or leaf_hash(data) != stored:
                raise TamperedDataError(
                    f"{self.path}: leaf {idx} does not hash to its stored Merkle node"
                )
        return [r[1] for r in rows]

    def leaf_sizes(self, start: int, end: int) -> list[int]:
        """Byte lengths of leaves ``[start, end)``, without reading their bytes."""
        rows = self._conn.execute(
            "SELECT length(data) FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def acta_leaf_index(self, acta_id: str, revision: int, size: int) -> int | None:
        """Leaf index of an acta record within the first ``size`` leaves.

        ``revision`` 0 means the highest revision within ``size``.
        """
        if revision:
            row = self._conn.execute(
                "SELECT leaf_index FROM actas WHERE acta_id = ? AND revision = ? "
                "AND leaf_index < ?",
                (acta_id, revision, size),
            ).fetchone()
        else:
            row = self._conn.execute(
                "SELECT leaf_index FROM actas WHERE acta_id = ? AND leaf_index < ? "
                "ORDER BY revision DESC LIMIT 1",
                (acta_id, size),
            ).fetchone()
        return None if row is None else int(row[0])

    # -- appending (inside transaction()) --------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One cut: BEGIN IMMEDIATE ... COMMIT; on any exception roll back everything,
        including the in-memory tree state."""
        saved_size, saved_hashes = self._range.size, self._range.hashes
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._size = saved_size
            self._range = CompactRange(size=saved_size, hashes=saved_hashes)
            raise
        self._conn.execute("COMMIT")

    def append_leaves(self, leaves: Sequence[bytes], leaf_hashes: Sequence[bytes]) -> int:
        """Append leaves with their (precomputed) leaf hashes; returns the first index.

        Must run inside :meth:`transaction`.
        """
        first = self._size
        nodes: list[tuple[int, int, bytes]] = []
        collect = self._range.append_collect
        for h in leaf_hashes:
            collect(h, nodes)
        self._conn.executemany(
            "INSERT INTO leaves (idx, data) VALUES (?, ?)",
            ((first + i, leaf) for i, leaf in enumerate(leaves)),
        )
        self._conn.executemany(
            "INSERT INTO nodes (id, hash) VALUES (?, ?)",
            (((level << _INDEX_BITS) | index, h) for level, index, h in nodes),
        )
        self._size += len(leaves)
        return first

    def index_actas(self, keys: Sequence[tuple[str, int, int]]) -> None:
        """Record ``(acta_id, revision, leaf_index)`` rows. Inside :meth:`transaction`."""
        self._conn.executemany(
            "INSERT INTO actas (acta_id, revision, leaf_index) VALUES (?, ?, ?)", keys
        )

    def put_results(self, digest: bytes, data: bytes) -> None:
        """Store a results blob by digest (once). Inside :meth:`transaction`."""
        self._conn.execute(
            "INSERT OR IGNORE INTO results (sha256, data) VALUES (?, ?)", (digest, data)
        )

    def put_cut(self, cut: CutRow) -> None:
        """Store a signed cut. Inside :meth:`transaction`.

        Raises:
            StoreIntegrityError: if a cut with that number or tree size exists.
        """
        try:
            self._conn.execute(
                f"INSERT INTO cuts ({_CUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant column list
                (
                    cut.cut_number,
                    cut.tree_size,
                    cut.acta_records,
                    cut.cut_time,
                    cut.checkpoint,
                    cut.cut_leaf,
                    b"".join(cut.proof),
                    cut.results_sha256,
                ),
            )
        except sqlite3.IntegrityError as e:
            raise StoreIntegrityError(
                f"a cut numbered {cut.cut_number} or of size {cut.tree_size} exists"
            ) from e

    def add_cosignatures(self, cut_number: int, lines: bytes) -> CutRow:
        """Append witnesses' cosignature lines to a stored cut's note (its own
        transaction): the signed text and the publisher's signatures stay as they are.

        Raises:
            StoreIntegrityError: if there is no such cut.
        """
        with self.transaction():
            row = self.cut(cut_number)
            if row is None:
                raise StoreIntegrityError(f"no cut {cut_number} to add cosignatures to")
            note = row.checkpoint + lines
            self._conn.execute(
                "UPDATE cuts SET checkpoint = ? WHERE cut_number = ?", (note, cut_number)
            )
        return dataclasses.replace(row, checkpoint=note)

    # -- cuts and blobs -------------------------------------------------------------

    def latest_cut(self) -> CutRow | None:
        """The newest cut, if any."""
        row = self._conn.execute(
            f"SELECT {_CUT_COLUMNS} FROM cuts ORDER BY cut_number DESC LIMIT 1"  # noqa: S608 - constant column list
        ).fetchone()
        return None if row is None else _row_to_cut(row)

    def cut(self, cut_number: int) -> CutRow | None:
        """A cut by number."""
        row = self._conn.execute(
            f"SELECT {_CUT_COLUMNS} FROM cuts WHERE cut_number = ?",  # noqa: S608 - constant column list
            (cut_number,),
        ).fetchone()
        return None if row is None else _row_to_cut(row)

    def results(self, digest: bytes) -> bytes | None:
        """A results blob by its SHA-256, checked against it.

        Raises:
            TamperedDataError: if the stored blob does not hash to ``digest``.
        """
        row = self._conn.execute("SELECT data FROM results WHERE sha256 = ?", (digest,)).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        if hashlib.sha256(data).digest() != digest:
            raise TamperedDataError(
                f"{self.path}: the results blob {digest.hex()[:16]}… does not hash to the "
                "digest its cut record signs"
            )
        return data

    def get_meta(self, key: str) -> bytes | None:
        """A metadata value."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        """Set a metadata value (its own transaction)."""
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
