-- Read models: the approval inbox, the mission board and the mandate register.
-- Each row keeps the aggregate's current state (a snapshot, folded by the projection
-- with the domain's own event classes) plus the columns that lists filter and sort on.
-- Instants are microseconds since the epoch (UTC).

CREATE TABLE proposal_board (
    proposal_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject_sub TEXT,
    created_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    next_deadline INTEGER,
    snapshot BLOB NOT NULL
);
CREATE INDEX proposal_board_status ON proposal_board (status, created_position);
CREATE INDEX proposal_board_client ON proposal_board (client_id, created_position);
CREATE INDEX proposal_board_deadline ON proposal_board (next_deadline);

CREATE TABLE mission_board (
    mission_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject_sub TEXT,
    created_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    next_deadline INTEGER,
    snapshot BLOB NOT NULL
);
CREATE INDEX mission_board_state ON mission_board (state, created_position);
CREATE INDEX mission_board_client ON mission_board (client_id, created_position);
CREATE INDEX mission_board_subject ON mission_board (subject_sub, created_position);
CREATE INDEX mission_board_deadline ON mission_board (next_deadline);

-- The mandate register (Execution Mandates).
CREATE TABLE mandate_register (
    mandate_id TEXT PRIMARY KEY,
    mission_id TEXT NOT NULL,
    state TEXT NOT NULL,
    client_id TEXT NOT NULL,
    instance_id TEXT,
    parent_mandate_id TEXT,
    depth INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_position INTEGER NOT NULL,
    position INTEGER NOT NULL,
    version INTEGER NOT NULL,
    next_deadline INTEGER,
    snapshot BLOB NOT NULL
);
CREATE INDEX mandate_register_mission ON mandate_register (mission_id, created_position);
CREATE INDEX mandate_register_holder ON mandate_register (client_id, instance_id);
CREATE INDEX mandate_register_deadline ON mandate_register (next_deadline);
