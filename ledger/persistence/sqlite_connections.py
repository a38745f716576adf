"""SQLite connections that keep their prepared statements.

``eventsourcing`` 9.5.6 opens its SQLite connections with ``cached_statements=True``,
which Python's ``sqlite3`` reads as a cache of **one** statement: every statement that
is not the one run just before is parsed and planned again. A Meter writer's save runs
about a dozen different statements (begin, the events, the chain head, the links, the
reservation deadlines, commit), the log follower and the dispatchers theirs, so under load
SQLite spent much of its time preparing the same statements over and over (measured on
the Meter writer alone: ≈ 9 % of its CPU per operation, bench/README.md, 2026-12-06).

``CachingSQLiteDatastore`` is the library's datastore with connections that keep
``STATEMENT_CACHE`` statements; ``Factory`` is the library's SQLite factory using it
(``PERSISTENCE_MODULE`` in ``ledger.persistence.store``). Everything else about the
connections is the library's, copied from ``SQLiteConnectionPool._create_connection``:
URI names, any thread, autocommit (the library begins its own transactions), WAL for a
file database, rows as ``sqlite3.Row``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from eventsourcing.persistence import InterfaceError
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)

#: Prepared statements kept per connection (Python's own default is 128).
STATEMENT_CACHE = 128


class CachingSQLiteConnectionPool(SQLiteConnectionPool):
    """The library's pool, its connections keeping ``STATEMENT_CACHE`` statements."""

    def _create_connection(self) -> SQLiteConnection:
        try:
            c = sqlite3.connect(
                database=self.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,  # autocommit: the library begins its transactions
                cached_statements=STATEMENT_CACHE,
                timeout=self.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as e:
            raise InterfaceError(e) from e
        if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
            cursor = c.cursor()
            cursor.execute("PRAGMA journal_mode;")
            if cursor.fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL;")
                self.journal_mode_was_changed_to_wal = True
            self.is_journal_mode_wal = True
        c.row_factory = sqlite3.Row
        return SQLiteConnection(sqlite_conn=c, max_age=self.max_age)


class CachingSQLiteDatastore(SQLiteDatastore):
    """The library's datastore on a ``CachingSQLiteConnectionPool`` (same arguments)."""

    def __init__(
        self,
        db_name: str,
        *,
        lock_timeout: int | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 5.0,
        max_age: float | None = None,
        pre_ping: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(db_name, **kwargs)
        # (The pool the library made has opened no connection yet: pools open lazily.)
        self.pool = CachingSQLiteConnectionPool(
            db_name=db_name,
            lock_timeout=lock_timeout,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            max_age=max_age,
            pre_ping=pre_ping,
        )


class Factory(SQLiteFactory):
    """The library's SQLite factory on a ``CachingSQLiteDatastore``."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        made = self.datastore
        self.datastore = CachingSQLiteDatastore(
            made.pool.db_name,
            lock_timeout=made.pool.lock_timeout,
            single_row_tracking=made.single_row_tracking,
            originator_id_type=made.originator_id_type,
        )
