"""The embedded (SQLite) application recorder: hash chain, idempotency records and the
deadlines of metered reservations.

SQLite has no SHA-256 in SQL, so each link is computed here, inside the same
transaction as the insert. The INSERT is the transaction's first statement, so the
database write lock is held before the previous link is read: concurrent writers
(another process on the same file) cannot fork the chain, and an exception rolls
everything back. Links live in the side table ``stored_events_chain`` because the
library's insert is positional.

Events, links and deadlines go in as multi-row statements (``sqlite_rows``), not one
statement per row as the library does: the Meter writer saves hundreds of events a group
from a thread that shares the interpreter lock with the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from ledger.persistence import sqlite_rows
from ledger.persistence.chain import GENESIS, link_hash
from ledger.persistence.idempotency import INSERT_SQL, IdempotencyRecord
from ledger.persistence.notify import CommitListeners
from ledger.persistence.reservations import ReservationDeadlines
from ledger.persistence.sqlite_rows import chunks, flat, values


class ChainedSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    """Stores events with a hash-chain link each, and optional idempotency records."""

    commit_listeners: CommitListeners

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        positions = self._insert_stored_events(c, stored_events)
        c.execute(
            "SELECT notification_id, hash FROM stored_events_chain "
            "ORDER BY notification_id DESC LIMIT 1"
        )
        row = c.fetchone()
        prev_id, prev_hash = (0, GENESIS) if row is None else (row[0], bytes(row[1]))
        links: list[tuple[int, int, bytes]] = []
        for position, event in zip(positions, stored_events, strict=True):
            if position <= prev_id:
                msg = f"ledger hash chain: position {position} is not after {prev_id}"
                raise IntegrityError(msg)
            oid = (
                str(event.originator_id)
                if isinstance(event.originator_id, UUID)
                else event.originator_id
            )
            link = link_hash(
                prev_hash, position, oid, event.originator_version, event.topic, event.state
            )
            links.append((position, prev_id, link))
            prev_id, prev_hash = position, link
        for start, size in chunks(len(links), 3):
            c.execute(
                "INSERT INTO stored_events_chain (notification_id, prev_id, hash) VALUES "  # noqa: S608 - no input
                + values(size, 3),
                flat(links[start : start + size]),
            )
        expect: dict[str, int] | None = kwargs.get("expect")
        for originator_id, version in (expect or {}).items():
            c.execute(
                "SELECT coalesce(max(originator_version), 0) FROM stored_events "
                "WHERE originator_id = ?",
                (originator_id,),
            )
            current = c.fetchone()[0]
            if current != version:
                msg = f"ledger: {originator_id} changed (version {current} is not {version})"
                raise IntegrityError(msg)
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        if record is not None:
            c.execute(INSERT_SQL.replace("%s", "?"), record.params())
        deadlines: ReservationDeadlines | None = kwargs.get("reservations")
        if deadlines:
            deadlines.write(c, placeholder="?")
        return positions

    def _insert_stored_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Insert the events; their positions (rowids), in the order given."""
        rows = [
            (
                s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                s.originator_version,
                s.topic,
                s.state,
            )
            for s in stored_events
        ]
        if not sqlite_rows.RETURNING:  # SQLite before 3.35: one statement a row
            found: list[int] = []
            for row in rows:
                c.execute(self.insert_events_statement, row)
                found.append(c.lastrowid)
            return found
        positions: dict[tuple[str, int], int] = {}
        for start, size in chunks(len(rows), 4):
            c.execute(
                f"INSERT INTO {self.events_table_name} VALUES {values(size, 4)} "  # noqa: S608 - no input
                "RETURNING rowid, originator_id, originator_version",
                flat(rows[start : start + size]),
            )
            # (RETURNING promises no order: each row is matched by its key.)
            for position, originator_id, version in c.fetchall():
                positions[(originator_id, version)] = position
        return [positions[(row[0], row[1])] for row in rows]

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super().insert_events(stored_events, **kwargs)
        listeners = getattr(self, "commit_listeners", None)
        if listeners is not None and positions:
            listeners.fire(positions, frozenset(event.topic for event in stored_events))
        return positions
