"""The AccessRequest aggregate: a requestable denial an agent (through its PEP) asked a person
to lift (AuthZEN Access Request and Approval profile, SPEC 7.1).

A task is ``pending`` until an approver approves or denies it, its requester cancels it, or
its lifetime runs out (``expired``, recorded once by the scheduler of whichever replica gets
there first). All four outcomes are terminal. An approval is scoped to exactly the denied
request (the binding hash) and permits it at most ``max_uses`` times until
``approved_until``; each permit under it is an ``ApprovalUsed`` event, so a use is spent
once across every replica (the event store's version check).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.callbacks import Callback
from ledger.domain.errors import ApprovalUnusable, InvalidTaskState, TaskExpired
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent
from ledger.domain.subjects import PrincipalIdentity, check_access_approver

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
CANCELLED = "cancelled"
EXPIRED = "expired"
STATUSES = (PENDING, APPROVED, DENIED, CANCELLED, EXPIRED)


@dataclass(frozen=True)
class DeniedRequest:
    """What was denied, as the verified binding token and the request body say."""

    subject: Mapping[str, Any]
    resource: Mapping[str, Any]
    action: Mapping[str, Any]
    #: The context members that matter for authorization, as the request carried them.
    context: Mapping[str, Any]
    reason: str
    template: str
    evaluation_id: str
    binding_hash: str
    binding_jti: str
    denial_expires_at: datetime


@dataclass(frozen=True)
class Requester:
    """Who asked, and on whose Mission."""

    actor: Actor
    identity: PrincipalIdentity
    #: The credential scope (``Principal.scope``): who may see and cancel the task.
    scope: str
    client_id: str
    mission_id: str
    mission_subject: Mapping[str, Any]
    required_acr: str | None


@dataclass(frozen=True)
class Approval:
    """An approval as granted: its id, window, uses and signed ``state``."""

    approval_id: str
    approved_until: datetime
    max_uses: int
    state: str


class AccessRequest(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "AccessRequest"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Event"

    @dataclass(frozen=True)
    class Submitted(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Submitted"
        issuer: str
        denied: dict[str, Any]
        reason: str
        template: str
        evaluation_id: str
        binding_hash: str
        binding_jti: str
        denial_expires_at: datetime
        requester: dict[str, Any]
        requester_identity: dict[str, Any]
        requester_scope: str
        client_id: str
        mission_id: str
        mission_subject: dict[str, Any]
        required_acr: str | None
        justification: str | None
        requested_until: datetime | None
        expires_at: datetime
        #: Where state changes are announced (``ledger.domain.callbacks.Callback``), if
        #: anywhere; absent from tasks submitted before callbacks were accepted.
        callback: dict[str, Any] | None = None

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.callback = None if self.callback is None else dict(self.callback)
            aggregate.issuer = self.issuer
            aggregate.denied = dict(self.denied)
            aggregate.reason = self.reason
            aggregate.template = self.template
            aggregate.evaluation_id = self.evaluation_id
            aggregate.binding_hash = self.binding_hash
            aggregate.binding_jti = self.binding_jti
            aggregate.denial_expires_at = self.denial_expires_at
            aggregate.requester = dict(self.requester)
            aggregate.requester_identity = dict(self.requester_identity)
            aggregate.requester_scope = self.requester_scope
            aggregate.client_id = self.client_id
            aggregate.mission_id = self.mission_id
            aggregate.mission_subject = dict(self.mission_subject)
            aggregate.required_acr = self.required_acr
            aggregate.justification = self.justification
            aggregate.requested_until = self.requested_until
            aggregate.expires_at = self.expires_at
            aggregate.status = PENDING
            aggregate.decided_by = None
            aggregate.decided_at = None
            aggregate.decision_reason = None
            aggregate.approval = None
            aggregate.uses = []

    @dataclass(frozen=True)
    class Approved(Event):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Approved"
        approval_id: str
        approved_until: datetime
        max_uses: int
        state: str
        reason: str | None
        approver: dict[str, Any]
        actor: dict[str, Any]

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.status = APPROVED
            aggregate.approval = {
                "approval_id": self.approval_id,
                "approved_at": self.timestamp,
                "approved_until": self.approved_until,
                "max_uses": self.max_uses,
                "state": self.state,
            }
            aggregate.decided_by = dict(self.actor)
            aggregate.decided_at = self.timestamp
            aggregate.decision_reason = self.reason

    @dataclass(frozen=True)
    class Denied(Event):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Denied"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.status = DENIED
            aggregate.decided_by = dict(self.actor)
            aggregate.decided_at = self.timestamp
            aggregate.decision_reason = self.reason

    @dataclass(frozen=True)
    class Cancelled(Event):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Cancelled"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.status = CANCELLED
            aggregate.decided_by = dict(self.actor)
            aggregate.decided_at = self.timestamp
            aggregate.decision_reason = self.reason

    @dataclass(frozen=True)
    class Expired(Event):
        TOPIC = TOPIC_PREFIX + "AccessRequest.Expired"
        deadline: datetime
        actor: dict[str, Any]

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.status = EXPIRED
            aggregate.decided_by = dict(self.actor)
            aggregate.decided_at = self.timestamp
            aggregate.decision_reason = "pending lifetime elapsed"

    @dataclass(frozen=True)
    class ApprovalUsed(Event):
        """One permit under the approval (the evaluation that made it)."""

        TOPIC = TOPIC_PREFIX + "AccessRequest.ApprovalUsed"
        approval_id: str
        evaluation_id: str
        use: int

        def apply(self, aggregate: AccessRequest) -> None:
            aggregate.uses.append(self.evaluation_id)

    if TYPE_CHECKING:  # state, assigned by the events' apply(); not dataclass fields
        issuer: str
        denied: dict[str, Any]
        reason: str
        template: str
        evaluation_id: str
        binding_hash: str
        binding_jti: str
        denial_expires_at: datetime
        requester: dict[str, Any]
        requester_identity: dict[str, Any]
        requester_scope: str
        client_id: str
        mission_id: str
        mission_subject: dict[str, Any]
        required_acr: str | None
        justification: str | None
        requested_until: datetime | None
        expires_at: datetime
        callback: dict[str, Any] | None
        status: str
        decided_by: dict[str, Any] | None
        decided_at: datetime | None
        decision_reason: str | None
        #: ``{approval_id, approved_at, approved_until, max_uses, state}`` once approved.
        approval: dict[str, Any] | None
        uses: list[str]

    # ------------------------------------------------------------------ commands

    @classmethod
    def submit(
        cls,
        *,
        task_id: str,
        issuer: str,
        denied: DeniedRequest,
        requester: Requester,
        justification: str | None,
        requested_until: datetime | None,
        expires_at: datetime,
        now: datetime,
        callback: Callback | None = None,
    ) -> AccessRequest:
        return cls._create(
            cls.Submitted,
            id=task_id,
            timestamp=now,
            issuer=issuer,
            denied={
                "subject": dict(denied.subject),
                "resource": dict(denied.resource),
                "action": dict(denied.action),
                "context": dict(denied.context),
            },
            reason=denied.reason,
            template=denied.template,
            evaluation_id=denied.evaluation_id,
            binding_hash=denied.binding_hash,
            binding_jti=denied.binding_jti,
            denial_expires_at=denied.denial_expires_at,
            requester=requester.actor.to_json(),
            requester_identity=requester.identity.to_json(),
            requester_scope=requester.scope,
            client_id=requester.client_id,
            mission_id=requester.mission_id,
            mission_subject=dict(requester.mission_subject),
            required_acr=requester.required_acr,
            justification=justification,
            requested_until=requested_until,
            expires_at=expires_at,
            callback=None if callback is None else callback.to_json(),
        )

    def effective_status(self, now: datetime) -> str:
        if self.status == PENDING and now >= self.expires_at:
            return EXPIRED
        return self.status

    def advance_clock(self, now: datetime) -> None:
        """Record the expiry of a pending task whose lifetime has elapsed."""
        if self.status == PENDING and now >= self.expires_at:
            self.trigger_event(
                self.Expired, timestamp=now, deadline=self.expires_at, actor=SCHEDULER.to_json()
            )

    def next_deadline(self) -> datetime | None:
        return self.expires_at if self.status == PENDING else None

    def approve(
        self,
        *,
        approval: Approval,
        reason: str | None,
        approver: PrincipalIdentity,
        actor: Actor,
        now: datetime,
    ) -> None:
        """Approve, unless the approver breaks a rule (403 ``approval_not_allowed``: the
        Mission's ``controls.acr``; the subject never approves write authority for itself;
        never the agent or the requester). Nothing is recorded on refusal."""
        self._require_pending(now)
        check_access_approver(
            approver,
            requesters=[self.requester_identity, {"iss": self.issuer, "sub": self.client_id}],
            subject=self.mission_subject,
            required_acr=self.required_acr,
            actions=[str(self.denied["action"].get("name"))],
        )
        self.trigger_event(
            self.Approved,
            timestamp=now,
            approval_id=approval.approval_id,
            approved_until=approval.approved_until,
            max_uses=approval.max_uses,
            state=approval.state,
            reason=reason,
            approver=approver.to_json(),
            actor=actor.to_json(),
        )

    def deny(self, *, reason: str | None, actor: Actor, now: datetime) -> None:
        self._require_pending(now)
        self.trigger_event(self.Denied, timestamp=now, reason=reason, actor=actor.to_json())

    def cancel(self, *, reason: str | None, actor: Actor, now: datetime) -> None:
        """Cancel a pending task; a terminal one (a cancelled one included) is 409."""
        status = self.effective_status(now)
        if status != PENDING:
            raise InvalidTaskState(
                f"the task is {status}; only a pending task can be cancelled",
                extensions={"status": status},
            )
        self.trigger_event(self.Cancelled, timestamp=now, reason=reason, actor=actor.to_json())

    def use_approval(self, *, approval_id: str, evaluation_id: str, now: datetime) -> None:
        """Spend one use of the approval for the permit ``evaluation_id``; refuses
        (``ApprovalUnusable``) when it is not this task's approval, past ``approved_until``,
        or out of uses."""
        approval = self.approval
        if self.status != APPROVED or approval is None or approval["approval_id"] != approval_id:
            raise ApprovalUnusable("no such approval on this task")
        if now >= approval["approved_until"]:
            raise ApprovalUnusable("the approval is past its approved_until")
        if len(self.uses) >= approval["max_uses"]:
            raise ApprovalUnusable(f"the approval's {approval['max_uses']} use(s) are spent")
        self.trigger_event(
            self.ApprovalUsed,
            timestamp=now,
            approval_id=approval_id,
            evaluation_id=evaluation_id,
            use=len(self.uses) + 1,
        )

    def _require_pending(self, now: datetime) -> None:
        status = self.effective_status(now)
        if status == EXPIRED:
            raise TaskExpired("the task's pending lifetime has elapsed")
        if status != PENDING:
            raise InvalidTaskState(
                f"the task is {status}; only a pending task can be decided",
                extensions={"status": status},
            )
