"""JSON representations of Execution Mandates: the issuance answer and the inspection view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.domain.instants import format_instant
from ledger.domain.mandate_claims import mandate_claims
from ledger.domain.mandates import ExecutionMandate, Validity
from ledger.domain.rendering import describe_mandate
from ledger.persistence.eventlog import LoggedEvent


def issued_view(mandate: ExecutionMandate, token: str) -> dict[str, Any]:
    """The 201 answer of issuance and delegation (and the 200 of narrowing)."""
    out: dict[str, Any] = {
        "mandate_id": mandate.id,
        "token": token,
        "token_type": "execution-mandate+jwt",
        "expires_at": format_instant(mandate.expires_at),
        "version": mandate.token_version,
        "mission_id": mandate.mission_id,
        "actor": mandate.holder,
        "authorization_details": mandate.authorization_details,
    }
    if mandate.parent_mandate_id is not None:
        out["parent_mandate_id"] = mandate.parent_mandate_id
    return out


def _chain_link(mandate: ExecutionMandate, now: datetime) -> dict[str, Any]:
    return {
        "mandate_id": mandate.id,
        "actor": mandate.holder,
        "depth": mandate.depth,
        "state": mandate.own_state(now),
    }


def mandate_view(
    mandate: ExecutionMandate,
    *,
    validity: Validity,
    ancestors: Sequence[ExecutionMandate],
    children: Sequence[str],
    history: Sequence[LoggedEvent],
    event_view: Any,
    now: datetime,
) -> dict[str, Any]:
    """Claims, state, delegation chain, history and a plain-language rendering."""
    state = validity.state if not validity.active else "active"
    return {
        "mandate_id": mandate.id,
        "state": state,
        "active": validity.active,
        "inactive_reason": validity.reason,
        "recorded_state": mandate.state,
        "version": mandate.token_version,
        "mission_id": mandate.mission_id,
        "client_id": mandate.client_id,
        "actor": mandate.holder,
        "cnf": mandate.cnf,
        "authorization_details": mandate.authorization_details,
        "issued_at": format_instant(mandate.created_on),
        "expires_at": format_instant(mandate.expires_at),
        "parent_mandate_id": mandate.parent_mandate_id,
        "depth": mandate.depth,
        "delegation_chain": [_chain_link(a, now) for a in reversed(ancestors)]
        + [_chain_link(mandate, now)],
        "children": list(children),
        "claims": mandate_claims(mandate),
        "history": [event_view(e) for e in history],
        "rendered": describe_mandate(
            mandate_id=mandate.id,
            holder=mandate.holder,
            subject=mandate.subject,
            mission_id=mandate.mission_id,
            expires_at=format_instant(mandate.expires_at),
            state=state,
            depth=mandate.depth,
            parent_mandate_id=mandate.parent_mandate_id,
            entries=mandate.entries(),
        ),
    }


def introspection_view(
    mandate: ExecutionMandate, token_version: int, now: datetime
) -> dict[str, Any]:
    """RFC 7662-style answer for an active Mandate (server-side truth, current authority)."""
    claims = mandate_claims(mandate)
    return {
        "active": True,
        "mandate_id": mandate.id,
        "jti": mandate.id,
        "iss": claims["iss"],
        "sub": claims["sub"],
        "client_id": mandate.client_id,
        "act": mandate.act,
        "cnf": mandate.cnf,
        "mission": claims["mission"],
        "authorization_details": mandate.authorization_details,
        "iat": claims["iat"],
        "exp": claims["exp"],
        "token_type": "execution-mandate+jwt",
        "mandate_version": mandate.token_version,
        "token_version": token_version,
        "checked_at": format_instant(now),
    }
