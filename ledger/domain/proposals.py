"""The Proposal aggregate: a submitted Mission Intent awaiting a decision.

A proposal is not authority. It is ``pending`` until an approver approves it
(which creates the Mission atomically), denies it, the submitting agent cancels
it, or its pending lifetime runs out. All four outcomes are terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.errors import Conflict
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent
from ledger.domain.states import ProposalStatus
from ledger.domain.subjects import ATTESTED, PrincipalIdentity, check_approver


@dataclass(frozen=True)
class Submission:
    """Validated content of a proposal, as the agent submitted it."""

    issuer: str
    client_id: str
    instance_id: str | None
    subject: Mapping[str, Any]
    intent: Mapping[str, Any]
    proposed_authority: Sequence[Mapping[str, Any]] | None
    intent_hash: str
    proposal_hash: str | None
    expires_at: datetime
    predecessor: str | None
    subject_provenance: str = ATTESTED


class Proposal(BaseAggregate[str]):
    """A Mission Intent (plus an optional authority proposal) awaiting approval."""

    TOPIC = TOPIC_PREFIX + "Proposal"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "Proposal.Event"

    @dataclass(frozen=True)
    class Submitted(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "Proposal.Submitted"
        issuer: str
        client_id: str
        instance_id: str | None
        subject: dict[str, Any]
        intent: dict[str, Any]
        proposed_authority: list[dict[str, Any]] | None
        intent_hash: str
        proposal_hash: str | None
        expires_at: datetime
        predecessor: str | None
        actor: dict[str, Any]
        #: Added in release 2; events recorded before it read as ``attested``.
        subject_provenance: str = ATTESTED

        def apply(self, aggregate: Proposal) -> None:
            aggregate.issuer = self.issuer
            aggregate.client_id = self.client_id
            aggregate.instance_id = self.instance_id
            aggregate.subject = dict(self.subject)
            aggregate.intent = dict(self.intent)
            aggregate.proposed_authority = (
                None if self.proposed_authority is None else list(self.proposed_authority)
            )
            aggregate.intent_hash = self.intent_hash
            aggregate.proposal_hash = self.proposal_hash
            aggregate.expires_at = self.expires_at
            aggregate.predecessor = self.predecessor
            aggregate.submitted_by = dict(self.actor)
            aggregate.subject_provenance = self.subject_provenance
            aggregate.status = ProposalStatus.PENDING.value
            aggregate.mission_id = None
            aggregate.approval_event_id = None
            aggregate.decided_by = None
            aggregate.reason = None

    @dataclass(frozen=True)
    class Approved(Event):
        TOPIC = TOPIC_PREFIX + "Proposal.Approved"
        mission_id: str
        approval_event_id: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: Proposal) -> None:
            aggregate.status = ProposalStatus.APPROVED.value
            aggregate.mission_id = self.mission_id
            aggregate.approval_event_id = self.approval_event_id
            aggregate.decided_by = dict(self.actor)

    @dataclass(frozen=True)
    class Denied(Event):
        TOPIC = TOPIC_PREFIX + "Proposal.Denied"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: Proposal) -> None:
            aggregate.status = ProposalStatus.DENIED.value
            aggregate.reason = self.reason
            aggregate.decided_by = dict(self.actor)

    @dataclass(frozen=True)
    class Cancelled(Event):
        TOPIC = TOPIC_PREFIX + "Proposal.Cancelled"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: Proposal) -> None:
            aggregate.status = ProposalStatus.CANCELLED.value
            aggregate.reason = self.reason
            aggregate.decided_by = dict(self.actor)

    @dataclass(frozen=True)
    class Expired(Event):
        TOPIC = TOPIC_PREFIX + "Proposal.Expired"
        deadline: datetime
        actor: dict[str, Any]

        def apply(self, aggregate: Proposal) -> None:
            aggregate.status = ProposalStatus.EXPIRED.value
            aggregate.reason = "pending lifetime elapsed"
            aggregate.decided_by = dict(self.actor)

    if TYPE_CHECKING:  # state, assigned by the events' apply(); not dataclass fields
        issuer: str
        client_id: str
        instance_id: str | None
        subject: dict[str, Any]
        intent: dict[str, Any]
        proposed_authority: list[dict[str, Any]] | None
        intent_hash: str
        proposal_hash: str | None
        expires_at: datetime
        predecessor: str | None
        submitted_by: dict[str, Any]
        subject_provenance: str
        status: str
        mission_id: str | None
        approval_event_id: str | None
        decided_by: dict[str, Any] | None
        reason: str | None

    # State added in release 2, for read-model snapshots taken before it.
    subject_provenance = ATTESTED

    @classmethod
    def submit(
        cls, *, proposal_id: str, submission: Submission, actor: Actor, now: datetime
    ) -> Proposal:
        return cls._create(
            cls.Submitted,
            id=proposal_id,
            timestamp=now,
            issuer=submission.issuer,
            client_id=submission.client_id,
            instance_id=submission.instance_id,
            subject=dict(submission.subject),
            intent=dict(submission.intent),
            proposed_authority=(
                None
                if submission.proposed_authority is None
                else [dict(e) for e in submission.proposed_authority]
            ),
            intent_hash=submission.intent_hash,
            proposal_hash=submission.proposal_hash,
            expires_at=submission.expires_at,
            predecessor=submission.predecessor,
            actor=actor.to_json(),
            subject_provenance=submission.subject_provenance,
        )

    def effective_status(self, now: datetime) -> str:
        if self.status == ProposalStatus.PENDING.value and now >= self.expires_at:
            return ProposalStatus.EXPIRED.value
        return self.status

    def advance_clock(self, now: datetime) -> None:
        """Record the expiry of a pending proposal whose lifetime has elapsed."""
        if self.status == ProposalStatus.PENDING.value and now >= self.expires_at:
            self.trigger_event(
                self.Expired, timestamp=now, deadline=self.expires_at, actor=SCHEDULER.to_json()
            )

    def next_deadline(self) -> datetime | None:
        return self.expires_at if self.status == ProposalStatus.PENDING.value else None

    def is_replayed_approval(self, approval_event_id: str | None) -> bool:
        """True when this approval (same ``approval_event_id``) was already applied."""
        return (
            self.status == ProposalStatus.APPROVED.value
            and approval_event_id is not None
            and self.approval_event_id == approval_event_id
        )

    def approve(
        self,
        *,
        mission_id: str,
        approval_event_id: str | None,
        actor: Actor,
        approver: PrincipalIdentity,
        granted_actions: Iterable[str],
        now: datetime,
    ) -> None:
        """Approve, unless the approver breaks a rule (``controls.acr``; the subject never
        approves write authority for itself): 403 ``approval_not_allowed``, nothing recorded."""
        self._require_pending("approve", now)
        controls = self.intent.get("controls") or {}
        check_approver(
            approver,
            subject=self.subject,
            required_acr=controls.get("acr"),
            actions=granted_actions,
        )
        self.trigger_event(
            self.Approved,
            timestamp=now,
            mission_id=mission_id,
            approval_event_id=approval_event_id,
            actor=actor.to_json(),
        )

    def deny(self, *, reason: str | None, actor: Actor, now: datetime) -> bool:
        """Returns False (no event) when the proposal is already denied."""
        if self.status == ProposalStatus.DENIED.value:
            return False
        self._require_pending("deny", now)
        self.trigger_event(self.Denied, timestamp=now, reason=reason, actor=actor.to_json())
        return True

    def cancel(self, *, reason: str | None, actor: Actor, now: datetime) -> bool:
        """Returns False (no event) when the proposal is already cancelled."""
        if self.status == ProposalStatus.CANCELLED.value:
            return False
        self._require_pending("cancel", now)
        self.trigger_event(self.Cancelled, timestamp=now, reason=reason, actor=actor.to_json())
        return True

    def _require_pending(self, operation: str, now: datetime) -> None:
        status = self.effective_status(now)
        if status != ProposalStatus.PENDING.value:
            raise Conflict(
                f"cannot {operation} a proposal that is {status}",
                extensions={"status": status},
            )
