"""Which ledger events become Security Event Tokens, and what they say (SPEC 6.9).

* Every Mission event that changes its state or effective authority becomes a
  ``lifecycle-change`` (activation, suspend, resume, revoke, complete, expire,
  supersede, containment, discharge).
* A Mandate revoked, expired or cascaded becomes CAEP ``session-revoked``; narrowed,
  ``token-claims-change`` carrying the new claims.
* Stream events become SSF ``verification`` and ``stream-updated`` SETs for that stream.
* An access request's task changing status (submitted, approved, denied, cancelled,
  expired) becomes the product's ``access-request-change`` ``{task_id, status,
  approval_id?}``, for streams that request that event type.

Claims follow RFC 8417 as profiled by SSF: ``iss``, ``iat``, ``jti``, ``aud``, ``txn``,
``sub_id``, exactly one event; never ``sub`` or ``exp``. ``jti`` is derived from the
stream and the log position, ``txn`` from the ledger write that caused the SET: the
write's first event, which every event of that write names (``caused_by``, see
``ledger.domain.events.name_the_write``). Every SET of one write — a Mission revoked and
each Mandate its cascade ended, a discharge and every Mandate it narrowed — therefore
carries the same ``txn`` on every stream, and a rebuilt SET log repeats the same ids.
Events recorded before they named their write keep the ``txn`` they can derive: a
discharge's from its completion event, any other from the event itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.domain.access_requests import AccessRequest
from ledger.domain.events import LedgerEvent, written_by
from ledger.domain.instants import epoch_seconds, format_instant
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission, discharge_cause
from ledger.domain.resources import EXACT
from ledger.domain.streams import (
    ACCESS_REQUEST_CHANGE,
    LIFECYCLE_CHANGE,
    SESSION_REVOKED,
    STREAM_UPDATED,
    TOKEN_CLAIMS_CHANGE,
    VERIFICATION,
    Stream,
)

SET_TYP = "secevent+jwt"


@dataclass(frozen=True)
class Signal:
    """One SET's content before it is addressed to a stream and signed."""

    event_type: str
    payload: dict[str, Any]
    sub_id: dict[str, Any]
    occurred_at: datetime
    #: Names the write that caused it (``txn_key``); None: the log position does.
    cause: str | None = None
    #: The ``(resource, resource_match)`` sets of the authority it concerns (what a
    #: stream scoped to ``resources`` is matched against).
    touched: tuple[tuple[str, str], ...] = ()


def txn_of(issuer: str, position: int, cause: str | None = None) -> str:
    """The transaction id shared by every SET one ledger change causes: from the change's
    cause when it names one (``txn_key``), else (a stream's own SETs) its log position."""
    key = str(position) if cause is None else f"cause|{cause}"
    return hashlib.sha256(f"{issuer}|txn|{key}".encode()).hexdigest()[:32]


def write_txn(issuer: str, originator_id: str, version: int) -> str:
    """The ``txn`` of every SET caused by the write whose first event is
    (``originator_id``, ``version``): e.g. a Mission's version after a revocation."""
    return txn_of(issuer, 0, _write_key(originator_id, version))


def _write_key(originator_id: object, version: object) -> str:
    return f"write|{originator_id}|{version}"


def _discharge_key(cause: Mapping[str, Any] | None) -> str | None:
    """How a discharge recorded before events named their write names its cause."""
    if cause is None or cause.get("kind") != "discharge":
        return None
    return f"discharge|{cause.get('id')}|{cause.get('event_id')}"


def txn_key(event: LedgerEvent) -> str:
    """What the SETs of one write share: the write the event names; for a discharge
    recorded before events named it, the completion event; else the event itself."""
    write = written_by(event)
    if write is not None:
        return _write_key(write.get("id"), write.get("version"))
    legacy: str | None = None
    if isinstance(event, Mission.EntryDischarged):
        legacy = _discharge_key(discharge_cause(event))
    elif isinstance(event, ExecutionMandate.Narrowed):
        legacy = _discharge_key(event.caused_by)
    elif isinstance(event, ExecutionMandate.Cascaded):
        legacy = _discharge_key(event.cause)
    return legacy or _write_key(event.originator_id, event.originator_version)


def jti_of(stream_id: str, position: int, event_type: str) -> str:
    return hashlib.sha256(f"{stream_id}|{position}|{event_type}".encode()).hexdigest()[:32]


def set_claims(
    signal: Signal, *, issuer: str, aud: str, stream_id: str, position: int
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "iat": epoch_seconds(signal.occurred_at),
        "jti": jti_of(stream_id, position, signal.event_type),
        "aud": aud,
        "txn": txn_of(issuer, position, signal.cause),
        "sub_id": signal.sub_id,
        "events": {signal.event_type: signal.payload},
    }


def touched_by(*authorities: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, str], ...]:
    """The distinct ``(resource, resource_match)`` of Authority Set entries."""
    pairs = (
        (str(entry.get("resource")), str(entry.get("resource_match", EXACT)))
        for entries in authorities
        for entry in entries
    )
    return tuple(dict.fromkeys(pairs))


def _initiating_entity(actor: Mapping[str, Any] | None, *, cascaded: bool = False) -> str:
    if cascaded:
        return "policy"
    if actor is not None and actor.get("type") == "system":
        return "system"
    return "admin"


def mission_signal(event: LedgerEvent, mission: Mission) -> Signal | None:
    """``lifecycle-change`` for a Mission event (``mission`` is the state after it)."""
    authority_changed = isinstance(event, Mission.CapabilityContained | Mission.EntryDischarged)
    if isinstance(event, Mission.Approved):
        prior: str | None = None
    elif isinstance(event, Mission.Transitioned):
        prior = event.prior_state
    elif authority_changed:
        prior = mission.state
    else:
        return None
    payload: dict[str, Any] = {
        "mission": {"id": mission.id, "issuer": mission.issuer},
        "state": mission.state,
        "version": mission.version,
        "committed_at": format_instant(event.timestamp),
        "expires_at": format_instant(mission.expires_at),
        "authority_hash": mission.authority_hash,
        "authority_changed": authority_changed,
    }
    if prior is not None:
        payload["prior_state"] = prior
    reason = getattr(event, "reason", None)
    if reason:
        payload["reason"] = reason
    if mission.state == "suspended" and mission.suspend_until is not None:
        payload["suspend_until"] = format_instant(mission.suspend_until)
        payload["on_expiry"] = mission.on_expiry
    if mission.successor is not None:
        payload["successor"] = mission.successor
    if mission.containment_version:
        payload["containment_version"] = mission.containment_version
    if isinstance(event, Mission.EntryDischarged):
        payload["discharged_entry"] = event.entry_digest
    return Signal(
        event_type=LIFECYCLE_CHANGE,
        payload=payload,
        sub_id={"format": "opaque", "id": mission.id},
        occurred_at=event.timestamp,
        cause=txn_key(event),
        # The Authority Set as approved (discharge and containment only take from it).
        touched=touched_by(mission.authority_set),
    )


def mandate_subject(mandate: ExecutionMandate) -> dict[str, Any]:
    return {
        "format": "complex",
        "session": {"format": "opaque", "id": mandate.id},
        "user": {
            "format": "iss_sub",
            "iss": str(mandate.subject.get("iss")),
            "sub": str(mandate.subject.get("sub")),
        },
    }


def mandate_signal(
    event: LedgerEvent,
    mandate: ExecutionMandate,
    prior: Sequence[Mapping[str, Any]] = (),
) -> Signal | None:
    """CAEP ``session-revoked`` / ``token-claims-change`` (``mandate`` is the state after,
    ``prior`` its ``authorization_details`` before: a narrowing concerns what it took away
    as much as what it left)."""
    common: dict[str, Any] = {"event_timestamp": epoch_seconds(event.timestamp)}
    touched = touched_by(prior, mandate.authorization_details)
    if isinstance(event, ExecutionMandate.Narrowed):
        return Signal(
            event_type=TOKEN_CLAIMS_CHANGE,
            payload={
                **common,
                "initiating_entity": _initiating_entity(
                    event.actor, cascaded=event.cause != "request"
                ),
                "reason_admin": {
                    "en": event.reason or f"Mandate {mandate.id} narrowed ({event.cause})"
                },
                "claims": {
                    "authorization_details": mandate.authorization_details,
                    "mandate_version": mandate.token_version,
                },
            },
            sub_id=mandate_subject(mandate),
            occurred_at=event.timestamp,
            cause=txn_key(event),
            touched=touched,
        )
    if isinstance(
        event, ExecutionMandate.Revoked | ExecutionMandate.Expired | ExecutionMandate.Cascaded
    ):
        kind = type(event).__name__.lower()
        reason = getattr(event, "reason", None) or f"Mandate {mandate.id} {kind}"
        return Signal(
            event_type=SESSION_REVOKED,
            payload={
                **common,
                "initiating_entity": _initiating_entity(
                    event.actor, cascaded=isinstance(event, ExecutionMandate.Cascaded)
                ),
                "reason_admin": {"en": f"{reason} (Mission {mandate.mission_id})"},
            },
            sub_id=mandate_subject(mandate),
            occurred_at=event.timestamp,
            cause=txn_key(event),
            touched=touched,
        )
    return None


def stream_signal(event: LedgerEvent, stream: Stream) -> Signal | None:
    """SSF stream events addressed to the stream itself."""
    subject = {"format": "opaque", "id": stream.stream_id}
    if isinstance(event, Stream.VerificationRequested):
        payload = {} if event.state is None else {"state": event.state}
        return Signal(VERIFICATION, payload, subject, event.timestamp)
    if isinstance(event, Stream.StatusChanged) and not event.by_owner:
        payload = {"status": event.status}
        if event.reason:
            payload["reason"] = event.reason
        return Signal(STREAM_UPDATED, payload, subject, event.timestamp)
    return None


def access_request_signal(event: LedgerEvent, task: AccessRequest) -> Signal | None:
    """``access-request-change`` for a task event that changes its status (``task`` is the
    state after it); a use of its approval changes no status and says nothing."""
    if isinstance(event, AccessRequest.ApprovalUsed):
        return None
    payload: dict[str, Any] = {"task_id": task.id, "status": task.status}
    if task.approval is not None:
        payload["approval_id"] = task.approval["approval_id"]
    return Signal(
        event_type=ACCESS_REQUEST_CHANGE,
        payload=payload,
        sub_id={"format": "opaque", "id": task.id},
        occurred_at=event.timestamp,
    )
