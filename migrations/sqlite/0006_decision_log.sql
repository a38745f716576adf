-- The decision log (SPEC 7.4): one row per AuthZEN decision (single evaluation, batch item,
-- search call, re-evaluation), written in batches by the decision log writer.
-- projections/decision_log.py is the only module that reads or writes it. The same table as
-- on PostgreSQL without partitions: retention deletes rows older than
-- DECISION_LOG_RETENTION_DAYS. evaluated_at is microseconds since the epoch (UTC);
-- principal, subject, action and resource hold JSON; agent is subject.id.

CREATE TABLE decision_log (
    evaluated_at INTEGER NOT NULL,
    evaluation_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    subject TEXT,
    action TEXT,
    resource TEXT,
    agent TEXT,
    request_digest TEXT,
    mandate_id TEXT,
    mission_id TEXT,
    mission_version INTEGER,
    index_position INTEGER NOT NULL,
    decision INTEGER NOT NULL,
    reason TEXT,
    approval_id TEXT,
    PRIMARY KEY (evaluated_at, evaluation_id)
);

CREATE INDEX decision_log_mission ON decision_log (mission_id, evaluated_at, evaluation_id);
CREATE INDEX decision_log_mandate ON decision_log (mandate_id, evaluated_at, evaluation_id);
CREATE INDEX decision_log_agent ON decision_log (agent, evaluated_at, evaluation_id);
