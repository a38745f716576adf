"""Apply the forward-only SQL files in ``migrations/<dialect>/``.

The files ship inside the package: ``ledger/persistence/sql`` is a link to the repository's
``migrations/`` directory (the one source), so a wheel carries them as package data and an
installed server finds them with ``importlib.resources``, wherever it is installed.

Each file runs in its own transaction and is recorded in ``schema_migrations``
with its SHA-256. On PostgreSQL a session advisory lock serialises concurrent
runners (several replicas starting at once). A recorded file whose checksum no
longer matches stops everything: released migrations are never edited.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg

from ledger.persistence.database import Dialect
from ledger.persistence.private_files import make_private_dir, make_private_file
from ledger.settings import Settings

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql\Z")
_ADVISORY_LOCK_KEY = 0x4D4C_6D69  # "MLmi"

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, "
    "applied_at text NOT NULL)"
)


class MigrationError(RuntimeError):
    """The schema cannot be brought to (or is not at) the version this code expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def migrations_dir() -> Traversable:
    """The shipped SQL files, one folder per dialect."""
    return files("ledger.persistence") / "sql"


def load_migrations(dialect: Dialect) -> list[Migration]:
    folder = migrations_dir() / dialect.value
    if not folder.is_dir():
        msg = f"no migrations at {folder}: the installation is incomplete"
        raise MigrationError(msg)
    found: list[Migration] = []
    sql_files = (entry for entry in folder.iterdir() if entry.name.endswith(".sql"))
    for path in sorted(sql_files, key=lambda entry: entry.name):
        match = _FILE.match(path.name)
        if match is None:
            msg = f"unexpected file in {folder}: {path.name}"
            raise MigrationError(msg)
        found.append(Migration(int(match[1]), path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or 0 in versions:
        # Numbers are handed out ahead to branches developed in parallel, so one may land
        # before a lower one: a gap is allowed (and the lower file applied when it lands),
        # two files with one number are not.
        msg = f"migrations in {folder} must have distinct numbers from 0001 up"
        raise MigrationError(msg)
    return found


def migrate(settings: Settings) -> list[str]:
    """Apply every pending migration; returns the names applied."""
    if settings.embedded:
        make_private_dir(settings.data_dir)
        make_private_file(settings.sqlite_path)
        return _migrate_sqlite(settings.sqlite_path)
    return _migrate_postgres(settings)


def pending(settings: Settings) -> list[str]:
    """Names of migrations not yet applied (raises on a changed checksum)."""
    dialect = Dialect.SQLITE if settings.embedded else Dialect.POSTGRES
    wanted = load_migrations(dialect)
    if settings.embedded:
        if not settings.sqlite_path.exists():
            return [m.name for m in wanted]
        with _sqlite_connection(settings.sqlite_path) as conn:
            applied = _applied_sqlite(conn)
    else:
        with psycopg.connect(**settings.postgres_params(), autocommit=True) as conn:
            applied = _applied_postgres(conn)
    return _unapplied(wanted, applied)


def _unapplied(wanted: list[Migration], applied: dict[int, str]) -> list[str]:
    for migration in wanted:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            msg = (
                f"migration {migration.name} was changed after it was applied "
                f"(checksum {recorded[:12]}… recorded, {migration.checksum[:12]}… on disk)"
            )
            raise MigrationError(msg)
    unknown = set(applied) - {m.version for m in wanted}
    if unknown:
        msg = f"the database has migrations this code does not know: {sorted(unknown)}"
        raise MigrationError(msg)
    return [m.name for m in wanted if m.version not in applied]


# ---------------------------------------------------------------------- PostgreSQL


def _applied_postgres(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, str]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(str(v)): str(c) for v, c in rows}


def _migrate_postgres(settings: Settings) -> list[str]:
    wanted = load_migrations(Dialect.POSTGRES)
    applied_now: list[str] = []
    with psycopg.connect(**settings.postgres_params(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            conn.execute(CREATE_TABLE)
            todo = set(_unapplied(wanted, _applied_postgres(conn)))
            for migration in wanted:
                if migration.name not in todo:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode("utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                        "VALUES (%s, %s, %s, now()::text)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied_now


# ---------------------------------------------------------------------- SQLite


@contextmanager
def _sqlite_connection(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def _applied_sqlite(conn: sqlite3.Connection) -> dict[int, str]:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_migrations'"
    ).fetchone()
    if row is None:
        return {}
    return {
        int(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
    }


def _statements(sql: str) -> Iterator[str]:
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        msg = f"incomplete SQL statement at the end of a migration: {buffer[:80]!r}"
        raise MigrationError(msg)


def _migrate_sqlite(path: Path) -> list[str]:
    wanted = load_migrations(Dialect.SQLITE)
    applied_now: list[str] = []
    with _sqlite_connection(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(CREATE_TABLE)
            todo = set(_unapplied(wanted, _applied_sqlite(conn)))
            for migration in wanted:
                if migration.name not in todo:
                    continue
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                    "VALUES (?, ?, ?, datetime('now'))",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration.name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied_now
