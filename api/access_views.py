"""How access requests look on the wire: the ARAP task handle (for PEPs and agents) and the
approver's view (the denied request in plain language next to the Mission's current
authority, the agent's justification marked untrusted)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ledger.domain.access_binding import ACCESS_REQUEST_PATH
from ledger.domain.access_requests import APPROVED, AccessRequest
from ledger.domain.authority import parse_authority_set
from ledger.domain.instants import format_instant
from ledger.domain.missions import Mission
from ledger.domain.rendering import describe_authority, describe_denied_request

UNTRUSTED_NOTE = (
    "Written by the agent that was denied; not verified. Judge the request by what it "
    "does, not by this text."
)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def status_endpoint(issuer: str, task_id: str) -> str:
    return f"{issuer}{ACCESS_REQUEST_PATH}/{task_id}"


def task_view(task: AccessRequest, issuer: str, now: datetime) -> dict[str, Any]:
    """``{task, result?}`` (standards.md 2.5, 2.6)."""
    endpoint = status_endpoint(issuer, task.id)
    body: dict[str, Any] = {
        "task": {
            "id": task.id,
            "status": task.effective_status(now),
            "status_endpoint": endpoint,
            "expires_at": format_instant(task.expires_at),
            "links": {"cancel": f"{endpoint}/cancel"},
        }
    }
    approval = task.approval
    if task.status == APPROVED and approval is not None:
        body["result"] = {
            "mode": "reevaluate",
            "approval": {
                "id": approval["approval_id"],
                "approved_at": format_instant(approval["approved_at"]),
                "approved_until": format_instant(approval["approved_until"]),
                "state": approval["state"],
            },
        }
    return body


def approver_view(task: AccessRequest, mission: Mission | None, now: datetime) -> dict[str, Any]:
    """What an approver decides on."""
    denied = task.denied
    approval = task.approval
    view: dict[str, Any] = {
        "id": task.id,
        "status": task.effective_status(now),
        "created_at": format_instant(task.created_on),
        "expires_at": format_instant(task.expires_at),
        "template": task.template,
        "mission_id": task.mission_id,
        "client_id": task.client_id,
        "requester": task.requester,
        "denied_request": {
            "subject": denied["subject"],
            "resource": denied["resource"],
            "action": denied["action"],
            "context_members": sorted(denied["context"]),
        },
        "evaluation": {
            "evaluation_id": task.evaluation_id,
            "reason": task.reason,
            "denial_expires_at": format_instant(task.denial_expires_at),
        },
        "rendered_request": rendered_request(task),
        "mission": None
        if mission is None
        else {
            "id": mission.id,
            "state": mission.effective_state(now),
            "version": mission.version,
            "expires_at": format_instant(mission.expires_at),
            "subject": mission.subject,
            "rendered_authority": _current_authority(mission),
            "effective_authorization_details": mission.effective_authority(),
        },
        "agent_justification": None
        if task.justification is None
        else {"text": task.justification, "trust": "untrusted", "note": UNTRUSTED_NOTE},
        "requested_until": _instant(task.requested_until),
        "decision": None
        if task.decided_by is None
        else {
            "by": task.decided_by,
            "at": _instant(task.decided_at),
            "reason": task.decision_reason,
        },
        "approval": None
        if approval is None
        else {
            "id": approval["approval_id"],
            "approved_at": format_instant(approval["approved_at"]),
            "approved_until": format_instant(approval["approved_until"]),
            "max_uses": approval["max_uses"],
            "uses": len(task.uses),
        },
    }
    return view


def rendered_request(task: AccessRequest) -> str:
    """What was denied, in one plain sentence (the approver's view and the console)."""
    return describe_denied_request(
        client_id=task.client_id,
        subject=task.mission_subject,
        action=task.denied["action"],
        resource=task.denied["resource"],
        reason=task.reason,
        mission_id=task.mission_id,
    )


def _current_authority(mission: Mission) -> list[str]:
    """The Mission's Effective Authority Set in plain language (none left: an empty list)."""
    effective = mission.effective_authority()
    return describe_authority(parse_authority_set(effective)) if effective else []
