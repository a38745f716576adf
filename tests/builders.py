"""Test data: intents, Authority Sets and Missions driven into any state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.instants import format_instant
from ledger.domain.missions import Mission
from ledger.domain.states import Operation

AGENT = Actor(type="api_key", name="agent-1", role="agent")
APPROVER = Actor(type="api_key", name="approver-1", role="approver")
OPERATOR = Actor(type="api_key", name="operator-1", role="operator")
ADMIN = Actor(type="api_key", name="admin-1", role="admin")

ERP = "https://erp.example.com"
SUBJECT = {"iss": "https://idp.example.com", "sub": "alice"}


def intent(now: datetime, *, days: int = 30, resources: list[str] | None = None) -> dict[str, Any]:
    return {
        "goal": "Reconcile Q3 invoices",
        "resources": resources or [ERP],
        "expires_at": format_instant(now + timedelta(days=days)),
    }


def authority(**constraints: Any) -> list[dict[str, Any]]:
    entry: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": ERP,
        "actions": ["invoices.read", "journal-entries.write"],
    }
    if constraints:
        entry["constraints"] = constraints
    return [entry]


def proposal_body(now: datetime, *, client_id: str = "agent-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "intent": intent(now),
        "authorization_details": authority(),
        "subject": SUBJECT,
        "client_id": client_id,
    }
    body.update(extra)
    return body


def active_mission(ledger: Ledger, *, days: int = 30, client_id: str = "agent-1") -> Mission:
    now = ledger.clock.now()
    proposal = ledger.submit_proposal(
        actor=AGENT,
        client_id=client_id,
        instance_id="inst-1",
        subject=SUBJECT,
        intent=intent(now, days=days),
        authorization_details=authority(),
    ).value
    return ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id).value


def mission_in_state(ledger: Ledger, state: str) -> Mission:
    """An approved Mission driven into ``state`` through the public use cases."""
    mission = active_mission(ledger, days=1 if state == "expired" else 30)
    if state == "active":
        return mission
    if state in {"suspended", "revoked", "completed"}:
        operation = {
            "suspended": Operation.SUSPEND,
            "revoked": Operation.REVOKE,
            "completed": Operation.COMPLETE,
        }[state]
        return ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=operation, reason="test"
        ).value
    if state == "expired":
        ledger.clock.advance(days=2)  # type: ignore[attr-defined]
        ledger.record_due_transitions(mission.id)
        return ledger.get_mission(mission.id)
    if state == "superseded":
        now = ledger.clock.now()
        successor = ledger.propose_expansion(
            actor=AGENT,
            mission_id=mission.id,
            intent=intent(now),
            authorization_details=authority(),
        ).value
        ledger.approve_proposal(actor=APPROVER, proposal_id=successor.id)
        return ledger.get_mission(mission.id)
    msg = f"no recipe for state {state!r}"
    raise ValueError(msg)
