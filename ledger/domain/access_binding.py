"""Requestable denials: which denials an approval may lift, and what binds a denial, an
access request and an approval to exactly one request (SPEC 7.1, standards.md 2.3, 2.6).

A denial is requestable when its reason is a key of ``REQUESTABLE`` (the value is the
agentic-mission-governance ``template``); every other denial is a dead end. Adding a
requestable reason is one line here.

The binding: ``binding_hash`` is the base64url SHA-256 of the JCS form of ``{subject,
resource, action, context}`` with ``subject.properties.act`` removed and ``context`` reduced
to the members that matter for authorization (``binding_context_members``: the credential,
the proof of possession and every constraint input present). A proof of possession is
bound by the key it proves (``{"jkt": …}``), not by the proof's bytes: a DPoP proof is
single-use, so the re-evaluation carries a new one for the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.domain.canonical import jcs, sha256_b64url

#: Denial reason -> access-request template (agentic-mission-governance profile).
REQUESTABLE: Mapping[str, str] = {
    "approval_required": "mission_gate",
    "out_of_authority": "mission_broadening",
    # Approving raises the Mission's metered bound by exactly what the denied call needs,
    # once per use (``ledger.domain.metering.Meter.BoundRaised``; decision 0019).
    "budget_exceeded": "mission_budget_increase",
}

#: Context members that matter for authorization, in this order: the credential, the
#: Mission reference (join mode), the proof of possession, and the constraint inputs that
#: may be read from ``context`` (SPEC 6.7).
AUTHORIZATION_CONTEXT_MEMBERS = ("mandate", "mission", "proof", "amount", "currency", "tenant")

# Re-evaluation outcomes (standards.md 2.6): reason -> default next_action.
APPROVAL_EXPIRED = "approval_expired"
OUT_OF_SCOPE = "out_of_scope"
APPROVAL_UNVERIFIABLE = "approval_unverifiable"
POLICY_DENIED = "policy_denied"
GRANT_PENDING = "grant_pending"
NEXT_ACTIONS: Mapping[str, str] = {
    APPROVAL_EXPIRED: "request",
    OUT_OF_SCOPE: "request",
    GRANT_PENDING: "retry",
    POLICY_DENIED: "none",
    APPROVAL_UNVERIFIABLE: "none",
}


def template_of(reason: str) -> str | None:
    """The access-request template of a denial reason, or None when it is not requestable."""
    return REQUESTABLE.get(reason)


def binding_context_members(context: Mapping[str, Any]) -> list[str]:
    """The context members present that matter for authorization."""
    return [name for name in AUTHORIZATION_CONTEXT_MEMBERS if context.get(name) is not None]


def binding_hash(
    *,
    subject: Mapping[str, Any],
    resource: Mapping[str, Any],
    action: Mapping[str, Any],
    context: Mapping[str, Any],
    members: list[str],
    proof_jkt: str | None,
) -> str:
    """The binding hash of one request (module docstring). ``proof_jkt`` is the thumbprint of
    the key the request's ``context.proof`` proves (None without a proof)."""
    bound_subject = _entity(subject, ("type", "id"))
    bound_subject["properties"].pop("act", None)
    bound_context: dict[str, Any] = {}
    for name in members:
        if name == "proof":
            bound_context[name] = {"jkt": proof_jkt}
        elif name in context:
            bound_context[name] = context[name]
    material = {
        "subject": bound_subject,
        "resource": _entity(resource, ("type", "id")),
        "action": _entity(action, ("name",)),
        "context": bound_context,
    }
    return sha256_b64url(jcs(material))


def _entity(value: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """An AuthZEN subject, resource or action as bound: its identifying members and its
    ``properties`` (absent and empty are the same); other members are ignored, as AuthZEN
    ignores them."""
    properties = value.get("properties")
    entity: dict[str, Any] = {name: value.get(name) for name in names}
    entity["properties"] = dict(properties) if isinstance(properties, Mapping) else {}
    return entity


#: JWS ``typ`` of the PDP's ``binding_token`` and of an approval's ``state``.
BINDING_TOKEN_TYP = "access-binding+jwt"  # noqa: S105 - a media type, not a secret
APPROVAL_STATE_TYP = "access-approval+jwt"

#: Where access requests are submitted, below the issuer (``access_request_endpoint``).
ACCESS_REQUEST_PATH = "/access/v1/requests"


def access_request_endpoint(issuer: str) -> str:
    """The ``aud`` of every binding token: the Access Request Service of this issuer."""
    return issuer + ACCESS_REQUEST_PATH


def task_id_for(binding_jti: str) -> str:
    """The task id of the access request made with the binding token ``binding_jti``: one
    token makes at most one task, on every replica (the event store refuses a second
    aggregate of the same id)."""
    return "tsk_" + sha256_b64url(b"access-binding:" + binding_jti.encode())[:32]
