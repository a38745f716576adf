"""Idempotency records, written in the same transaction as the events they describe.

A write carrying an ``Idempotency-Key`` passes an ``IdempotencyRecord`` to
``Application.save(..., idempotency=record)``; the recorder inserts it beside the
events, so the record exists exactly when the write committed. A concurrent
request with the same key collides on the primary key and its whole transaction
rolls back; the caller then finds the record and replays the original answer.
"""

from __future__ import annotations

from dataclasses import dataclass

INSERT_SQL = (
    "INSERT INTO idempotency_records (scope, key, request_hash, originator_id, "
    "originator_version, status_code, response, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True)
class IdempotencyRecord:
    """What the first request with a key did: enough to give every retry the same answer."""

    scope: str
    key: str
    request_hash: str
    originator_id: str
    originator_version: int
    status_code: int
    response: str | None
    created_at: int

    def params(self) -> tuple[object, ...]:
        return (
            self.scope,
            self.key,
            self.request_hash,
            self.originator_id,
            self.originator_version,
            self.status_code,
            self.response,
            self.created_at,
        )
