-- Read models: the approval inbox, the mission board and the mandate register.
-- Each row keeps the aggregate's current state (a snapshot, folded by the projection
-- with the domain's own event classes) plus the columns that lists filter and sort on.
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE proposal_board (
    proposal_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject_sub TEXT,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version bigint NOT NULL,
    next_deadline bigint,
    snapshot bytea NOT NULL
);
CREATE INDEX proposal_board_status ON proposal_board (status, created_position);
CREATE INDEX proposal_board_client ON proposal_board (client_id, created_position);
CREATE INDEX proposal_board_deadline ON proposal_board (next_deadline);

CREATE TABLE mission_board (
    mission_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject_sub TEXT,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version bigint NOT NULL,
    next_deadline bigint,
    snapshot bytea NOT NULL
);
CREATE INDEX mission_board_state ON mission_board (state, created_position);
CREATE INDEX mission_board_client ON mission_board (client_id, created_position);
CREATE INDEX mission_board_subject ON mission_board (subject_sub, created_position);
CREATE INDEX mission_board_deadline ON mission_board (next_deadline);

-- The mandate register (Execution Mandates): current state of every Mandate (snapshot) plus the columns the
-- inspection, kill-switch and expiry queries filter on. Instants are microseconds (UTC).
CREATE TABLE mandate_register (
    mandate_id text PRIMARY KEY,
    mission_id text NOT NULL,
    state text NOT NULL,
    client_id text NOT NULL,
    instance_id text,
    parent_mandate_id text,
    depth integer NOT NULL,
    expires_at bigint NOT NULL,
    created_position bigint NOT NULL,
    position bigint NOT NULL,
    version bigint NOT NULL,
    next_deadline bigint,
    snapshot bytea NOT NULL
);
CREATE INDEX mandate_register_mission ON mandate_register (mission_id, created_position);
CREATE INDEX mandate_register_holder ON mandate_register (client_id, instance_id);
CREATE INDEX mandate_register_deadline ON mandate_register (next_deadline);
