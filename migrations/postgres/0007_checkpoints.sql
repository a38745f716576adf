-- Signed checkpoints of the hash chain (ledger/persistence/checkpoints.py owns this table).
-- One row per checkpoint: the chain head it signs (position, chain_hash), how many events
-- the log held up to that position, when and with which key it was signed, and the compact
-- JWS (typ ledger-checkpoint+jwt) exactly as written to the witnesses. Rows are only
-- inserted. Instants are microseconds since the epoch (UTC).
CREATE TABLE ledger_checkpoints (
    position bigint PRIMARY KEY,
    chain_hash bytea NOT NULL,
    events bigint NOT NULL,
    issued_at bigint NOT NULL,
    issuer text NOT NULL,
    kid text NOT NULL,
    jws text NOT NULL
);
