-- Console sessions and sign-in attempts (api/console/sessions.py owns both tables), kept in
-- the database so that a session survives a restart and works on every replica. Rows are
-- keyed by the SHA-256 (hex) of the browser's random token: the table holds no usable
-- cookie. A session row holds the signed-in person (principal JSON), its CSRF token, how it
-- signed in (and the API key id to re-check), when it was opened, last used and when it ends
-- at the latest; expired rows are deleted on sign-in and when found. A sign-in attempt holds
-- what the OpenID redirect needs (state, nonce, PKCE verifier, where to return) for ten
-- minutes and is used once. Instants are microseconds since the epoch (UTC).
CREATE TABLE console_sessions (
    session_hash text PRIMARY KEY,
    principal text NOT NULL,
    csrf text NOT NULL,
    method text NOT NULL,
    key_id text,
    display_name text NOT NULL,
    created_at bigint NOT NULL,
    last_seen bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

CREATE TABLE console_signin_attempts (
    attempt_hash text PRIMARY KEY,
    attempt text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX console_signin_attempts_created_at ON console_signin_attempts (created_at);

-- The Missions an approver approved (SPEC 7.5), listed for them in the console: the mission
-- board gains the approver's identity (Actor.key: type, issuer, name), set from each row's
-- snapshot by MissionBoard.fill_approver_keys when the service starts (an approver never
-- changes, so it races with nothing) and by the projection for every new row.
ALTER TABLE mission_board ADD COLUMN approver_key text;
CREATE INDEX mission_board_approver ON mission_board (approver_key, created_position);
