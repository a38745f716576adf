"""Mission Ledger: the write side (domain model and event-sourced application)."""
