"""Mission Ledger: the write side (domain model and event-sourced application)."""

__version__ = "0.1.0"
