"""Storage: the event store on PostgreSQL or SQLite, the hash chain, migrations."""
