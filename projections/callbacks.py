"""The outbox of access-request callbacks: ``access_request_callbacks`` (migration 0011).

This module owns the table. As a durable projection it is fed each access-request event
exactly once across replicas (the follower's tracking lock): a submission with a callback
inserts its row (``waiting``), and the task's one terminal change (approved, denied,
cancelled, expired) gives the row its notification body and makes it ``due`` (or
``not_requested`` when the callback's ``events`` leave that state out). The delivery worker
(``api.workers.callbacks``) reads and updates the rows through the functions below.

The rows are delivery state, not a read model: ``reset`` keeps them, and every write here is
guarded (``ON CONFLICT DO NOTHING``, ``WHERE delivery = 'waiting'``), so replaying the log
never makes a notification due twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.access_binding import ACCESS_REQUEST_PATH
from ledger.domain.access_requests import AccessRequest
from ledger.domain.callbacks import Callback, notification
from ledger.persistence.database import Cursor, Database, Dialect
from projections.aggregate_tables import event_topics, micros
from projections.follower import DurableProjection, Item

WAITING = "waiting"
DUE = "due"
DELIVERED = "delivered"
ABANDONED = "abandoned"
NOT_REQUESTED = "not_requested"

_TERMINAL: dict[type[Any], str] = {
    AccessRequest.Approved: "approved",
    AccessRequest.Denied: "denied",
    AccessRequest.Cancelled: "cancelled",
    AccessRequest.Expired: "expired",
}
LAST_ERROR_LIMIT = 500


class CallbackOutbox(DurableProjection):
    name = "access_request_callbacks"
    topics = event_topics(AccessRequest)

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def apply(self, cur: Cursor, item: Item) -> None:
        event = item.event
        if isinstance(event, AccessRequest.Submitted):
            if event.callback is None:
                return
            callback = Callback.from_json(event.callback)
            cur.execute(
                "INSERT INTO access_request_callbacks (task_id, endpoint, state, events, "
                "delivery, attempts, next_attempt_at) VALUES (%s, %s, %s, %s, %s, 0, 0) "
                "ON CONFLICT (task_id) DO NOTHING",
                (
                    event.originator_id,
                    callback.endpoint,
                    callback.state,
                    json.dumps(list(callback.events)),
                    WAITING,
                ),
            )
            return
        status = _TERMINAL.get(type(event))
        if status is None:
            return
        cur.execute(
            "SELECT state, events FROM access_request_callbacks "
            "WHERE task_id = %s AND delivery = %s",
            (event.originator_id, WAITING),
        )
        row = cur.fetchone()
        if row is None:
            return
        task_id = event.originator_id
        if status not in json.loads(row["events"]):
            cur.execute(
                "UPDATE access_request_callbacks SET delivery = %s, status = %s "
                "WHERE task_id = %s AND delivery = %s",
                (NOT_REQUESTED, status, task_id, WAITING),
            )
            return
        body = notification(
            task_id=task_id,
            status=status,
            status_endpoint=f"{self._issuer}{ACCESS_REQUEST_PATH}/{task_id}",
            approval_id=getattr(event, "approval_id", None),
            state=row["state"],
            occurred_at=event.timestamp,
        )
        cur.execute(
            "UPDATE access_request_callbacks SET delivery = %s, status = %s, body = %s, "
            "changed_at = %s, next_attempt_at = 0 WHERE task_id = %s AND delivery = %s",
            (DUE, status, body, micros(event.timestamp), task_id, WAITING),
        )

    def reset(self, cur: Cursor) -> None:
        """Delivery state survives a rebuild (module docstring)."""


# ---------------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class Notification:
    """A due notification, as read (under its row lock on PostgreSQL)."""

    task_id: str
    endpoint: str
    body: bytes
    attempts: int
    changed_at: int


def due(db: Database, now: datetime, limit: int = 1000) -> list[str]:
    """Task ids whose notification is due now, the longest waiting first."""
    rows = db.fetchall(
        "SELECT task_id FROM access_request_callbacks WHERE delivery = %s "
        "AND next_attempt_at <= %s ORDER BY next_attempt_at, changed_at LIMIT %s",
        (DUE, micros(now), limit),
    )
    return [str(r["task_id"]) for r in rows]


_CLAIM = (
    "SELECT endpoint, body, attempts, changed_at FROM access_request_callbacks "
    "WHERE task_id = %s AND delivery = %s AND next_attempt_at <= %s"
)


def claim(cur: Cursor, task_id: str, now: datetime) -> Notification | None:
    """The task's notification if it is still due now; on PostgreSQL its row stays locked
    until the transaction ends, and a row another replica holds reads as None."""
    cur.execute(
        _CLAIM + " FOR UPDATE SKIP LOCKED" if cur.dialect is Dialect.POSTGRES else _CLAIM,
        (task_id, DUE, micros(now)),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return Notification(
        task_id=task_id,
        endpoint=str(row["endpoint"]),
        body=bytes(row["body"]),
        attempts=int(row["attempts"]),
        changed_at=int(row["changed_at"]),
    )


def record_delivered(cur: Cursor, sent: Notification, now: datetime) -> None:
    cur.execute(
        "UPDATE access_request_callbacks SET delivery = %s, delivered_at = %s, "
        "attempts = %s, last_error = NULL WHERE task_id = %s AND delivery = %s "
        "AND attempts = %s",
        (DELIVERED, micros(now), sent.attempts + 1, sent.task_id, DUE, sent.attempts),
    )


def record_failure(
    cur: Cursor, sent: Notification, error: str, *, retry_at: datetime | None
) -> None:
    """A failed attempt: retried at ``retry_at``, or abandoned (None)."""
    cur.execute(
        "UPDATE access_request_callbacks SET delivery = %s, attempts = %s, "
        "next_attempt_at = %s, last_error = %s WHERE task_id = %s AND delivery = %s "
        "AND attempts = %s",
        (
            DUE if retry_at is not None else ABANDONED,
            sent.attempts + 1,
            micros(retry_at) if retry_at is not None else 0,
            error[:LAST_ERROR_LIMIT],
            sent.task_id,
            DUE,
            sent.attempts,
        ),
    )


def delivery_of(db: Database, task_id: str) -> dict[str, Any] | None:
    """The row of one task (operators, tests)."""
    return db.fetchone("SELECT * FROM access_request_callbacks WHERE task_id = %s", (task_id,))


def backlog(db: Database) -> int:
    """Notifications due and not yet delivered (a gauge)."""
    row = db.fetchone(
        "SELECT COUNT(*) AS n FROM access_request_callbacks WHERE delivery = %s", (DUE,)
    )
    return 0 if row is None else int(row["n"])
