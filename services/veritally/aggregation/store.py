"""Aggregation's store: the leaves it has consumed, in log order, and its cursor, in a
SQLite file or a PostgreSQL database (:mod:`veritally.storage`, ADR 0093).

The leaves and the cursor are written in the same transaction, so after a crash the
cursor is exactly the number of leaves stored: a restart rebuilds the tally from them and
asks ingest for the next one, counting nothing twice and skipping nothing. Same
durability settings as ingest (docs/adr/0030-ingest-sqlite-durability.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from veritally.errors import ServiceError
from veritally.storage import Connection, Database, DbLocation, Table, capped_page, open_database

_CURSOR_KEY = "next_sequence"
# Leaves read per query when rebuilding the tally at startup (bounded memory).
_REPLAY_CHUNK = 10_000

TABLES = (
    Table("leaves", {"sequence": int, "leaf": bytes}, pk="sequence"),
    Table("meta", {"key": str, "value": int}, pk="key"),
)


class CursorMismatchError(ServiceError, ValueError):
    """Leaves offered at a position other than the cursor (a gap or an overlap)."""


class AggregationStore:
    """Leaves and cursor. One writer (the follower), readers for streaming."""

    def __init__(self, location: DbLocation) -> None:
        """Open or create the store at ``location`` (a SQLite file or a PostgreSQL URL).

        Raises:
            sqlite3.Error: if the SQLite file cannot be opened.
            psycopg.Error: if PostgreSQL cannot be reached.
        """
        self.path = location
        # Commits run in a worker thread, one at a time (the follower is the only writer).
        self._db: Database = open_database(location)
        self._conn = self._db.writer
        if "meta" in self._db.ensure(TABLES):
            self._conn.execute("INSERT INTO meta (key, value) VALUES (?, 0)", (_CURSOR_KEY,))

    def cursor(self) -> int:
        """The sequence number of the next leaf to consume.

        Raises:
            RuntimeError: if the cursor and the stored leaves disagree (a corrupted store).
        """
        (value,) = self._conn.execute(
            "SELECT value FROM meta WHERE key = ?", (_CURSOR_KEY,)
        ).fetchone()
        (count,) = self._conn.execute("SELECT COUNT(*) FROM leaves").fetchone()
        if int(value) != int(count):
            raise RuntimeError(f"cursor {value} but {count} leaves stored")
        return int(value)

    def append(self, first_sequence: int, leaves: Sequence[bytes]) -> None:
        """Store consecutive leaves from ``first_sequence`` and advance the cursor, in one
        transaction.

        Raises:
            CursorMismatchError: if ``first_sequence`` is not the cursor (nothing is
                written).
            sqlite3.Error, psycopg.Error: if the transaction fails (nothing is written).
        """
        conn = self._conn
        with self._db.write():
            # Moving the cursor only from ``first_sequence`` is the check and the lock
            # at once: a second writer's update of the same row waits, then finds the
            # cursor moved.
            moved = conn.execute(
                "UPDATE meta SET value = ? WHERE key = ? AND value = ?",
                (first_sequence + len(leaves), _CURSOR_KEY, first_sequence),
            )
            if moved.rowcount != 1:
                (cursor,) = conn.execute(
                    "SELECT value FROM meta WHERE key = ?", (_CURSOR_KEY,)
                ).fetchone()
                raise CursorMismatchError(
                    f"leaves from {first_sequence} appended at cursor {cursor}"
                )
            conn.executemany(
                "INSERT INTO leaves (sequence, leaf) VALUES (?, ?)",
                [(first_sequence + i, leaf) for i, leaf in enumerate(leaves)],
            )

    def replay(self) -> Iterator[bytes]:
        """Every stored leaf in order (to rebuild the tally at startup)."""
        position = 0
        while True:
            rows = self._conn.execute(
                "SELECT leaf FROM leaves WHERE sequence >= ? ORDER BY sequence LIMIT ?",
                (position, _REPLAY_CHUNK),
            ).fetchall()
            if not rows:
                return
            for (leaf,) in rows:
                yield bytes(leaf)
            position += len(rows)

    def reader(self) -> LeafReader:
        """A reader of the stored leaves for one stream (close it when it ends)."""
        return LeafReader(self._db.reader())

    def close(self) -> None:
        """Close the store's connections."""
        self._db.close()


class LeafReader:
    """A read-only connection for streaming stored leaves (never blocks the writer)."""

    def __init__(self, conn: Connection) -> None:
        """Read through ``conn`` (from :meth:`AggregationStore.reader`)."""
        self._conn = conn

    def page(
        self, from_sequence: int, until: int, *, max_leaves: int, max_bytes: int
    ) -> list[bytes]:
        """Consecutive leaves in ``[from_sequence, until)``: at most ``max_leaves`` and,
        past the first, at most ``max_bytes``."""
        rows = self._conn.execute(
            "SELECT leaf FROM leaves WHERE sequence >= ? ORDER BY sequence LIMIT ?",
            (from_sequence, min(max_leaves, until - from_sequence)),
        )
        return capped_page(rows, max_bytes)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
