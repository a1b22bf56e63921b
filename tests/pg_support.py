"""A real PostgreSQL server for the store tests: started once per test session in a
temporary directory (initdb, then ``postgres`` on a free loopback port, as the
``postgres`` user when the tests run as root), one database per test.

Skipped with a reason only when the server's programs are absent and the run is not in
CI; in CI (``CI=true``) a missing PostgreSQL fails the tests that need it.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from veritally.storage import PostgresUrl

# Seconds the server may take to accept connections after it is started.
START_TIMEOUT_S = 30.0
_names = itertools.count()


def postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server programs (newest major), if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running server: its data directory and port."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str) -> PostgresUrl:
        """The URL of ``database`` on this server."""
        return PostgresUrl(f"postgresql://postgres@127.0.0.1:{self.port}/{database}")

    def create_database(self) -> PostgresUrl:
        """A new, empty database."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(str(self.url("postgres")), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a new server in a temporary directory.

    Raises:
        pytest.skip.Exception: no PostgreSQL programs, outside CI.
        RuntimeError: no PostgreSQL programs in CI, or the server did not start.
    """
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("PostgreSQL is not installed (scripts/system-packages.sh)")
        pytest.skip("PostgreSQL is not installed: run scripts/system-packages.sh as root")
    # Not under pytest's tmp dirs: those are private to root, and the server runs as
    # the postgres user.
    root = Path(tempfile.mkdtemp(prefix="veritally-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = (root / "postgres.log").open("wb")
    process = subprocess.Popen(
        _as_owner(
            [
                str(bindir / "postgres"),
                *("-D", str(data)),
                *("-p", str(port)),
                *("-c", "listen_addresses=127.0.0.1"),
                *("-c", f"unix_socket_directories={root}"),
                # The stores' durability is what is tested: commits are flushed.
                *("-c", "fsync=on"),
                *("-c", "synchronous_commit=on"),
                *("-c", "max_connections=200"),
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    server = PostgresServer(root=root, port=port, process=process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(str(server.url("postgres")), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = (root / "postgres.log").read_text(errors="replace")
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start:\n{output}") from None
            time.sleep(0.05)
