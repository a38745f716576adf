-- Signals: SSF streams and the durable per-stream SET log every delivery method reads.
-- Written by the signal_log projection (tracking in the same transaction).
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE ssf_streams (
    stream_id TEXT PRIMARY KEY,
    owner_key TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE INDEX ssf_streams_owner ON ssf_streams (owner_key, created_position);

-- One row per SET per stream; seq is gap-free per stream (the SSE id and the resume cursor).
CREATE TABLE set_log (
    stream_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    jti TEXT NOT NULL,
    event_type TEXT NOT NULL,
    cause_position INTEGER NOT NULL,
    set_jwt TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    acked_at INTEGER,
    PRIMARY KEY (stream_id, seq)
);
CREATE UNIQUE INDEX set_log_jti ON set_log (stream_id, jti);
CREATE INDEX set_log_cause ON set_log (cause_position);
CREATE INDEX set_log_created ON set_log (created_at);

-- The signal projection's own copy of the Mission and Mandate state it needs for payloads.
CREATE TABLE signal_state (
    aggregate_id TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL
);

-- Push delivery progress per stream (RFC 8935): in order, durable retry with backoff.
CREATE TABLE push_state (
    stream_id TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT
);
