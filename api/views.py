"""JSON representations of ledger objects (the resource shapes clients rely on)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from ledger.application.metering import Reported
from ledger.domain.authority import parse_authority_set
from ledger.domain.instants import format_instant
from ledger.domain.metering import EXECUTED
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.domain.rendering import describe_authority
from ledger.persistence.eventlog import LoggedEvent
from projections.decision_log import StoredDecision


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def proposal_view(proposal: Proposal, now: datetime) -> dict[str, Any]:
    proposed = proposal.proposed_authority
    return _drop_none(
        {
            "submission_id": proposal.id,
            "status": proposal.effective_status(now),
            "expires_at": _instant(proposal.expires_at),
            "client_id": proposal.client_id,
            "instance_id": proposal.instance_id,
            "subject": proposal.subject,
            "subject_provenance": proposal.subject_provenance,
            "intent": proposal.intent,
            "authorization_details": proposed,
            "intent_hash": proposal.intent_hash,
            "proposal_hash": proposal.proposal_hash,
            "predecessor": proposal.predecessor,
            "mission_id": proposal.mission_id,
            "reason": proposal.reason,
            "submitted_at": _instant(proposal.created_on),
            "updated_at": _instant(proposal.modified_on),
            "version": proposal.version,
            "rendered_authority": (
                None if proposed is None else describe_authority(parse_authority_set(proposed))
            ),
        }
    )


def mission_view(
    mission: Mission, now: datetime, *, usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Mission resource as of ``now`` (deadlines applied); ``usage`` when it has a meter
    (``Ledger.mission_usage``)."""
    return _drop_none(
        {
            "id": mission.id,
            "state": mission.effective_state(now),
            "version": mission.version,
            "expires_at": _instant(mission.expires_at),
            "issuer": mission.issuer,
            "subject": mission.subject,
            "subject_provenance": mission.subject_provenance,
            "subject_attested_by": mission.subject_attested_by,
            "client_id": mission.client_id,
            "instance_id": mission.instance_id,
            "approver": mission.approver,
            "intent": mission.intent,
            "authorization_details": mission.authority_set,
            "effective_authorization_details": mission.effective_authority(),
            "contained": mission.contained or None,
            "containment_version": mission.containment_version or None,
            "discharged": mission.discharged_entries() or None,
            "usage": usage,
            "authority_hash": mission.authority_hash,
            "intent_hash": mission.intent_hash,
            "proposal_hash": mission.proposal_hash,
            "submission_id": mission.submission_id,
            "approval_event_id": mission.approval_event_id,
            "policy_version": mission.policy_version,
            "approval_basis": mission.approval_basis,
            "authority_source": mission.authority_source,
            "predecessor": mission.predecessor,
            "successor": mission.successor,
            "suspend_until": _instant(mission.suspend_until),
            "on_expiry": mission.on_expiry,
            "created_at": _instant(mission.created_on),
            "updated_at": _instant(mission.modified_on),
            "rendered_authority": describe_authority(mission.entries()),
        }
    )


def usage_report_view(evaluation_id: str, mission_id: str, reported: Reported) -> dict[str, Any]:
    """The answer to ``POST /v1/usage``: the reservation's (first) outcome."""
    settlement = reported.settlement
    view: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "mission": {"id": mission_id},
        "outcome": settlement.outcome,
        "replayed": reported.replayed,
    }
    if settlement.outcome == EXECUTED:
        view["amount"] = settlement.amount
    return view


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def event_view(logged: LoggedEvent) -> dict[str, Any]:
    event = logged.event
    payload = {
        f.name: _json_value(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in _ENVELOPE
    }
    return _drop_none(
        {
            "position": logged.position,
            "version": event.originator_version,
            "type": type(event).__name__,
            "topic": logged.topic,
            "recorded_at": format_instant(event.timestamp),
            "chain_hash": None if logged.chain_hash is None else logged.chain_hash.hex(),
            "data": payload,
        }
    )


def audit_entry_view(logged: LoggedEvent) -> dict[str, Any]:
    """One line of ``GET /v1/audit/log``: where and when the event sits, who caused it, and
    its chain hash (hex), without its payload."""
    event = logged.event
    actor = getattr(event, "actor", None)
    return {
        "position": logged.position,
        "type": type(event).__qualname__,
        "topic": logged.topic,
        "originator_id": event.originator_id,
        "version": event.originator_version,
        "recorded_at": format_instant(event.timestamp),
        "actor": _json_value(actor) if actor is not None else None,
        "chain_hash": None if logged.chain_hash is None else logged.chain_hash.hex(),
    }


def decision_record_view(record: StoredDecision) -> dict[str, Any]:
    """One record of ``GET /v1/audit/decisions``: exactly the members of SPEC 7.4."""
    return {
        "evaluation_id": record.evaluation_id,
        "evaluated_at": format_instant(record.evaluated_at),
        "principal": record.principal,
        "subject": record.subject,
        "action": record.action,
        "resource": record.resource,
        "request_digest": record.request_digest,
        "mandate_id": record.mandate_id,
        "mission_id": record.mission_id,
        "mission_version": record.mission_version,
        "index_position": record.index_position,
        "decision": record.decision,
        "reason": record.reason,
        "approval_id": record.approval_id,
    }
