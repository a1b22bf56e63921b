"""Shared test configuration. Paths resolve from this file, never the working directory.

Store fixtures: ``store_location`` runs a test once per backend, a SQLite file in the
test's tmp dir and a new database on the session's PostgreSQL server
(tests/pg_support.py, started on first use and stopped at the end of the session).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_support import PostgresServer, start_postgres
from veritally.storage import DbLocation

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"
VECTORS_DIR = TESTS_DIR / "vectors"

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> DbLocation:
    """A new, empty database on the session's server."""
    return postgres_server.create_database()


class StoreLocations:
    """New store locations of one backend for one test (a test may need several)."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._request = request

    def new(self, name: str) -> DbLocation:
        """A new store: ``<tmp>/<name>.db`` or a new PostgreSQL database."""
        if self.backend == "sqlite":
            return self._tmp_path / f"{name}.db"
        server: PostgresServer = self._request.getfixturevalue("postgres_server")
        return server.create_database()


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocations:
    """Store locations on each backend in turn (the test runs once per backend)."""
    return StoreLocations(str(request.param), tmp_path, request)


@pytest.fixture
def store_location(stores: StoreLocations) -> DbLocation:
    """One new store on each backend in turn."""
    return stores.new("store")
