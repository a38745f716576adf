"""Direct access to a store's event rows, as an attacker with database access has it: edit,
delete, swap and recompute the hash chain, with the append-only triggers switched off.

Recomputing follows ``ledger.persistence.chain``: each link hashes its predecessor's hash
with the event's position, id, version, topic and stored bytes, so whoever can write the
table can make a chain that verifies again after any edit. Only an anchor kept outside
the database (a signed checkpoint in a witness directory) can tell.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger.persistence.chain import GENESIS, link_hash
from ledger.settings import Settings


@dataclass(frozen=True)
class RawEvent:
    position: int
    originator_id: str
    version: int
    topic: str
    state: bytes


class RawStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.embedded = settings.embedded
        self.table, self.position = (
            ("stored_events", "rowid") if self.embedded else ("ledger_events", "notification_id")
        )

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection on which the append-only and chain triggers are off (PostgreSQL)."""
        if self.embedded:
            conn = sqlite3.connect(self._settings.sqlite_path, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        assert self._settings.database_url is not None
        with psycopg.connect(self._settings.database_url, autocommit=True) as pg:
            pg.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
            try:
                yield pg
            finally:
                pg.execute("ALTER TABLE ledger_events ENABLE TRIGGER USER")

    def events(self) -> list[RawEvent]:
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT {self.position}, originator_id, originator_version, topic, state "
                f"FROM {self.table} ORDER BY {self.position}"
            ).fetchall()
        return [RawEvent(int(p), str(o), int(v), str(t), bytes(s)) for p, o, v, t, s in rows]

    def execute(self, *statements: str) -> None:
        with self.connection() as conn:
            for statement in statements:
                conn.execute(statement if self.embedded else statement.encode())

    def set_state(self, position: int, state: bytes) -> None:
        with self.connection() as conn:
            mark = "?" if self.embedded else "%s"
            conn.execute(
                f"UPDATE {self.table} SET state = {mark} WHERE {self.position} = {mark}",
                (state, position),
            )

    def delete_newest(self, count: int) -> list[int]:
        """Remove the ``count`` newest events and their links; their positions."""
        doomed = [e.position for e in self.events()[-count:]]
        first = min(doomed)
        statements = [f"DELETE FROM {self.table} WHERE {self.position} >= {first}"]
        if self.embedded:
            statements.append(f"DELETE FROM stored_events_chain WHERE notification_id >= {first}")
        self.execute(*statements)
        return doomed

    def swap(self, a: int, b: int) -> None:
        """Exchange the log positions of the events at ``a`` and ``b``."""
        p = self.position
        self.execute(
            f"UPDATE {self.table} SET {p} = -1 WHERE {p} = {a}",
            f"UPDATE {self.table} SET {p} = {a} WHERE {p} = {b}",
            f"UPDATE {self.table} SET {p} = {b} WHERE {p} = -1",
        )

    def recompute_chain(self) -> None:
        """Rewrite every link from the events as they now stand."""
        links: list[tuple[int, int, bytes]] = []
        prev_position, prev_hash = 0, GENESIS
        for e in self.events():
            prev_hash = link_hash(
                prev_hash, e.position, e.originator_id, e.version, e.topic, e.state
            )
            links.append((e.position, prev_position, prev_hash))
            prev_position = e.position
        with self.connection() as conn:
            if self.embedded:
                conn.execute("BEGIN")
                conn.execute("DELETE FROM stored_events_chain")
                conn.executemany(
                    "INSERT INTO stored_events_chain (notification_id, prev_id, hash) "
                    "VALUES (?, ?, ?)",
                    links,
                )
                conn.execute("COMMIT")
                return
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE ledger_events SET chain_prev = %s, chain_hash = %s "
                    "WHERE notification_id = %s",
                    [(prev, link, position) for position, prev, link in links],
                )
