-- Outbox of access-request callbacks (projections/callbacks.py owns it): one row per task
-- that asked for a callback, written when the task is submitted and given its notification
-- (the exact body bytes) when the task reaches a terminal state. The delivery worker
-- (api/workers/callbacks.py) sends it, retrying with backoff, one replica at a time (a row
-- lock). Delivery state, not a read model: a rebuild never sends a notification again.
-- delivery: waiting (task pending), due, delivered, abandoned (gave up), not_requested
-- (the callback's events did not include this state). Instants: microseconds (UTC).

CREATE TABLE access_request_callbacks (
    task_id text PRIMARY KEY,
    endpoint text NOT NULL,
    state text,
    events text NOT NULL,
    delivery text NOT NULL,
    status text,
    body bytea,
    changed_at bigint,
    attempts integer NOT NULL,
    next_attempt_at bigint NOT NULL,
    delivered_at bigint,
    last_error text
);
CREATE INDEX access_request_callbacks_due ON access_request_callbacks (delivery, next_attempt_at);
