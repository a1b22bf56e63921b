"""What every veritally store shares: how its database is opened (a SQLite file, or a
PostgreSQL database named by a ``postgresql://`` URL), and how much of a log one page
(one streamed or answered message) carries.

Ingest, aggregation and publication each keep one database, written by one process and
read concurrently by its streams. A SQLite file is opened with :func:`connect`, which
applies the durability settings of docs/adr/0030-ingest-sqlite-durability.md.
:func:`open_database` opens either backend behind one small interface
(:class:`Database`: one writing connection, reading connections, a write transaction,
a schema created if missing), so that a store's queries and checks exist once
(docs/adr/0093-postgresql-store.md).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import sqlite_utils

from veritally.bounds import identifier_problem

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MAX_LEASE_SECONDS",
    "MAX_LEAVES_PER_PAGE",
    "MAX_PAGE_BYTES",
    "MAX_POSTGRES_READERS",
    "MAX_URL_CHARS",
    "MIN_LEASE_SECONDS",
    "POSTGRES_SCHEMES",
    "STREAM_PAGE_BYTES",
    "STREAM_PAGE_LEAVES",
    "Connection",
    "Database",
    "DbLocation",
    "LeaseHolder",
    "PostgresUrl",
    "Rows",
    "Table",
    "capped_page",
    "connect",
    "open_database",
    "parse_location",
]

# How long a connection waits for a lock held by another connection, in milliseconds.
# One process writes each file, and readers in WAL mode are never blocked, so this is a
# safety margin (for bench or tools that open a file beside its service).
BUSY_TIMEOUT_MS = 10_000

# Leaves per StreamRecords or StreamAggregatedRecords message, and bytes per message past
# the first leaf: a leaf is ~300 B, so a page is a few hundred KiB, well under the gRPC
# and Envoy message limits.
STREAM_PAGE_LEAVES = 1_000
STREAM_PAGE_BYTES = 1024 * 1024
#: Leaves per GetLeaves answer: acta leaves are ~0.3-0.5 KiB, so 4096 keep a page near
#: 2 MiB — far below the gRPC and Envoy message limits — while a 500k-leaf recount still
#: needs only ~120 calls.
MAX_LEAVES_PER_PAGE = 4096
#: Bytes of leaves per GetLeaves answer past the first leaf (always taken): with leaves
#: of at most ``bounds.MAX_LEAF_BYTES`` an answer stays under 2 MiB + 32 KiB, below gRPC's
#: default 4 MiB receive limit, whatever an attacker managed to get logged.
MAX_PAGE_BYTES = 2 * 1024 * 1024


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """Open the database with the durability settings of the ADR: WAL, fully synchronous,
    explicit transactions only, and a busy timeout of :data:`BUSY_TIMEOUT_MS`.

    Args:
        path: the SQLite file (created if missing).
        check_same_thread: False for a connection that a worker thread uses too (one
            call at a time).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def capped_page(rows: Iterable[tuple[bytes]], max_bytes: int) -> list[bytes]:
    """The leaves of ``rows`` in order, up to ``max_bytes`` in total; the first leaf is
    always taken, whatever its size, so that a stream reading page by page moves on."""
    leaves: list[bytes] = []
    size = 0
    for (leaf,) in rows:
        if leaves and size + len(leaf) > max_bytes:
            break
        leaves.append(bytes(leaf))
        size += len(leaf)
    return leaves


# -- the database behind a store ---------------------------------------------------------

#: URL schemes that select PostgreSQL (libpq accepts both).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Characters of a database URL: host, port, database, user and a few parameters fit
#: in far less; a longer one is a mistake, refused before libpq parses it.
MAX_URL_CHARS = 1024
#: Reading connections a PostgreSQL store keeps open at most (one per log stream in
#: progress; streams per caller are bounded by the mesh and veritally.rpc.streams).
MAX_POSTGRES_READERS = 16
# Seconds a new log stream waits for a free reading connection before it fails.
_READER_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class PostgresUrl:
    """A PostgreSQL database named by a libpq URL (``postgresql://host:port/db``).

    Keep passwords out of it (they would show in the process list): libpq reads them
    from ``PGPASSFILE`` or ``~/.pgpass``. ``repr`` hides any password all the same.

    Raises:
        ValueError: if the text is not a ``postgresql://`` URL or is too long.
    """

    url: str

    def __post_init__(self) -> None:
        if not self.url.startswith(POSTGRES_SCHEMES):
            raise ValueError(f"expected a postgresql:// URL, found {self.url[:32]!r}")
        if len(self.url) > MAX_URL_CHARS:
            raise ValueError(
                f"database URL of {len(self.url)} characters (at most {MAX_URL_CHARS})"
            )

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        parts = urlsplit(self.url)
        shown = self.url
        if parts.password:
            shown = self.url.replace(f":{parts.password}@", ":***@", 1)
        return f"PostgresUrl({shown!r})"


#: Where a store lives: a SQLite file, or a PostgreSQL database.
DbLocation = Path | PostgresUrl


def parse_location(text: str) -> DbLocation:
    """``--db`` as given: a ``postgresql://`` URL selects PostgreSQL, anything else is the
    path of a SQLite file.

    Raises:
        ValueError: if a ``postgresql://`` URL is too long.
    """
    if text.startswith(POSTGRES_SCHEMES):
        return PostgresUrl(text)
    return Path(text)


#: Bounds of a lease's length, in seconds: under a tenth of a second a loaded machine
#: loses it between two writes; past ten minutes a dead writer stops the night that long.
MIN_LEASE_SECONDS = 0.1
MAX_LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class LeaseHolder:
    """One writer's claim to a lease on a database several processes share (the
    publication lease of docs/adr/0094-publication-lease.md): only the holder writes,
    and every write transaction renews the claim first.

    Attributes:
        name: who holds it (a host or process name, an identifier of at most 64
            characters, unique among the writers); shown to the writers that wait.
        seconds: how long a renewal holds it. Every write renews it, so it must exceed
            the time between writes; a dead writer's lease is taken over this long
            after its last renewal.

    Raises:
        ValueError: if the name is not an identifier or the length is out of bounds.
    """

    name: str
    seconds: float

    def __post_init__(self) -> None:
        problem = identifier_problem(self.name)
        if problem is not None:
            raise ValueError(f"lease holder {problem}")
        if not MIN_LEASE_SECONDS <= self.seconds <= MAX_LEASE_SECONDS:
            raise ValueError(
                f"lease length must be {MIN_LEASE_SECONDS:g} to {MAX_LEASE_SECONDS:g} seconds"
            )

    @property
    def millis(self) -> int:
        """The length in milliseconds."""
        return int(self.seconds * 1000)


@dataclass(frozen=True)
class Table:
    """One table of a store's schema, written once for both backends.

    Attributes:
        name: the table's name.
        columns: column name -> Python type (int, str or bytes), in order.
        pk: the primary key column(s).
        unique: column lists with a unique index each.
        generated: an integer key column the database numbers when a row omits it.
    """

    name: str
    columns: Mapping[str, type]
    pk: str | tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    generated: str | None = None


class Rows(Protocol):
    """What a query returns (a DB-API cursor of either backend)."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """Every remaining row."""

    def __iter__(self) -> Iterator[Any]:
        """The remaining rows."""


class Connection(Protocol):
    """One connection. SQL is written once with ``?`` placeholders; the PostgreSQL
    connection translates them."""

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        """Run one statement."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement for every row."""

    def close(self) -> None:
        """Close (or give back) the connection."""


class Database(Protocol):
    """A store's database: one writer (its service process) and readers (its streams)."""

    @property
    def location(self) -> DbLocation:
        """Where the database is."""

    @property
    def writer(self) -> Connection:
        """The one connection that writes (used by one thread at a time)."""

    def ensure(self, tables: Sequence[Table]) -> list[str]:
        """Create the tables that are missing; returns the names of those created."""

    def write(self, *, append_to: str | None = None) -> AbstractContextManager[None]:
        """A write transaction on :attr:`writer`: committed (durably) when the block ends,
        rolled back if it raises. With ``append_to``, no other writer can append to
        that table until the transaction ends (so that ``MAX()+1`` read inside it is
        the next position; on SQLite the transaction's write lock already ensures it)."""

    def reader(self) -> Connection:
        """A connection for reading that never blocks, nor is blocked by, the writer."""

    @property
    def integrity_error(self) -> type[Exception]:
        """What the backend raises when a row breaks a primary key or unique index."""

    def now_ms(self) -> int:
        """The database server's clock, in milliseconds since the Unix epoch: one clock
        for every process that shares the database (leases are timed by it)."""

    def close(self) -> None:
        """Close every connection."""


class _SqliteDatabase:
    def __init__(self, location: Path) -> None:
        self.location = location
        # The service runs commits in a worker thread, one at a time.
        self.writer = connect(location, check_same_thread=False)

    def ensure(self, tables: Sequence[Table]) -> list[str]:
        db = sqlite_utils.Database(self.writer)
        existing = set(db.table_names())
        created = []
        for table in tables:
            if table.name in existing:
                continue
            db.table(table.name).create(dict(table.columns), pk=table.pk)
            for columns in table.unique:
                db.table(table.name).create_index(list(columns), unique=True)
            created.append(table.name)
        return created

    @contextmanager
    def write(self, *, append_to: str | None = None) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the database's write lock: appends are serialised.
        del append_to
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.writer.execute("COMMIT")
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise

    def reader(self) -> Connection:
        return connect(self.location)

    @property
    def integrity_error(self) -> type[Exception]:
        return sqlite3.IntegrityError

    def now_ms(self) -> int:
        # One file on one machine: the machine's clock is the database's.
        return time.time_ns() // 1_000_000

    def close(self) -> None:
        self.writer.close()


_PG_TYPES = {int: "BIGINT", str: "TEXT", bytes: "BYTEA"}


@lru_cache(maxsize=256)
def _pg_sql(sql: str) -> str:
    # Our statements hold no literal "?" or "%"; psycopg's placeholder is %s.
    return sql.replace("?", "%s")


class _PgConnection:
    """A psycopg connection in autocommit mode (transactions only where a store opens
    one), taking ``?`` placeholders."""

    def __init__(self, conn: Any, release: Any = None) -> None:
        self._conn = conn
        self._release = release

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        cursor: Rows = self._conn.execute(_pg_sql(sql), params)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_pg_sql(sql), rows)

    def transaction(self) -> AbstractContextManager[Any]:
        context: AbstractContextManager[Any] = self._conn.transaction()
        return context

    def close(self) -> None:
        if self._release is not None:
            self._release(self._conn)
        else:
            self._conn.close()


class _PostgresDatabase:
    def __init__(self, location: PostgresUrl, *, writer_idle_ms: int | None = None) -> None:
        # Imported here: a SQLite-only deployment never loads libpq.
        import psycopg
        from psycopg_pool import ConnectionPool  # here too, for the same reason

        self.location = location
        self._integrity_error: type[Exception] = psycopg.IntegrityError
        # Every commit waits for its WAL to be flushed (and, with a synchronous standby
        # configured, for the standby): an acknowledged acta is on disk (ADR 0093).
        options = "-c synchronous_commit=on"
        writer_options = options
        if writer_idle_ms is not None:
            # A writer frozen inside a transaction (a stopped process, a partitioned
            # host) loses its session, and with it its locks, after this long.
            writer_options += f" -c idle_in_transaction_session_timeout={writer_idle_ms}"
        self._writer = psycopg.connect(location.url, autocommit=True, options=writer_options)
        self.writer: _PgConnection = _PgConnection(self._writer)
        self._pool = ConnectionPool(
            location.url,
            min_size=0,
            max_size=MAX_POSTGRES_READERS,
            kwargs={"autocommit": True, "options": options},
            timeout=_READER_WAIT_SECONDS,
            open=True,
        )

    def ensure(self, tables: Sequence[Table]) -> list[str]:
        created = []
        with self._writer.transaction():
            # One creator at a time (two processes starting on one new database).
            self._writer.execute("SELECT pg_advisory_xact_lock(934093)")
            for table in tables:
                found = self._writer.execute(
                    "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() "
                    "AND tablename = %s",
                    (table.name,),
                ).fetchone()
                if found is not None:
                    continue
                self._writer.execute(_pg_create(table))
                for columns in table.unique:
                    index = f"idx_{table.name}_{'_'.join(columns)}"
                    quoted = ", ".join(f'"{c}"' for c in columns)
                    self._writer.execute(
                        f'CREATE UNIQUE INDEX "{index}" ON "{table.name}" ({quoted})'
                    )
                created.append(table.name)
        return created

    @contextmanager
    def write(self, *, append_to: str | None = None) -> Iterator[None]:
        with self._writer.transaction():
            if append_to is not None:
                # EXCLUSIVE blocks other writers of the table, never its readers.
                self._writer.execute(f'LOCK TABLE "{append_to}" IN EXCLUSIVE MODE')
            yield

    def reader(self) -> Connection:
        conn = self._pool.getconn()
        return _PgConnection(conn, release=self._pool.putconn)

    @property
    def integrity_error(self) -> type[Exception]:
        return self._integrity_error

    def now_ms(self) -> int:
        # clock_timestamp(), not now(): now() is the transaction's start.
        row = self._writer.execute(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        ).fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        return int(row[0])

    def close(self) -> None:
        self._pool.close()
        self._writer.close()


def _pg_create(table: Table) -> str:
    pk = (table.pk,) if isinstance(table.pk, str) else table.pk
    columns = []
    for name, kind in table.columns.items():
        column = f'"{name}" {_PG_TYPES[kind]}'
        if name == table.generated:
            column += " GENERATED BY DEFAULT AS IDENTITY"
        columns.append(column)
    keys = ", ".join(f'"{c}"' for c in pk)
    return f'CREATE TABLE "{table.name}" ({", ".join(columns)}, PRIMARY KEY ({keys}))'


def open_database(location: DbLocation, *, lease: LeaseHolder | None = None) -> Database:
    """Open the database at ``location``: a SQLite file (created if missing) or a
    PostgreSQL database (which must exist; its tables are created by the store).

    With a ``lease`` (a writer among several on a shared PostgreSQL database), the
    server ends the writer's session when it sits idle inside a transaction for the
    lease's length, so that a frozen holder's locks never keep the next holder out.

    Raises:
        sqlite3.Error: if the SQLite file cannot be opened.
        psycopg.Error: if PostgreSQL cannot be reached.
    """
    if isinstance(location, PostgresUrl):
        return _PostgresDatabase(location, writer_idle_ms=lease.millis if lease else None)
    return _SqliteDatabase(location)
