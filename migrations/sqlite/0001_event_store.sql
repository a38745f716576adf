-- The event store of the `eventsourcing` library (SQLite layout; the position is rowid),
-- plus hash-chain links in a side table (the library's insert is positional).

CREATE TABLE stored_events (
    originator_id TEXT,
    originator_version INTEGER,
    topic TEXT,
    state BLOB,
    PRIMARY KEY (originator_id, originator_version)
);

CREATE TABLE stored_events_chain (
    notification_id INTEGER PRIMARY KEY,
    prev_id INTEGER NOT NULL UNIQUE,
    hash BLOB NOT NULL
);

CREATE TABLE idempotency_records (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    originator_id TEXT NOT NULL,
    originator_version INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    response TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);

CREATE TABLE projection_tracking (
    projection TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
