-- Read model: access requests (requestable denials awaiting a person), for the approver
-- inbox, task expiry and the per-caller submission rate. Each row keeps the task's current
-- state (a snapshot folded with the domain's own events) plus the columns lists filter on.
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE access_request_board (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    mission_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    requester_scope TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    next_deadline INTEGER,
    snapshot BLOB NOT NULL
);
CREATE INDEX access_request_board_status ON access_request_board (status, created_position);
CREATE INDEX access_request_board_mission ON access_request_board (mission_id, created_position);
CREATE INDEX access_request_board_requester ON access_request_board (requester_scope, created_at);
CREATE INDEX access_request_board_deadline ON access_request_board (next_deadline);
