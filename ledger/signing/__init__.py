"""Signing keys: generation, sealing at rest, persistence and rotation.

``algorithms`` makes and describes keys (ES256, EdDSA, RS256; never ``none`` or
HMAC), ``sealing`` encrypts private keys under the key-encryption key, ``store``
persists them (a JSON file in the embedded data directory, the ``signing_keys``
table on PostgreSQL) and ``keyring`` signs, verifies, rotates and publishes the
JWKS.
"""
