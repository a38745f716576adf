"""Evidence bundles (SPEC 7.4): a tar of the ledger's events with their chain links, the
Mandate tokens, SETs, checkpoints and decision records about them, the public keys that
signed any of it, and a signed manifest. ``bundle`` writes the format, ``verify`` checks
a bundle offline. The format is documented in ``docs/evidence.md``."""
