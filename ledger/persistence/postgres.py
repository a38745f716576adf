"""The PostgreSQL application recorder: idempotency records and the commit doorbell.

The hash chain itself is computed by the ``ledger_events_chain`` trigger that
``migrations/postgres`` installs, so a link can never be committed without its
event nor an event without its link. This subclass inserts the events itself (four arrays
in binary rather than the library's array of a composite type, dumped as text) and adds,
in the library's pipelined write transaction and after the events insert (so under the
table lock): the
idempotency record, the deadlines of metered reservations, and the read-version checks of
aggregates a command read but did not write; and it rings the in-process doorbell after
commit.

Pipeline hygiene. In a psycopg 3.3 pipeline the server skips every statement queued
after a failed one, and lost races (a stale version, a reused Idempotency-Key, a moved
read version) are routine here. Two things went wrong with that, both reproduced by
``tests/integration/test_postgres_pipeline.py``:

* the skipped statements' results were left unread, so the commit at the end of the
  transaction block raised ``PipelineAborted``; the library retries that as an
  OperationalError after 0.2 s pauses, so a lost race took 0.2-2 s and could end in a
  server error. ``_write`` (the library's ``insert_events`` with this one change) drains
  the pipeline before the block ends, so the first error is the one raised;
* psycopg auto-prepares a statement on its fifth execution; if that Parse was among the
  skipped statements, the connection believed in a prepared statement the server never
  had, and its next write failed with ``prepared statement "_pg3_N" does not exist``. The
  statements after the table lock are never prepared (``prepare=False``): this recorder
  writes the doorbell's ``NOTIFY`` and the events insert itself (``_insert_stored_events``).
  Only the library's lock statements are prepared, and they come first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from ledger.persistence.idempotency import INSERT_SQL, IdempotencyRecord
from ledger.persistence.notify import CommitListeners, doorbell_payload
from ledger.persistence.reservations import ReservationDeadlines


class LedgerPostgresApplicationRecorder(PostgresApplicationRecorder):
    commit_listeners: CommitListeners

    @cached_property
    def _notify_statement(self) -> Composed:
        return SQL("NOTIFY {0}, ").format(Identifier(self.channel_name))

    @cached_property
    def _insert_columns_statement(self) -> Composed:
        return SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    def _insert_stored_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        # The library's steps (table lock, doorbell, insert) with another insert: the
        # library passes an array of a composite type, which psycopg dumps as text, field
        # by field through regular expressions (~20 µs of CPU an event, measured: most of
        # a Meter group's saving time). Four arrays sent in binary (``%b``) cost a
        # fraction of that; the rows, their order and the RETURNING list the library reads
        # are the same.
        self._lock_table(curs)  # prepared, and first: nothing before it can fail
        # The library's doorbell, unprepared, with the write's topics as its payload (a
        # follower whose read models read none of them need not wake: ``notify``). NOTIFY
        # takes no parameters: the payload is a quoted literal.
        payload = Literal(doorbell_payload(event.topic for event in stored_events))
        curs.execute(self._notify_statement + payload, prepare=False)
        curs.execute(
            self._insert_columns_statement,
            (
                [str(event.originator_id) for event in stored_events],
                [event.originator_version for event in stored_events],
                [event.topic for event in stored_events],
                [event.state for event in stored_events],
            ),
            prepare=False,
        )
        # Under the table lock. Only unprepared statements from here on (see the module
        # docstring), on a cursor of their own: the library reads the notification ids
        # from ``curs`` once the pipeline is synced.
        record: IdempotencyRecord | None = kwargs.get("idempotency")
        expect: dict[str, int] | None = kwargs.get("expect")
        deadlines: ReservationDeadlines | None = kwargs.get("reservations")
        if record is None and not expect and not deadlines:
            return
        with curs.connection.cursor() as extra:
            if record is not None:
                extra.execute(INSERT_SQL, record.params(), prepare=False)
            if deadlines:
                deadlines.write(extra, prepare=False)
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
        positions: Sequence[int] | None = self._write(stored_events, **kwargs)
        listeners = getattr(self, "commit_listeners", None)
        if listeners is not None and positions:
            listeners.fire(positions, frozenset(event.topic for event in stored_events))
        return positions

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _write(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """The library's ``insert_events`` (its pipelined, table-locked transaction; the
        database-function variant stays off), with one change: after a failed statement
        the pipeline is drained before the transaction ends (see the module docstring)."""
        failure: Exception | None = None
        positions: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline, conn.transaction():
                with conn.cursor() as curs:
                    self._insert_events(curs, stored_events, **kwargs)
                if stored_events:
                    with conn.cursor() as curs:
                        try:
                            self._insert_stored_events(curs, stored_events, **kwargs)
                            # Sync now, so a uniqueness violation is raised here as an
                            # IntegrityError, not later from the commit.
                            pipeline.sync()
                            positions = self._fetch_ids_after_insert_events(
                                curs, stored_events, **kwargs
                            )
                        except Exception as error:  # re-raised below, once drained
                            failure = error
                            # Read the results of the statements the server skipped
                            # after the failed one: left unread, the commit at the end
                            # of this block would raise PipelineAborted instead.
                            with contextlib.suppress(psycopg.Error):
                                pipeline.sync()
            if failure is not None:
                raise failure
        return positions
