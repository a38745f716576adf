"""Test data for entry discharge: an Authority Set whose entries end on completion events."""

from __future__ import annotations

from typing import Any

from ledger.domain.canonical import entry_digest
from tests.builders import ERP

INVOICES = ERP + "/invoices"
JOURNAL = ERP + "/journal"
LEDGER = ERP + "/ledger"
RECONCILED = "https://events.example.com/invoices-reconciled"
CLOSED = "https://events.example.com/period-closed"


def _entry(resource: str, action: str, event_type: str) -> dict[str, Any]:
    return {
        "type": "mission_resource_access",
        "resource": resource,
        "resource_match": "prefix",
        "actions": [action],
        "constraints": {"terminal_when": [{"event_type": event_type}]},
        "delegation": {"max_depth": 2},
    }


def discharge_authority() -> list[dict[str, Any]]:
    """Invoices end when reconciled; the journal and the ledger both end when the period
    closes (two entries naming one event type)."""
    return [
        _entry(INVOICES, "invoices.read", RECONCILED),
        _entry(JOURNAL, "journal-entries.write", CLOSED),
        _entry(LEDGER, "ledger.read", CLOSED),
    ]


def digest_of(issuer: str, index: int) -> str:
    return entry_digest(issuer, discharge_authority()[index])
