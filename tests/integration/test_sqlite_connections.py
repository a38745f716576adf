"""The embedded store's connections keep their prepared statements (the library opens them
with a cache of one statement), and are otherwise the library's: WAL, rows as
``sqlite3.Row``, autocommit outside the library's own transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.persistence.database import open_database, store_params
from ledger.persistence.sqlite_connections import STATEMENT_CACHE
from ledger.persistence.store import ensure_schema, open_ledger
from ledger.settings import Settings
from tests.builders import active_mission


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "store")
    ensure_schema(settings)
    return settings


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every ``sqlite3.connect`` from now on."""
    calls: list[dict[str, Any]] = []
    real = sqlite3.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    return calls


def test_the_ledgers_connections_keep_their_prepared_statements(
    embedded: Settings, opened: list[dict[str, Any]]
) -> None:
    ledger = open_ledger(embedded)
    try:
        active_mission(ledger)  # reads and writes through the pool
    finally:
        ledger.close()
    pooled = [kwargs for kwargs in opened if kwargs.get("check_same_thread") is False]
    assert pooled
    assert {kwargs["cached_statements"] for kwargs in pooled} == {STATEMENT_CACHE}


def test_a_database_opened_on_its_own_keeps_its_prepared_statements(
    embedded: Settings, opened: list[dict[str, Any]]
) -> None:
    database = open_database(store_params(embedded))
    try:
        with database.transaction(write=False) as cursor:
            cursor.execute("SELECT count(*) FROM stored_events")
    finally:
        database.close()
    assert [kwargs["cached_statements"] for kwargs in opened] == [STATEMENT_CACHE]


@pytest.fixture
def pooled(embedded: Settings) -> Iterator[sqlite3.Connection]:
    """A connection of the ledger's pool, as the library hands it out."""
    ledger = open_ledger(embedded)
    try:
        with ledger.recorder.datastore.get_connection(commit=False) as conn:  # type: ignore[attr-defined]
            yield conn.cursor().sqlite_cursor.connection
    finally:
        ledger.close()


def test_the_embedded_store_is_in_wal_mode(pooled: sqlite3.Connection) -> None:
    assert pooled.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_are_read_as_sqlite_rows(pooled: sqlite3.Connection) -> None:
    assert isinstance(pooled.execute("SELECT 1 AS one").fetchone(), sqlite3.Row)


def test_connections_autocommit_outside_the_librarys_transactions(
    pooled: sqlite3.Connection,
) -> None:
    assert pooled.isolation_level is None
