-- Signing keys (ledger/signing): one row per key, never updated or deleted.
-- kid is the RFC 7638 thumbprint of public_jwk; the private key is sealed with
-- AES-256-GCM under the key-encryption key (MISSION_LEDGER_KEY_ENCRYPTION_KEY),
-- never stored in clear. generation numbers the keys of one alg in insertion
-- order: the active key is the highest generation whose activates_at has passed;
-- a retired key stays in the JWKS for the retention period.
-- Instants are microseconds since the epoch (UTC).
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    alg text NOT NULL,
    generation integer NOT NULL,
    created_at bigint NOT NULL,
    activates_at bigint NOT NULL,
    sealed_private_key text NOT NULL,
    public_jwk text NOT NULL,
    UNIQUE (alg, generation)
);
