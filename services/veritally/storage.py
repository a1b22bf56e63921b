"""What every veritally store shares: how a SQLite file is opened, and how much of a log
one page (one streamed or answered message) carries.

Ingest, aggregation and publication each keep one SQLite file, written by one process
and read concurrently by its streams. Each opens it with :func:`connect`, which applies
the durability settings of docs/adr/0030-ingest-sqlite-durability.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MAX_LEAVES_PER_PAGE",
    "MAX_PAGE_BYTES",
    "STREAM_PAGE_BYTES",
    "STREAM_PAGE_LEAVES",
    "capped_page",
    "connect",
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
