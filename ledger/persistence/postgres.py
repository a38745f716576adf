"""The PostgreSQL application recorder: idempotency records and the commit doorbell.

The hash chain itself is computed by the ``ledger_events_chain`` trigger that
``migrations/postgres`` installs, so a link can never be committed without its
event nor an event without its link. This subclass adds, in the library's pipelined
write transaction and after the events insert (so under the table lock): the
idempotency record and the read-version checks of aggregates a command read but did
not write; and it rings the in-process doorbell after commit.

Pipeline hygiene: nothing that can fail runs before the library's own statements,
and the statements added here are never server-side prepared. In a psycopg 3.3
pipeline, a statement queued after a failed one is skipped by the server; if psycopg
chose that moment to prepare it (it auto-prepares on the fifth execution, and the
library asks for its table-lock statement to be prepared), either the write fails
with ``PipelineAborted`` (which the library retries after 0.2 s pauses, so a
duplicate Idempotency-Key used to take 0.2-0.6 s to answer) or the connection is left
believing in a statement the server never prepared (``prepared statement "_pg3_N"
does not exist`` on its next write). Lost races are routine here, so both happened;
``tests/integration/test_postgres_pipeline.py`` reproduces each.
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

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        super()._insert_stored_events(curs, stored_events, **kwargs)
        # Under the table lock the library just took. Only unprepared statements from
        # here on (see the module docstring), on a cursor of their own: the library
        # reads the notification ids from ``curs`` once the pipeline is synced.
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        expect: dict[str, int] | None = kwargs.get("expect")
        if record is None and not expect:
            return
        with curs.connection.cursor() as extra:
            if record is not None:
                extra.execute(INSERT_SQL, record.params(), prepare=False)
            # Aggregates this command only read must still be at the versions it
            # read (see ledger_expect_version).
            for originator_id, version in (expect or {}).items():
                extra.execute(
                    "SELECT ledger_expect_version(%s::text, %s::bigint)",
                    (originator_id, version),
                    prepare=False,
                )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions: Sequence[int] | None = super().insert_events(stored_events, **kwargs)
        listeners = getattr(self, "commit_listeners", None)
        if listeners is not None and positions:
            listeners.fire(positions)
        return positions
