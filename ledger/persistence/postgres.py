"""The PostgreSQL application recorder: idempotency records and the commit doorbell.

The hash chain itself is computed by the ``ledger_events_chain`` trigger that
``migrations/postgres`` installs, so a link can never be committed without its
event nor an event without its link. This subclass adds, in the same transaction:
the idempotency record (via the library's ``_insert_events`` hook, which runs in
the same pipeline before the table lock) and the read-version checks of
aggregates a command read but did not write (after the insert, under the table
lock); and it rings the in-process doorbell after commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow

from ledger.persistence.idempotency import INSERT_SQL, IdempotencyRecord
from ledger.persistence.notify import CommitListeners


class LedgerPostgresApplicationRecorder(PostgresApplicationRecorder):
    commit_listeners: CommitListeners

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],  # noqa: ARG002 - the library's hook signature
        **kwargs: Any,
    ) -> None:
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        if record is not None:
            curs.execute(INSERT_SQL, record.params())

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        super()._insert_stored_events(curs, stored_events, **kwargs)
        # Under the table lock the library just took: aggregates this command only read
        # must still be at the versions it read (see ledger_expect_version).
        expect: dict[str, int] | None = kwargs.get("expect")
        if expect:
            with curs.connection.cursor() as check:
                for originator_id, version in expect.items():
                    check.execute(
                        "SELECT ledger_expect_version(%s::text, %s::bigint)",
                        (originator_id, version),
                    )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        listeners = getattr(self, "commit_listeners", None)
        if listeners is not None and positions:
            listeners.fire(positions)
        return positions
