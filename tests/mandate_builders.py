"""Test data for Execution Mandates."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from typing import Any

from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.delegation import ActorRef
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from tests.builders import AGENT, APPROVER, ERP, SUBJECT, intent

_counter = itertools.count()


def jkt() -> str:
    """A fresh, well-formed JWK thumbprint (each call a different key)."""
    digest = hashlib.sha256(f"key-{next(_counter)}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def proof_of(token: str) -> dict[str, str]:
    """``context.proof`` of a PEP that verified the caller holds the key ``token`` is bound
    to (its ``cnf.jkt``, read from the payload without checking the signature)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {"jkt": str(claims["cnf"]["jkt"])}


def delegable_authority(max_depth: int = 2, **delegation: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "mission_resource_access",
            "resource": ERP,
            "resource_match": "prefix",
            "actions": ["invoices.read", "invoices.write"],
            "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}},
            "delegation": {"max_depth": max_depth, **delegation},
        },
        {
            "type": "mission_resource_access",
            "resource": "https://crm.example.com",
            "actions": ["accounts.read"],
        },
    ]


def mission_with(
    ledger: Ledger, authority: list[dict[str, Any]], *, days: int = 30, **intent_extra: Any
) -> Mission:
    now = ledger.clock.now()
    body = intent(now, days=days, resources=[ERP, "https://crm.example.com"])
    body.update(intent_extra)
    proposal = ledger.submit_proposal(
        actor=AGENT,
        client_id="agent-1",
        instance_id="inst-1",
        subject=SUBJECT,
        intent=body,
        authorization_details=authority,
    ).value
    return ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id).value


HOLDER = ActorRef(client_id="agent-1", instance_id="inst-1", sub_profile="ai_agent")


def issue(
    ledger: Ledger,
    mission: Mission,
    *,
    holder: ActorRef = HOLDER,
    details: list[dict[str, Any]] | None = None,
    ttl: int | None = None,
) -> ExecutionMandate:
    return ledger.issue_mandate(
        actor=AGENT,
        mission_id=mission.id,
        holder=holder,
        jkt=jkt(),
        authorization_details=details,
        ttl_seconds=ttl,
    ).value


def delegate(
    ledger: Ledger,
    parent: ExecutionMandate,
    *,
    client_id: str = "sub-agent",
    instance_id: str | None = "sub-1",
    sub_profile: str | None = "ai_agent",
    details: list[dict[str, Any]] | None = None,
    ttl: int | None = None,
    key: str | None = None,
) -> ExecutionMandate:
    return ledger.delegate_mandate(
        actor=Actor(type="api_key", name=str(parent.holder["client_id"]), role="agent"),
        parent_mandate_id=parent.id,
        holder=ActorRef(client_id=client_id, instance_id=instance_id, sub_profile=sub_profile),
        jkt=key or jkt(),
        authorization_details=details,
        ttl_seconds=ttl,
    ).value
