-- Signed checkpoints of the hash chain: the same table as
-- migrations/postgres/0007_checkpoints.sql (ledger/persistence/checkpoints.py owns it).
CREATE TABLE ledger_checkpoints (
    position INTEGER PRIMARY KEY,
    chain_hash BLOB NOT NULL,
    events INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    issuer TEXT NOT NULL,
    kid TEXT NOT NULL,
    jws TEXT NOT NULL
);
