-- Metering (SPEC 7.3): the deadlines of outstanding reservations, so that the scheduler of any
-- replica finds the Meters holding a reservation to release. Rows are written in the same
-- transaction as the Meter events that make (Reserved) and end (UsageCommitted, Released) a
-- reservation (ledger/persistence/reservations.py); the reservations themselves are the events.
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE reservation_deadlines (
    evaluation_id TEXT PRIMARY KEY,
    meter_id TEXT NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX reservation_deadlines_due ON reservation_deadlines (expires_at);
