"""The read side: read models that follow the ledger's log. Projections never write events."""
