-- Read models of the governance API: the approval inbox and the mission board.
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
