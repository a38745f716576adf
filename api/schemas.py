"""Request bodies. Shapes and types are checked here (400 on any violation);
the meaning (intents, Authority Sets, instants) is checked by the domain."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ledger.domain.intent import MAX_SAFE_INTEGER

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
# No control characters: identifiers end up in indexed columns, and PostgreSQL text cannot
# even hold a NUL (one in a subject would stall the read models that index it).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NAME_PATTERN)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=PRINTABLE)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Instant = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Uri = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
Digest = Annotated[str, StringConstraints(pattern=r"^sha-256:[A-Za-z0-9_-]{43}$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SubjectIn(Body):
    iss: Uri
    sub: Short


class ProposalIn(Body):
    intent: dict[str, Any]
    authorization_details: list[Any] | None = None
    subject: SubjectIn | None = None
    subject_token: Annotated[str, Field(min_length=1, max_length=16_384)] | None = None
    client_id: Name
    instance_id: Short | None = None


class ApproveIn(Body):
    authorization_details: list[Any] | None = None
    expires_at: Instant | None = None
    approval_event_id: Short | None = None


class DecisionIn(Body):
    reason: Reason | None = None


class LifecycleIn(Body):
    operation: Literal["revoke", "suspend", "resume", "complete"]
    reason: Reason
    nonce: Short | None = None
    expected_version: Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)] | None = None
    suspend_until: Instant | None = None
    on_expiry: Literal["resume", "revoke"] | None = None


class ContainmentIn(Body):
    contained: list[Any]
    reason: Reason
    nonce: Short | None = None
    expected_version: Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)] | None = None


class ExpansionIn(Body):
    intent: dict[str, Any]
    authorization_details: list[Any] | None = None


class ActorIn(Body):
    client_id: Name
    instance_id: Name | None = None
    sub_profile: Short | None = None


class CnfIn(Body):
    jkt: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class MandateIn(Body):
    actor: ActorIn
    cnf: CnfIn
    authorization_details: list[Any] | None = None
    ttl_seconds: int | None = None


class NarrowIn(Body):
    authorization_details: list[Any]
    reason: Reason | None = None


class RevokeIn(Body):
    reason: Reason | None = None


class IntrospectIn(Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=32_768)]


class UsageIn(Body):
    """A PEP's report of what a metered permit led to (SPEC 7.3)."""

    evaluation_id: Short
    outcome: Literal["executed", "aborted"]
    amount: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class UsageReportsIn(Body):
    """Many usage reports in one request (a PEP toolkit flushing what it gathered)."""

    reports: Annotated[list[UsageIn], Field(min_length=1, max_length=1000)]


class CompletionEventIn(Body):
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=PRINTABLE)]
    event_id: Short
    occurred_at: Instant
    entry_digest: Digest | None = None


class Extensible(BaseModel):
    """A body of the AuthZEN access-request profile: its members are checked here, members
    this service does not use are ignored (the profile is extensible, as AuthZEN is)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class DenialIn(Extensible):
    expires_at: Instant
    evaluation_id: Short | None = None
    evaluated_at: Instant | None = None
    reason: Short | None = None
    template: Short | None = None
    binding_token: Annotated[str, Field(min_length=1, max_length=16_384)] | None = None


class RequestedAccessIn(Extensible):
    requested_until: Instant | None = None


class CallbackIn(Extensible):
    """Where the task's state changes are announced (standards.md 2.4)."""

    endpoint: Uri
    state: Annotated[str, StringConstraints(max_length=1024, pattern=PRINTABLE)] | None = None
    events: Annotated[list[Short], Field(max_length=6)] | None = None


class AccessRequestIn(Extensible):
    subject: dict[str, Any]
    resource: dict[str, Any]
    action: dict[str, Any]
    context: dict[str, Any] | None = None
    denial: DenialIn
    requested_access: RequestedAccessIn | None = None
    callback: CallbackIn | None = None
    #: Refused for now (bundled requests are not supported).
    items: list[Any] | None = None


class AccessApproveIn(Body):
    reason: Reason | None = None
    approved_until: Instant | None = None
    max_uses: int | None = None


class CancelIn(Extensible):
    reason: Reason | None = None
    comment: Reason | None = None
