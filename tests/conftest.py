"""Shared fixtures.

Backends: ``store_settings`` is parametrised over embedded SQLite and a real
PostgreSQL server (never a mock). Each PostgreSQL test gets its own database,
created from a migrated template and dropped afterwards, so no test depends on
what another left behind. The server is named by ``MISSION_LEDGER_TEST_PG`` (set
by ``.ci/with-postgres``), default ``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from ledger.application import Ledger
from ledger.persistence.migrations import migrate
from ledger.persistence.store import open_ledger
from ledger.settings import Settings

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class MutableClock:
    """A clock tests move by hand. Thread-safe, always timezone-aware UTC."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now

    def set(self, value: datetime) -> None:
        with self._lock:
            self._now = value


T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="session")
def _no_gc_freeze_in_test_processes() -> Iterator[None]:
    """Apps started inside the test process leave the collector alone: freezing (and the
    full collection before it) would act on the whole pytest process at every start-up.
    Servers started as subprocesses (tests/e2e) run the default policy."""
    previous = os.environ.get("MISSION_LEDGER_GC_FREEZE")
    os.environ["MISSION_LEDGER_GC_FREEZE"] = "false"
    yield
    if previous is None:
        os.environ.pop("MISSION_LEDGER_GC_FREEZE", None)
    else:
        os.environ["MISSION_LEDGER_GC_FREEZE"] = previous


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock(T0)


# ---------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    admin_url: str
    template: str | None = None
    created: list[str] = field(default_factory=list)

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, "", ""))

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def create_database(self, *, template: str | None = None) -> str:
        name = f"ml_test_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("MISSION_LEDGER_TEST_PG", DEFAULT_PG)
    server = PostgresServer(admin_url=url)
    try:
        with server.admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL tests need a server at {url} ({error}). Run the suite with "
            "`make test` (it starts one when none is running) or set MISSION_LEDGER_TEST_PG.",
            pytrace=False,
        )
    template = server.create_database()
    migrate(Settings(database_url=server.url_for(template)))
    server.template = template
    yield server
    server.drop_database(template)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database of its own."""
    name = postgres_server.create_database(template=postgres_server.template)
    yield postgres_server.url_for(name)
    postgres_server.drop_database(name)


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = postgres_server.create_database()
    yield postgres_server.url_for(name)
    postgres_server.drop_database(name)


# ---------------------------------------------------------------------- both backends


def make_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    url = request.getfixturevalue("postgres_url")
    return Settings(database_url=url, db_pool_size=2, db_max_overflow=6)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return make_settings(backend, tmp_path, request)


@pytest.fixture
def ledger(store_settings: Settings, clock: MutableClock) -> Iterator[Ledger]:
    app = open_ledger(store_settings, clock=clock)
    yield app
    app.close()
