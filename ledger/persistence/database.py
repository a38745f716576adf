"""Plain SQL access beside the event store, for both backends.

Read models, idempotency records, the audit verifier and migrations share the
event store's connection pool through this thin layer. SQL is written once with
``%s`` placeholders; for SQLite they become ``?``. Rows come back as dicts.
Write transactions on SQLite start with ``BEGIN IMMEDIATE`` so that a reader
never has to upgrade to a writer half-way (which SQLite refuses under load).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from psycopg import sql
from psycopg.rows import tuple_row

from ledger.persistence.sqlite_connections import CachingSQLiteDatastore
from ledger.persistence.sqlite_rows import chunks, flat, values

if TYPE_CHECKING:
    from ledger.settings import Settings


class Dialect(StrEnum):
    POSTGRES = "postgres"
    SQLITE = "sqlite"


class Cursor(Protocol):
    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def copy_in(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert many rows: ``COPY … FROM STDIN`` on PostgreSQL, ``executemany`` on SQLite
        (``table`` and ``columns`` are the caller's constants, never request data)."""
        ...

    def fetchone(self) -> dict[str, Any] | None: ...
    def fetchall(self) -> list[dict[str, Any]]: ...
    def fetchall_tuples(self) -> list[tuple[Any, ...]]:
        """The rows as tuples in column order: for bulk reads, where building a dict per
        row costs more than the rest of the work."""
        ...

    @property
    def rowcount(self) -> int: ...


class _PostgresCursor:
    dialect = Dialect.POSTGRES

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def copy_in(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with self._cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # psycopg 3 sends the statements in pipeline mode: one round trip, not one per row.
        self._cursor.executemany(sql, [tuple(row) for row in rows])

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else dict(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._cursor.fetchall()]

    def fetchall_tuples(self) -> list[tuple[Any, ...]]:
        factory = self._cursor.row_factory
        self._cursor.row_factory = tuple_row
        try:
            return list(self._cursor.fetchall())
        finally:
            self._cursor.row_factory = factory

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class _SQLiteCursor:
    dialect = Dialect.SQLITE

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def copy_in(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # A few multi-row INSERTs, not one statement a row (``sqlite_rows``): the caller may
        # be a thread sharing the interpreter lock with the event loop (the signal log's
        # writer: one row per stream for every change).
        listed = list(rows)
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608
        for start, size in chunks(len(listed), len(columns)):
            self._cursor.execute(
                head + values(size, len(columns)), flat(listed[start : start + size])
            )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(sql.replace("%s", "?"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cursor.executemany(sql.replace("%s", "?"), [tuple(row) for row in rows])

    def fetchone(self) -> dict[str, Any] | None:
        row = self._cursor.fetchone()
        return None if row is None else _sqlite_row(row)

    def fetchall(self) -> list[dict[str, Any]]:
        return [_sqlite_row(row) for row in self._cursor.fetchall()]

    def fetchall_tuples(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


def _sqlite_row(row: Any) -> dict[str, Any]:
    out = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row is not a Mapping
    return {k: (bytes(v) if isinstance(v, memoryview) else v) for k, v in out.items()}


class Database:
    """Transactions on the event store's own connection pool."""

    def __init__(self, datastore: PostgresDatastore | SQLiteDatastore) -> None:
        self._datastore = datastore
        self.dialect = (
            Dialect.POSTGRES if isinstance(datastore, PostgresDatastore) else Dialect.SQLITE
        )

    def close(self) -> None:
        """Close the connections (only for a ``Database`` that owns its datastore:
        ``open_database``; the Ledger's own is closed with the Ledger)."""
        self._datastore.close()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Cursor]:
        """A transaction: committed on success when ``write``, rolled back otherwise."""
        if isinstance(self._datastore, PostgresDatastore):
            with self._datastore.transaction(commit=write) as curs:
                yield _PostgresCursor(curs)
            return
        with self._datastore.get_connection(commit=write) as conn:
            raw = conn.cursor().sqlite_cursor
            raw.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield _SQLiteCursor(raw)
            except BaseException:
                conn.rollback()
                raise
            if write:
                conn.commit()
            else:
                conn.rollback()

    @contextmanager
    def snapshot(self) -> Iterator[Cursor]:
        """A read-only transaction that sees one consistent state of the whole database."""
        with self.transaction(write=False) as cur:
            if self.dialect is Dialect.POSTGRES:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cur

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        with self.transaction(write=False) as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.transaction(write=False) as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction(write=True) as cur:
            cur.execute(sql, params)
            return cur.rowcount


def row_value(row: Mapping[str, Any] | None, key: str) -> Any:
    return None if row is None else row[key]


def store_params(settings: Settings) -> dict[str, Any]:
    """The store as JSON values, for a process of the service that opens it on its own
    (``open_database``; the decision log writer)."""
    common = {"lock_timeout": settings.db_lock_timeout_seconds}
    if settings.embedded:
        return {**common, "sqlite": str(settings.sqlite_path)}
    return {**common, "postgres": settings.postgres_params()}


def open_database(params: Mapping[str, Any]) -> Database:
    """A ``Database`` on one connection to the store ``store_params`` described; the caller
    closes it."""
    lock_timeout = int(params["lock_timeout"])
    if "sqlite" in params:
        return Database(
            CachingSQLiteDatastore(str(params["sqlite"]), lock_timeout=lock_timeout, pool_size=1)
        )
    postgres = params["postgres"]
    return Database(
        PostgresDatastore(
            dbname=postgres["dbname"],
            host=postgres["host"],
            port=postgres["port"],
            user=postgres["user"],
            password=postgres["password"] or "unused-with-trust-auth",
            connect_timeout=10,
            idle_in_transaction_session_timeout=30,
            pool_size=1,
            lock_timeout=lock_timeout,
        )
    )
