"""Retention: what the service keeps only for a while, pruned on the scheduler's tick.

* The per-stream SET log keeps SETs for ``set_retention_days`` (by ``created_at``, the
  instant of the change that caused them). A
  subscriber resuming from a cursor older than what is left gets ``event: resync``; push
  delivery skips SETs that left the log; a poll receiver that never acknowledged them
  does not see them again.
* Idempotency records live ``idempotency_retention_hours``: a retry with the same key
  after that is a new request.
* Decision records live ``decision_log_retention_days`` (``projections.decision_log``:
  on PostgreSQL whole daily partitions are dropped, by one replica at a time, and the
  partitions of the next days created; on SQLite the rows are deleted).

The event log itself is never pruned: it is the audit record. Every replica may prune;
the deletes are idempotent, so running them twice does no harm.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.persistence.database import Database
from projections.decision_log import DecisionLog

log = logging.getLogger("mission_ledger.retention")

#: How often the (cheap, indexed) deletes run at most.
PRUNE_EVERY_SECONDS = 60.0


def _micros(instant: datetime) -> int:
    return int(instant.timestamp() * 1_000_000)


@dataclass(frozen=True)
class Pruned:
    sets: int
    idempotency_records: int
    #: Decision records deleted (SQLite) or daily partitions dropped (PostgreSQL).
    decisions: int = 0


def prune(
    database: Database,
    now: datetime,
    *,
    set_retention: timedelta,
    idempotency_retention: timedelta,
    decision_log: DecisionLog | None = None,
    decision_retention: timedelta = timedelta(days=400),
) -> Pruned:
    """Delete SETs, idempotency records and decision records older than their retention
    periods."""
    sets = database.execute(
        "DELETE FROM set_log WHERE created_at < %s", (_micros(now - set_retention),)
    )
    records = database.execute(  # idempotency records count whole seconds
        "DELETE FROM idempotency_records WHERE created_at < %s",
        (int((now - idempotency_retention).timestamp()),),
    )
    decisions = 0 if decision_log is None else decision_log.prune(now, decision_retention)
    return Pruned(sets=max(sets, 0), idempotency_records=max(records, 0), decisions=decisions)


class Retention:
    """Prunes at most every ``every`` seconds (monotonic time) when ``tick`` is called."""

    def __init__(
        self,
        database: Database,
        *,
        set_retention: timedelta,
        idempotency_retention: timedelta,
        decision_log: DecisionLog | None = None,
        decision_retention: timedelta = timedelta(days=400),
        every: float = PRUNE_EVERY_SECONDS,
    ) -> None:
        self._database = database
        self._set_retention = set_retention
        self._idempotency_retention = idempotency_retention
        self._decision_log = decision_log
        self._decision_retention = decision_retention
        self._every = every
        self._last: float | None = None

    def tick(self, now: datetime) -> Pruned | None:
        moment = time.monotonic()
        if self._last is not None and moment - self._last < self._every:
            return None
        self._last = moment
        pruned = prune(
            self._database,
            now,
            set_retention=self._set_retention,
            idempotency_retention=self._idempotency_retention,
            decision_log=self._decision_log,
            decision_retention=self._decision_retention,
        )
        if pruned.sets or pruned.idempotency_records or pruned.decisions:
            log.info(
                "retention: pruned %d SETs, %d idempotency records and %d decision records "
                "or partitions",
                pruned.sets,
                pruned.idempotency_records,
                pruned.decisions,
            )
        return pruned
