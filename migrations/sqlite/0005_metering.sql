-- Metering (SPEC 7.3): the deadlines of outstanding reservations, so that the scheduler finds
-- the Meters with a reservation to release. Written by the reservation_deadlines projection
-- (tracking in the same transaction); the reservations themselves are Meter events.
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE reservation_deadlines (
    evaluation_id TEXT PRIMARY KEY,
    meter_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX reservation_deadlines_due ON reservation_deadlines (expires_at);
