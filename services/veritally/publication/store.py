"""The publication store: the Merkle log, its perfect-subtree hashes, and the cuts.

One SQLite file (WAL, synchronous=FULL) or one PostgreSQL database
(:mod:`veritally.storage`, ADR 0093), with the same tables and queries on both:

* ``leaves(idx, data)``: every leaf, exactly as hashed; every read checks it against its
  level-0 node (below), so a leaf edited in the database is refused, never served;
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
* ``meta(key, value)``: the election definition, the last cut written to the bundle;
* ``lease(name, holder, epoch, expires_ms)``: which publisher may cut, when several
  share one database (docs/adr/0094-publication-lease.md). A store opened with a
  :class:`LeaseHolder` cuts only while it holds the lease, and every cut's transaction
  first renews it *in that transaction*, under the database's clock: zero rows renewed
  means deposed, and the transaction stops before anything is appended or signed.

Not thread-safe: the service runs every call on one worker thread, so a reader never
sees a cut's transaction half done.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from veritally.publication.errors import LeaseLostError, StoreIntegrityError, TamperedDataError
from veritally.storage import Database, DbLocation, LeaseHolder, Table, open_database
from veritally_client.protocol import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    subtree_hash_from_perfect,
)

__all__ = ["TABLES", "CutRow", "LeaseState", "PublicationStore"]

# Index bits of a node id: 2**48 leaves is far beyond any election (10**9 would be a lot).
_INDEX_BITS = 48
_HASH = 32
#: The one lease row: one publisher cuts per database.
_LEASE_NAME = "publication"

TABLES = (
    Table("leaves", {"idx": int, "data": bytes}, pk="idx"),
    Table("nodes", {"id": int, "hash": bytes}, pk="id"),
    Table(
        "actas", {"acta_id": str, "revision": int, "leaf_index": int}, pk=("acta_id", "revision")
    ),
    Table(
        "cuts",
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
        unique=(("tree_size",),),
    ),
    Table("results", {"sha256": bytes, "data": bytes}, pk="sha256"),
    Table("meta", {"key": str, "value": bytes}, pk="key"),
    Table("lease", {"name": str, "holder": str, "epoch": int, "expires_ms": int}, pk="name"),
)


def _node_id(level: int, index: int) -> int:
    return (level << _INDEX_BITS) | index


@dataclass(frozen=True)
class LeaseState:
    """The lease as a publisher found it.

    Attributes:
        held: whether this store holds it now.
        holder: who holds it (this store's name when ``held``).
        epoch: its epoch: it grows by one each time the lease changes hands.
        expires_ms: when it lapses, on the database's clock (ms since the epoch).
    """

    held: bool
    holder: str
    epoch: int
    expires_ms: int


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


def _row_to_cut(row: Any) -> CutRow:
    proof = bytes(row[6])
    return CutRow(
        cut_number=int(row[0]),
        tree_size=int(row[1]),
        acta_records=int(row[2]),
        cut_time=str(row[3]),
        checkpoint=bytes(row[4]),
        cut_leaf=bytes(row[5]),
        proof=tuple(proof[i : i + _HASH] for i in range(0, len(proof), _HASH)),
        results_sha256=bytes(row[7]),
    )


_CUT_COLUMNS = (
    "cut_number, tree_size, acta_records, cut_time, checkpoint, cut_leaf, proof, results_sha256"
)


class PublicationStore:
    """The log and its cuts in one database (see the module docstring)."""

    def __init__(self, location: DbLocation, *, lease: LeaseHolder | None = None) -> None:
        """Open or create the store at ``location`` (a SQLite file or a PostgreSQL URL)
        and load the log's compact range.

        Args:
            location: the database.
            lease: with several publishers on one database, this one's claim to the
                lease; it must then :meth:`acquire_lease` before it cuts. None: the
                only publisher (a SQLite file of its own), no lease.

        Raises:
            StoreIntegrityError: if the leaves, nodes and cuts do not agree.
            sqlite3.Error, psycopg.Error: if the database cannot be opened.
        """
        self.path = location
        self.lease = lease
        self._epoch: int | None = None
        self._db: Database = open_database(location, lease=lease)
        self._conn = self._db.writer
        self._db.ensure(TABLES)
        self._size = 0
        self._range = CompactRange()
        self._reload()

    def _reload(self) -> None:
        """Read the tree's state from the database (at start, and when this store takes
        the lease from a publisher that wrote since)."""
        self._size = self._count_leaves()
        self._range = self._load_range(self._size)
        latest = self.latest_cut()
        if self._size and (latest is None or latest.tree_size != self._size):
            # Leaves and their cut are one transaction, so this means outside tampering.
            raise StoreIntegrityError(
                f"{self.path}: the log has {self._size} leaves but its newest cut signs "
                f"{latest.tree_size if latest else 0}"
            )

    def close(self) -> None:
        """Close the connections."""
        self._db.close()

    # -- the lease ------------------------------------------------------------------

    def acquire_lease(self) -> LeaseState:
        """Take or renew the publication lease, if it is free, lapsed or ours.

        A lease held by another publisher and not lapsed is left alone (``held`` is
        False). Taking it from another, or from an earlier process of ours, starts a new
        epoch and reloads the tree, which the previous holder may have extended.

        Raises:
            ValueError: if the store was opened without a :class:`LeaseHolder`.
            StoreIntegrityError: if the reloaded tree does not match its newest cut.
        """
        if self.lease is None:
            raise ValueError("this store was opened without a lease holder")
        me = self.lease
        with self._db.write(append_to="lease"):
            now = self._db.now_ms()
            row = self._conn.execute(
                "SELECT holder, epoch, expires_ms FROM lease WHERE name = ?", (_LEASE_NAME,)
            ).fetchone()
            if row is None:
                epoch = 1
                self._conn.execute(
                    "INSERT INTO lease (name, holder, epoch, expires_ms) VALUES (?, ?, ?, ?)",
                    (_LEASE_NAME, me.name, epoch, now + me.millis),
                )
            else:
                holder, epoch, expires = str(row[0]), int(row[1]), int(row[2])
                ours = holder == me.name and epoch == self._epoch
                if not ours and expires > now and holder != me.name:
                    self._epoch = None
                    return LeaseState(held=False, holder=holder, epoch=epoch, expires_ms=expires)
                if not ours:
                    epoch += 1
                self._conn.execute(
                    "UPDATE lease SET holder = ?, epoch = ?, expires_ms = ? WHERE name = ?",
                    (me.name, epoch, now + me.millis, _LEASE_NAME),
                )
            if epoch != self._epoch:
                self._reload()
        self._epoch = epoch
        return LeaseState(held=True, holder=me.name, epoch=epoch, expires_ms=now + me.millis)

    def release_lease(self) -> None:
        """Give the lease up now (a clean stop), so the next publisher need not wait for
        it to lapse. Does nothing if this store does not hold it."""
        if self.lease is None or self._epoch is None:
            return
        with self._db.write(append_to="lease"):
            self._conn.execute(
                "UPDATE lease SET expires_ms = 0 WHERE name = ? AND holder = ? AND epoch = ?",
                (_LEASE_NAME, self.lease.name, self._epoch),
            )
        self._epoch = None

    def renew_lease(self) -> None:
        """Renew the lease this store holds (between cuts; every cut renews it too).

        Raises:
            LeaseLostError: if it lapsed or another publisher took it.
        """
        if self.lease is None:
            return
        with self._db.write(append_to="lease"):
            self._fence()

    @property
    def lease_epoch(self) -> int | None:
        """The epoch of the lease this store holds (None: it holds none)."""
        return self._epoch

    def _fence(self, *, at_commit: bool = False) -> None:
        """Renew the lease inside the open write transaction, or refuse to go on.

        The renewal is an UPDATE that matches only our holder and our epoch and, when
        the transaction begins, a lease that has not lapsed on the database's clock; it
        locks the row until the transaction ends, so no publisher can take the lease
        while this one appends. Just before the commit it is renewed again (holder and
        epoch only: the row is still locked), so the lease runs from the commit.

        Raises:
            LeaseLostError: if no row matched (lapsed, or taken by another publisher).
        """
        assert self.lease is not None
        if self._epoch is None:
            raise LeaseLostError(f"publisher {self.lease.name} does not hold the lease")
        now = self._db.now_ms()
        renewed = self._conn.execute(
            "UPDATE lease SET expires_ms = ? WHERE name = ? AND holder = ? AND epoch = ? "
            "AND expires_ms > ?",
            (
                now + self.lease.millis,
                _LEASE_NAME,
                self.lease.name,
                self._epoch,
                -1 if at_commit else now,
            ),
        )
        if renewed.rowcount != 1:
            lost, self._epoch = self._epoch, None
            raise LeaseLostError(
                f"publisher {self.lease.name} lost the lease of epoch {lost} (lapsed or "
                "taken by another publisher): nothing was stored or signed"
            )

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
        """One cut: a write transaction that holds the log's append lock; on any
        exception everything rolls back, including the in-memory tree state.

        With a lease, the lease is renewed first, in the transaction (:meth:`_fence`),
        and the log is checked to be the size this store last knew: a publisher that
        lost the lease, or a second writer without one, stops here before anything is
        appended or signed.

        Raises:
            LeaseLostError: if this store no longer holds the lease.
            StoreIntegrityError: if another writer extended the log.
        """
        saved_size, saved_hashes = self._range.size, self._range.hashes
        try:
            with self._db.write(append_to="leaves"):
                if self.lease is not None:
                    self._fence()
                stored = self._count_leaves()
                if stored != self._size:
                    raise StoreIntegrityError(
                        f"{self.path}: the log has {stored} leaves, this publisher last knew "
                        f"{self._size}: another publisher writes to this store"
                    )
                yield
                if self.lease is not None:
                    self._fence(at_commit=True)
        except BaseException:
            self._size = saved_size
            self._range = CompactRange(size=saved_size, hashes=saved_hashes)
            raise

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
            "INSERT INTO results (sha256, data) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING",
            (digest, data),
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
        except self._db.integrity_error as e:
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
