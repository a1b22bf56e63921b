"""Ingest's store: the acta log, the latest revision of every acta, pending captures,
and the audit tables. One writer (the ingest process); readers stream the log.

The database is a SQLite file or, for a ``postgresql://`` location, a PostgreSQL
database (:mod:`veritally.storage`; docs/adr/0093-postgresql-store.md); the queries and
checks below are the same for both. SQLite settings (see
docs/adr/0030-ingest-sqlite-durability.md, applied by :func:`veritally.storage.connect`):
WAL journal so that log readers never block the writer, ``synchronous=FULL`` so that a
committed transaction survives a power loss and not only a process crash. PostgreSQL:
``synchronous_commit=on``. Either way one transaction per batch, so that the flush is
paid once per few hundred actas, and the log's positions are checked inside it: the
log stays dense whatever a writer offers (:class:`SequenceConflictError`).

Stores are checked, not trusted: a pending capture is loaded back (at start) only if its
acta bytes hash to the digest stored with it, the digest the second capture is compared
with; otherwise ingest refuses to start (:class:`CaptureIntegrityError`), so that bytes
edited in the file are never logged as an agreed capture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from veritally.errors import ServiceError
from veritally.ingest.rules import content_digest
from veritally.storage import Connection, Database, DbLocation, Table, capped_page, open_database
from veritally_client.protocol.pb import acta_pb2

log = logging.getLogger(__name__)


class CaptureIntegrityError(ServiceError):
    """A stored pending capture does not hash to its stored digest: the file was changed
    outside ingest (docs/publication.md, "After a restore", says how to recover)."""


@dataclass(frozen=True, slots=True)
class Logged:
    """The latest logged revision of an acta (keyed by its acta_id)."""

    revision: int
    sequence: int
    digest: bytes
    counted: bool
    reason: int


@dataclass(frozen=True, slots=True)
class NightClosed:
    """The close of the night: records logged at the close, when (ISO 8601 UTC), by whom
    (an operator's SPIFFE ID, or "" for the definition's close time)."""

    closed_at_records: int
    close_time: str
    closed_by: str


@dataclass(frozen=True, slots=True)
class Capture:
    """A capture waiting for agreement (double capture)."""

    operator_id: str  # the capturing operator's SPIFFE ID (from her certificate)
    digest: bytes
    acta: bytes
    submitter: str
    received_time: str


@dataclass(slots=True)
class Writes:
    """Everything one batch changes, written in one transaction."""

    log: list[tuple[int, str, int, bytes]] = field(default_factory=list)
    actas: list[tuple[str, int, int, bytes, int, int]] = field(default_factory=list)
    captures: list[tuple[str, int, str, bytes, bytes, str, str]] = field(default_factory=list)
    clear_captures: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, bytes, str, str, str]] = field(default_factory=list)
    actions: list[tuple[str, str, int, str, str, str]] = field(default_factory=list)
    # (acta_id, received_time) of conflicts beyond the engine's cap: counted, not kept.
    dropped_conflicts: list[tuple[str, str]] = field(default_factory=list)
    # Corrections waiting for a second operator: (acta_id, operator, supersedes_revision,
    # digest, acta, reason, time); one per acta and operator (a new one replaces it).
    proposals: list[tuple[str, str, int, bytes, bytes, str, str]] = field(default_factory=list)
    clear_proposals: list[str] = field(default_factory=list)

    def extend(self, other: Writes) -> None:
        """Append ``other``'s changes after these (group commit)."""
        self.log.extend(other.log)
        self.actas.extend(other.actas)
        self.captures.extend(other.captures)
        self.clear_captures.extend(other.clear_captures)
        self.conflicts.extend(other.conflicts)
        self.actions.extend(other.actions)
        self.dropped_conflicts.extend(other.dropped_conflicts)
        self.proposals.extend(other.proposals)
        self.clear_proposals.extend(other.clear_proposals)

    def empty(self) -> bool:
        """Whether the batch changes nothing (all duplicates or rejections)."""
        return not (
            self.log
            or self.actas
            or self.captures
            or self.clear_captures
            or self.conflicts
            or self.actions
            or self.dropped_conflicts
            or self.proposals
            or self.clear_proposals
        )


# The store's schema, for both backends (veritally.storage.Table).
TABLES = (
    # The acta log: dense sequence, exact leaf bytes as streamed.
    Table(
        "log",
        {"sequence": int, "acta_id": str, "revision": int, "leaf": bytes},
        pk="sequence",
        unique=(("acta_id", "revision"),),
    ),
    Table(
        "actas",
        {
            "acta_id": str,
            "revision": int,
            "sequence": int,
            "digest": bytes,
            "counted": int,
            "reason": int,
        },
        pk="acta_id",
    ),
    Table(
        "captures",
        {
            "acta_id": str,
            "idx": int,
            "operator_id": str,
            "digest": bytes,
            "acta": bytes,
            "submitter": str,
            "received_time": str,
        },
        pk=("acta_id", "idx"),
    ),
    # Different content for an acta already logged, kept for audit.
    Table(
        "conflicts",
        {
            "id": int,
            "acta_id": str,
            "acta": bytes,
            "submitter": str,
            "received_time": str,
            "reason": str,
        },
        pk="id",
        generated="id",
    ),
    # Conflicts of an acta beyond the engine's cap: how many, and the latest.
    Table(
        "conflicts_dropped",
        {"acta_id": str, "count": int, "last_received_time": str},
        pk="acta_id",
    ),
    # Corrections and cross-check resolutions: who, why, when.
    Table(
        "operator_actions",
        {
            "id": int,
            "acta_id": str,
            "kind": str,
            "revision": int,
            "reason": str,
            "submitter": str,
            "time": str,
        },
        pk="id",
        generated="id",
    ),
    # At most one row: the close of the night (ADR 0081).
    Table(
        "night",
        {"id": int, "closed_at_records": int, "close_time": str, "closed_by": str},
        pk="id",
    ),
    # Corrections proposed by one operator, waiting for a second (dual control).
    Table(
        "pending_corrections",
        {
            "acta_id": str,
            "operator": str,
            "supersedes_revision": int,
            "digest": bytes,
            "acta": bytes,
            "reason": str,
            "time": str,
        },
        pk=("acta_id", "operator"),
    ),
)


class SequenceConflictError(ServiceError):
    """A batch whose records do not continue the stored log densely (another writer
    appended, or the batch skips or repeats a position); nothing of it is written."""


class IngestStore:
    """The writer side of the store. Not thread-safe: one call at a time (the engine holds
    a lock around every write)."""

    def __init__(self, location: DbLocation) -> None:
        """Open or create the store at ``location`` (a SQLite file or a PostgreSQL URL).

        Raises:
            sqlite3.Error: if the SQLite file cannot be opened.
            psycopg.Error: if PostgreSQL cannot be reached.
        """
        self.path = location
        self._db = open_database(location)
        self._conn = self._db.writer
        self._db.ensure(TABLES)

    @property
    def database(self) -> Database:
        """The database behind the store (tests and audit tools)."""
        return self._db

    def log_size(self) -> int:
        """Number of records in the acta log."""
        row = self._conn.execute("SELECT COALESCE(MAX(sequence) + 1, 0) FROM log").fetchone()
        return int(row[0])

    def night_closed(self) -> NightClosed | None:
        """The close of the night, if it was closed."""
        row = self._conn.execute(
            "SELECT closed_at_records, close_time, closed_by FROM night WHERE id = 1"
        ).fetchone()
        return None if row is None else NightClosed(int(row[0]), str(row[1]), str(row[2]))

    def close_night(self, closed: NightClosed) -> NightClosed:
        """Record the close of the night, unless it was recorded before; durable on
        return. Returns the close as recorded (the first one).

        Raises:
            sqlite3.Error, psycopg.Error: if it cannot be written.
        """
        with self._db.write():
            self._conn.execute(
                "INSERT INTO night (id, closed_at_records, close_time, closed_by) "
                "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (closed.closed_at_records, closed.close_time, closed.closed_by),
            )
        found = self.night_closed()
        assert found is not None  # just written
        return found

    def logged(self) -> Iterator[tuple[str, Logged]]:
        """``(acta_id, latest revision)`` of every logged acta."""
        for row in self._conn.execute(
            "SELECT acta_id, revision, sequence, digest, counted, reason FROM actas"
        ):
            yield row[0], Logged(row[1], row[2], row[3], bool(row[4]), row[5])

    def captures(self) -> Iterator[tuple[str, Capture]]:
        """``(acta_id, capture)`` of every pending capture, by acta then arrival order.

        Raises:
            CaptureIntegrityError: if a capture's acta bytes do not hash to its digest.
        """
        for row in self._conn.execute(
            "SELECT acta_id, idx, operator_id, digest, acta, submitter, received_time "
            "FROM captures ORDER BY acta_id, idx"
        ):
            capture = Capture(*row[2:])
            try:
                digest = content_digest(acta_pb2.Acta.FromString(capture.acta))
            except DecodeError:
                digest = b""
            if digest != capture.digest:
                error = CaptureIntegrityError(
                    f"{self.path}: pending capture {row[1]} of acta {row[0][:64]!r} does not "
                    "hash to its stored digest; refusing to load it (and to log it)"
                )
                log.error("ALARM %s", error)
                raise error
            yield row[0], capture

    def proposals(self) -> Iterator[tuple[str, str, int, bytes, bytes, str, str]]:
        """Every pending correction: ``(acta_id, operator, supersedes_revision, digest,
        acta, reason, time)``."""
        for row in self._conn.execute(
            "SELECT acta_id, operator, supersedes_revision, digest, acta, reason, time "
            "FROM pending_corrections ORDER BY acta_id, time"
        ):
            yield row[0], row[1], int(row[2]), bytes(row[3]), bytes(row[4]), row[5], row[6]

    def conflict_counts(self) -> Iterator[tuple[str, int]]:
        """``(acta_id, conflicts kept)`` of every acta with a conflict."""
        for row in self._conn.execute("SELECT acta_id, COUNT(*) FROM conflicts GROUP BY acta_id"):
            yield row[0], int(row[1])

    def dropped_conflicts(self) -> dict[str, int]:
        """acta_id -> conflicting submissions refused but not kept (beyond the cap)."""
        rows = self._conn.execute("SELECT acta_id, count FROM conflicts_dropped")
        return {str(r[0]): int(r[1]) for r in rows}

    def leaves_of(self, acta_id: str) -> list[tuple[int, int, bytes]]:
        """``(revision, sequence, leaf)`` of every logged revision of one acta."""
        return [
            (int(r[0]), int(r[1]), bytes(r[2]))
            for r in self._conn.execute(
                "SELECT revision, sequence, leaf FROM log WHERE acta_id = ? ORDER BY revision",
                (acta_id,),
            )
        ]

    def count(self, table: str) -> int:
        """Rows in one of the store's tables (audit and tests).

        Raises:
            ValueError: if ``table`` is not one of the store's tables.
        """
        if table not in (
            "log",
            "actas",
            "captures",
            "conflicts",
            "conflicts_dropped",
            "operator_actions",
            "pending_corrections",
        ):
            raise ValueError(f"unknown table {table!r}")
        row = self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - table name checked against a fixed list above
        return int(row[0])

    def commit(self, writes: Writes) -> None:
        """Write one batch in one transaction; on return it is durable.

        Raises:
            SequenceConflictError: if the batch's records do not continue the log
                densely; nothing of it is written.
            sqlite3.Error, psycopg.Error: if the transaction fails; nothing of it is
                written.
        """
        if writes.empty():
            return
        conn = self._conn
        with self._db.write(append_to="log"):
            if writes.log:
                # The log stays dense: positions are checked against the stored log
                # inside the transaction that holds the append lock (ADR 0093).
                (size,) = conn.execute("SELECT COALESCE(MAX(sequence) + 1, 0) FROM log").fetchone()
                expected = list(range(int(size), int(size) + len(writes.log)))
                if [row[0] for row in writes.log] != expected:
                    raise SequenceConflictError(
                        f"records at positions {writes.log[0][0]}..{writes.log[-1][0]} "
                        f"offered to a log of {size} records"
                    )
                conn.executemany(
                    "INSERT INTO log (sequence, acta_id, revision, leaf) VALUES (?, ?, ?, ?)",
                    writes.log,
                )
            if writes.actas:
                conn.executemany(
                    "INSERT INTO actas (acta_id, revision, sequence, digest, counted, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (acta_id) DO UPDATE SET "
                    "revision = excluded.revision, sequence = excluded.sequence, "
                    "digest = excluded.digest, counted = excluded.counted, "
                    "reason = excluded.reason",
                    writes.actas,
                )
            # Captures are inserted before any are cleared: an acta captured and then
            # confirmed within the same transaction must end with no pending capture.
            if writes.captures:
                conn.executemany(
                    "INSERT INTO captures "
                    "(acta_id, idx, operator_id, digest, acta, submitter, received_time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    writes.captures,
                )
            if writes.clear_captures:
                conn.executemany(
                    "DELETE FROM captures WHERE acta_id = ?",
                    [(a,) for a in writes.clear_captures],
                )
            if writes.conflicts:
                conn.executemany(
                    "INSERT INTO conflicts (acta_id, acta, submitter, received_time, reason) "
                    "VALUES (?, ?, ?, ?, ?)",
                    writes.conflicts,
                )
            if writes.dropped_conflicts:
                conn.executemany(
                    "INSERT INTO conflicts_dropped (acta_id, count, last_received_time) "
                    "VALUES (?, 1, ?) ON CONFLICT (acta_id) DO UPDATE SET "
                    "count = conflicts_dropped.count + 1, "
                    "last_received_time = excluded.last_received_time",
                    writes.dropped_conflicts,
                )
            if writes.actions:
                conn.executemany(
                    "INSERT INTO operator_actions "
                    "(acta_id, kind, revision, reason, submitter, time) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    writes.actions,
                )
            # Applied corrections clear the acta's proposals before new ones are stored.
            if writes.clear_proposals:
                conn.executemany(
                    "DELETE FROM pending_corrections WHERE acta_id = ?",
                    [(a,) for a in writes.clear_proposals],
                )
            if writes.proposals:
                conn.executemany(
                    "INSERT INTO pending_corrections "
                    "(acta_id, operator, supersedes_revision, digest, acta, reason, time) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (acta_id, operator) DO UPDATE "
                    "SET supersedes_revision = excluded.supersedes_revision, "
                    "digest = excluded.digest, acta = excluded.acta, "
                    "reason = excluded.reason, time = excluded.time",
                    writes.proposals,
                )

    def reader(self) -> LogReader:
        """A reader of the log for one stream (close it when the stream ends)."""
        return LogReader(self._db.reader())

    def close(self) -> None:
        """Close the store's connections."""
        self._db.close()


class LogReader:
    """A read-only view of the acta log for streaming (its own connection: it never
    blocks, nor is blocked by, the writer)."""

    def __init__(self, conn: Connection) -> None:
        """Read through ``conn`` (from :meth:`IngestStore.reader`)."""
        self._conn = conn

    def page(self, from_sequence: int, *, max_leaves: int, max_bytes: int) -> list[bytes]:
        """Consecutive leaves from ``from_sequence``: at most ``max_leaves`` and, past the
        first, at most ``max_bytes`` in total."""
        rows = self._conn.execute(
            "SELECT leaf FROM log WHERE sequence >= ? ORDER BY sequence LIMIT ?",
            (from_sequence, max_leaves),
        )
        return capped_page(rows, max_bytes)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()
