-- Outbox of access-request callbacks (projections/callbacks.py owns it): one row per task
-- that asked for a callback, written when the task is submitted and given its notification
-- (the exact body bytes) when the task reaches a terminal state. The delivery worker
-- (api/workers/callbacks.py) sends it, retrying with backoff, one replica at a time (a row
-- lock). Delivery state, not a read model: a rebuild never sends a notification again.
-- delivery: waiting (task pending), due, delivered, abandoned (gave up), not_requested
-- (the callback's events did not include this state). Instants: microseconds (UTC).

CREATE TABLE access_request_callbacks (
    task_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    state TEXT,
    events TEXT NOT NULL,
    delivery TEXT NOT NULL,
    status TEXT,
    body BLOB,
    changed_at INTEGER,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX access_request_callbacks_due ON access_request_callbacks (delivery, next_attempt_at);
