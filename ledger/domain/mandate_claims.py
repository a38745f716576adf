"""The claims of an Execution Mandate token (SPEC 6.8, domain.md 2.3), from its state."""

from __future__ import annotations

from typing import Any

from ledger.domain.instants import epoch_seconds
from ledger.domain.mandates import ExecutionMandate

MANDATE_TYP = "execution-mandate+jwt"


def mandate_claims(mandate: ExecutionMandate) -> dict[str, Any]:
    """Deterministic for a given Mandate version: re-signing yields the same claims."""
    delegation: dict[str, Any] = {"depth": mandate.depth}
    if mandate.parent_mandate_id is not None:
        delegation["parent_mandate_id"] = mandate.parent_mandate_id
    if mandate.parent_hash is not None:
        delegation["parent_hash"] = mandate.parent_hash
    issued = epoch_seconds(mandate.token_issued_at)
    return {
        "iss": mandate.issuer,
        "sub": str(mandate.subject.get("sub")),
        "jti": mandate.id,
        "iat": issued,
        "nbf": issued,
        "exp": epoch_seconds(mandate.expires_at),
        "client_id": mandate.client_id,
        "act": mandate.act,
        "cnf": mandate.cnf,
        "mission": {
            "id": mandate.mission_id,
            "issuer": mandate.issuer,
            "authority_hash": mandate.mission_authority_hash,
        },
        "authorization_details": mandate.authorization_details,
        "delegation": delegation,
        "purpose": mandate.purpose,
        "provenance": mandate.provenance,
        "mandate_version": mandate.token_version,
    }
