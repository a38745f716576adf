-- The decision log (SPEC 7.4): one row per AuthZEN decision (single evaluation, batch item,
-- search call, re-evaluation), written in batches with COPY by the decision log writer.
-- projections/decision_log.py is the only module that reads or writes it.
--
-- Partitioned by day on evaluated_at (microseconds since the epoch, UTC). That module
-- creates the partitions (decision_log_YYYYMMDD) ahead of time and as records need them, and
-- drops those older than DECISION_LOG_RETENTION_DAYS, under an advisory lock so that one
-- replica does it at a time. principal, subject, action and resource hold JSON as text (a
-- request may carry \u0000, which jsonb refuses; cast to jsonb to query them).
-- agent is subject.id, kept apart for the agent filter.

CREATE TABLE decision_log (
    evaluated_at bigint NOT NULL,
    evaluation_id text NOT NULL,
    principal text NOT NULL,
    subject text,
    action text,
    resource text,
    agent text,
    request_digest text,
    mandate_id text,
    mission_id text,
    mission_version integer,
    index_position bigint NOT NULL,
    decision boolean NOT NULL,
    reason text,
    approval_id text,
    PRIMARY KEY (evaluated_at, evaluation_id)
) PARTITION BY RANGE (evaluated_at);

CREATE INDEX decision_log_mission ON decision_log (mission_id, evaluated_at, evaluation_id);
CREATE INDEX decision_log_mandate ON decision_log (mandate_id, evaluated_at, evaluation_id);
CREATE INDEX decision_log_agent ON decision_log (agent, evaluated_at, evaluation_id);
