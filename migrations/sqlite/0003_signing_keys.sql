-- Signing keys: the same table as migrations/postgres/0003_signing_keys.sql, so
-- both dialects keep identical migration numbers. The embedded store keeps its
-- keys in <data_dir>/signing-keys.json (ledger/signing/store.py), outside the
-- event store file, so this table stays empty there.
-- Instants are microseconds since the epoch (UTC).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    activates_at INTEGER NOT NULL,
    sealed_private_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    UNIQUE (alg, generation)
);
