"""The Mission aggregate: an approved task, its Authority Set and its lifecycle.

A Mission is created ``active`` by an approval and is immutable afterwards except
for its governance state: lifecycle transitions (suspend, resume, revoke,
complete, expire, supersede), the removal-only containment overlay, and entry
discharge (an entry's ``terminal_when`` condition fired: the entry leaves the
Effective Authority Set). Every change is one past-tense event and bumps
``version`` by one.

Commands check first, then record exactly one fact. Nothing here reads the
clock: every command takes ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.actions import action_within
from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.authority import (
    AuthorityEntry,
    ContainedCapability,
    contained_covers,
    entry_covers,
    parse_authority_set,
    parse_containment,
)
from ledger.domain.canonical import entry_digest, raw_digest
from ledger.domain.constraints import TERMINAL_WHEN
from ledger.domain.errors import Conflict, InvalidRequest, NoMatchingCondition, StaleVersion
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent
from ledger.domain.instants import format_instant
from ledger.domain.resources import resource_covers
from ledger.domain.states import (
    LEGAL_OPERATIONS,
    MissionState,
    OnExpiry,
    Operation,
    is_active,
)
from ledger.domain.subjects import ATTESTED


@dataclass(frozen=True)
class MissionRecord:
    """Everything fixed at approval: the immutable part of a Mission."""

    issuer: str
    submission_id: str
    client_id: str
    instance_id: str | None
    subject: Mapping[str, Any]
    approver: Mapping[str, Any]
    intent: Mapping[str, Any]
    proposed_authority: Sequence[Mapping[str, Any]] | None
    authority_set: Sequence[Mapping[str, Any]]
    intent_hash: str
    proposal_hash: str | None
    authority_hash: str
    approval_event_id: str | None
    policy_version: str
    approval_basis: Mapping[str, Any]
    authority_source: Mapping[str, Any]
    expires_at: datetime
    predecessor: str | None
    subject_provenance: str = ATTESTED
    subject_attested_by: Mapping[str, Any] | None = None


class Mission(BaseAggregate[str]):
    """An approved task and its governance state."""

    TOPIC = TOPIC_PREFIX + "Mission"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "Mission.Event"
        #: The write that recorded it (``ledger.domain.events.name_the_write``); absent
        #: from events recorded before release 2.
        caused_by: dict[str, Any] | None = field(default=None, kw_only=True)

    @dataclass(frozen=True)
    class Approved(Event, LedgerCreated):
        """T1: a proposal was approved and the Mission became active."""

        TOPIC = TOPIC_PREFIX + "Mission.Approved"
        issuer: str
        submission_id: str
        client_id: str
        instance_id: str | None
        subject: dict[str, Any]
        approver: dict[str, Any]
        intent: dict[str, Any]
        proposed_authority: list[dict[str, Any]] | None
        authority_set: list[dict[str, Any]]
        intent_hash: str
        proposal_hash: str | None
        authority_hash: str
        approval_event_id: str | None
        policy_version: str
        approval_basis: dict[str, Any]
        authority_source: dict[str, Any]
        expires_at: datetime
        predecessor: str | None
        actor: dict[str, Any]
        #: Added in release 2 (events recorded before it read as ``attested`` by nobody named):
        #: ``asserted`` (a verified subject_token) or ``attested`` by ``subject_attested_by``,
        #: the approving principal's ``{iss, sub}``.
        subject_provenance: str = ATTESTED
        subject_attested_by: dict[str, Any] | None = None

        def apply(self, aggregate: Mission) -> None:
            aggregate.issuer = self.issuer
            aggregate.submission_id = self.submission_id
            aggregate.client_id = self.client_id
            aggregate.instance_id = self.instance_id
            aggregate.subject = dict(self.subject)
            aggregate.approver = dict(self.approver)
            aggregate.intent = dict(self.intent)
            aggregate.proposed_authority = (
                None if self.proposed_authority is None else list(self.proposed_authority)
            )
            aggregate.authority_set = list(self.authority_set)
            aggregate.intent_hash = self.intent_hash
            aggregate.proposal_hash = self.proposal_hash
            aggregate.authority_hash = self.authority_hash
            aggregate.approval_event_id = self.approval_event_id
            aggregate.policy_version = self.policy_version
            aggregate.approval_basis = dict(self.approval_basis)
            aggregate.authority_source = dict(self.authority_source)
            aggregate.expires_at = self.expires_at
            aggregate.predecessor = self.predecessor
            aggregate.subject_provenance = self.subject_provenance
            aggregate.subject_attested_by = (
                None if self.subject_attested_by is None else dict(self.subject_attested_by)
            )
            aggregate.state = MissionState.ACTIVE.value
            aggregate.suspend_until = None
            aggregate.on_expiry = None
            aggregate.successor = None
            aggregate.contained = []
            aggregate.containment_version = 0
            aggregate.nonces = {}
            aggregate.last_reason = None
            aggregate.discharged = []
            aggregate.completion_events = {}

    @dataclass(frozen=True)
    class Transitioned(Event):
        """Common shape of lifecycle events (never stored itself)."""

        TOPIC = TOPIC_PREFIX + "Mission.Transitioned"
        prior_state: str
        state: str
        reason: str | None
        actor: dict[str, Any]
        nonce: str | None
        nonce_fingerprint: str | None

        def apply(self, aggregate: Mission) -> None:
            aggregate.state = self.state
            aggregate.last_reason = self.reason
            if self.nonce is not None and self.nonce_fingerprint is not None:
                aggregate.nonces[_nonce_key(self.actor, self.nonce)] = self.nonce_fingerprint
            if self.state != MissionState.SUSPENDED.value:
                aggregate.suspend_until = None
                aggregate.on_expiry = None

    @dataclass(frozen=True)
    class Suspended(Transitioned):
        """T3: paused; reversible by ``resume`` or by its deadline."""

        TOPIC = TOPIC_PREFIX + "Mission.Suspended"
        suspend_until: datetime | None
        on_expiry: str | None

        def apply(self, aggregate: Mission) -> None:
            super().apply(aggregate)
            aggregate.suspend_until = self.suspend_until
            aggregate.on_expiry = self.on_expiry

    @dataclass(frozen=True)
    class Resumed(Transitioned):
        """T4/T5: active again, by an elevated operator or by the suspension deadline."""

        TOPIC = TOPIC_PREFIX + "Mission.Resumed"

    @dataclass(frozen=True)
    class Revoked(Transitioned):
        """T2/T5: ended by an operator or by the suspension deadline."""

        TOPIC = TOPIC_PREFIX + "Mission.Revoked"

    @dataclass(frozen=True)
    class Completed(Transitioned):
        """T6: the task is done."""

        TOPIC = TOPIC_PREFIX + "Mission.Completed"

    @dataclass(frozen=True)
    class Expired(Transitioned):
        """T7: ``expires_at`` passed; recorded by the clock."""

        TOPIC = TOPIC_PREFIX + "Mission.Expired"
        deadline: datetime

    @dataclass(frozen=True)
    class Superseded(Transitioned):
        """T8: a successor Mission (an approved expansion) took over."""

        TOPIC = TOPIC_PREFIX + "Mission.Superseded"
        successor: str

        def apply(self, aggregate: Mission) -> None:
            super().apply(aggregate)
            aggregate.successor = self.successor

    @dataclass(frozen=True)
    class CapabilityContained(Event):
        """M2: capability removed by the containment overlay; state unchanged."""

        TOPIC = TOPIC_PREFIX + "Mission.CapabilityContained"
        contained: list[dict[str, Any]]
        containment_version: int
        reason: str | None
        actor: dict[str, Any]
        nonce: str | None
        nonce_fingerprint: str | None

        def apply(self, aggregate: Mission) -> None:
            aggregate.contained = [*aggregate.contained, *self.contained]
            aggregate.containment_version = self.containment_version
            aggregate.last_reason = self.reason
            if self.nonce is not None and self.nonce_fingerprint is not None:
                aggregate.nonces[_nonce_key(self.actor, self.nonce)] = self.nonce_fingerprint

    @dataclass(frozen=True)
    class EntryDischarged(Event):
        """M1: an entry's ``terminal_when`` condition fired; the entry leaves the Effective
        Authority Set. State unchanged. One per entry a completion event discharges."""

        TOPIC = TOPIC_PREFIX + "Mission.EntryDischarged"
        entry_digest: str
        condition_digest: str
        event_type: str
        event_id: str
        event_fingerprint: str
        occurred_at: datetime
        actor: dict[str, Any]

        def apply(self, aggregate: Mission) -> None:
            aggregate.discharged = [
                *aggregate.discharged_entries(),
                {
                    "entry_digest": self.entry_digest,
                    "condition_digest": self.condition_digest,
                    "event_type": self.event_type,
                    "event_id": self.event_id,
                    "occurred_at": format_instant(self.occurred_at),
                    "discharged_at": format_instant(self.timestamp),
                },
            ]
            aggregate.completion_events = {
                **aggregate.completion_event_ids(),
                self.event_id: self.event_fingerprint,
            }
            aggregate.last_reason = f"completion event {self.event_type!r} ({self.event_id})"

    if TYPE_CHECKING:  # state, assigned by the events' apply(); not dataclass fields
        issuer: str
        submission_id: str
        client_id: str
        instance_id: str | None
        subject: dict[str, Any]
        approver: dict[str, Any]
        intent: dict[str, Any]
        proposed_authority: list[dict[str, Any]] | None
        authority_set: list[dict[str, Any]]
        intent_hash: str
        proposal_hash: str | None
        authority_hash: str
        approval_event_id: str | None
        policy_version: str
        approval_basis: dict[str, Any]
        authority_source: dict[str, Any]
        expires_at: datetime
        predecessor: str | None
        subject_provenance: str
        subject_attested_by: dict[str, Any] | None
        state: str
        suspend_until: datetime | None
        on_expiry: str | None
        successor: str | None
        contained: list[dict[str, Any]]
        containment_version: int
        nonces: dict[str, str]
        last_reason: str | None
        discharged: list[dict[str, Any]]
        completion_events: dict[str, str]

    # State added in release 2, for read-model snapshots taken before it.
    subject_provenance = ATTESTED
    subject_attested_by = None

    # ----------------------------------------------------------------- creation

    @classmethod
    def approve(
        cls, *, mission_id: str, record: MissionRecord, actor: Actor, now: datetime
    ) -> Mission:
        """T1: create the Mission, ``active``, at version 1."""
        if record.expires_at <= now:
            raise Conflict("the Mission's expiry has already passed")
        return cls._create(
            cls.Approved,
            id=mission_id,
            timestamp=now,
            issuer=record.issuer,
            submission_id=record.submission_id,
            client_id=record.client_id,
            instance_id=record.instance_id,
            subject=dict(record.subject),
            approver=dict(record.approver),
            intent=dict(record.intent),
            proposed_authority=(
                None
                if record.proposed_authority is None
                else [dict(e) for e in record.proposed_authority]
            ),
            authority_set=[dict(e) for e in record.authority_set],
            intent_hash=record.intent_hash,
            proposal_hash=record.proposal_hash,
            authority_hash=record.authority_hash,
            approval_event_id=record.approval_event_id,
            policy_version=record.policy_version,
            approval_basis=dict(record.approval_basis),
            authority_source=dict(record.authority_source),
            expires_at=record.expires_at,
            predecessor=record.predecessor,
            subject_provenance=record.subject_provenance,
            subject_attested_by=(
                None if record.subject_attested_by is None else dict(record.subject_attested_by)
            ),
            actor=actor.to_json(),
        )

    # ----------------------------------------------------------------- queries

    def effective_state(self, now: datetime) -> str:
        """The state the clock has produced by ``now``: expiry and suspension deadlines
        are applied before the stored state is trusted (recording them may lag)."""
        return self._clock_outcome(now)

    def is_effectively_active(self, now: datetime) -> bool:
        return is_active(self.effective_state(now))

    def entries(self) -> tuple[AuthorityEntry, ...]:
        return parse_authority_set(self.authority_set)

    def contained_capabilities(self) -> tuple[ContainedCapability, ...]:
        if not self.contained:
            return ()
        return parse_containment(self.contained)

    def discharged_entries(self) -> list[dict[str, Any]]:
        """The discharge records, oldest first (a Mission recorded before discharge
        existed has none)."""
        return list(self.__dict__.get("discharged", ()))

    def completion_event_ids(self) -> dict[str, str]:
        """Completion events already applied: ``event_id`` -> fingerprint of the report."""
        return dict(self.__dict__.get("completion_events", {}))

    def entry_digest_of(self, entry: AuthorityEntry) -> str:
        """The integrity anchor naming one entry (``mission-authority-entry``)."""
        return entry_digest(self.issuer, dict(entry.raw))

    def undischarged_entries(self) -> tuple[AuthorityEntry, ...]:
        """The Authority Set minus discharged entries (containment not applied)."""
        gone = {d["entry_digest"] for d in self.discharged_entries()}
        entries = self.entries()
        if not gone:
            return entries
        return tuple(e for e in entries if self.entry_digest_of(e) not in gone)

    def permits_capability(self, resource_uri: str, action: str) -> bool:
        """Whether (resource, action) lies inside the Effective Authority Set."""
        if not any(entry_covers(e, resource_uri, action) for e in self.undischarged_entries()):
            return False
        return not any(
            contained_covers(c, resource_uri, action) for c in self.contained_capabilities()
        )

    def effective_authority(self) -> list[dict[str, Any]]:
        """Authority Set minus discharged entries minus contained capability, as
        ``authorization_details`` entries.

        An entry loses the actions a containment item removes from its whole resource;
        an entry left with no action disappears. Containment of a narrower resource
        than an entry's cannot be written as an entry: it stays listed in ``contained``
        and is enforced at evaluation time (``permits_capability``).
        """
        contained = self.contained_capabilities()
        out: list[dict[str, Any]] = []
        for entry in self.undischarged_entries():
            actions = list(entry.actions)
            for item in contained:
                if not _contains_whole_resource(item, entry):
                    continue
                if item.actions is None:
                    actions = []
                else:
                    actions = [
                        a
                        for a in actions
                        if not any(action_within(a, removed) for removed in item.actions)
                    ]
            if actions:
                raw = dict(entry.raw)
                raw["actions"] = actions
                out.append(raw)
        return out

    # ----------------------------------------------------------------- commands

    def check_nonce(self, actor: Actor, nonce: str | None, fingerprint: str | None) -> bool:
        """True when this exact request was already applied under this nonce (replay).

        The same nonce with a different request is a conflict.
        """
        if nonce is None:
            return False
        seen = self.nonces.get(_nonce_key(actor.to_json(), nonce))
        if seen is None:
            return False
        if seen != fingerprint:
            raise Conflict(f"nonce {nonce!r} was already used for a different request")
        return True

    def check_expected_version(self, expected_version: int | None) -> None:
        if expected_version is not None and expected_version != self.version:
            raise StaleVersion(
                f"expected version {expected_version}, but the Mission is at version "
                f"{self.version}",
                extensions={"current_version": self.version},
            )

    def advance_clock(self, now: datetime) -> None:
        """Record every clock-driven transition due by ``now`` (T5, T7), in time order."""
        while True:
            due = self._next_due(now)
            if due is None:
                return
            deadline, kind = due
            prior = self.state
            if kind == "expire":
                self.trigger_event(
                    self.Expired,
                    timestamp=now,
                    prior_state=prior,
                    state=MissionState.EXPIRED.value,
                    reason="expires_at reached",
                    actor=SCHEDULER.to_json(),
                    nonce=None,
                    nonce_fingerprint=None,
                    deadline=deadline,
                )
            elif kind == OnExpiry.REVOKE.value:
                self.trigger_event(
                    self.Revoked,
                    timestamp=now,
                    prior_state=prior,
                    state=MissionState.REVOKED.value,
                    reason="suspension deadline reached (on_expiry: revoke)",
                    actor=SCHEDULER.to_json(),
                    nonce=None,
                    nonce_fingerprint=None,
                )
            else:
                self.trigger_event(
                    self.Resumed,
                    timestamp=now,
                    prior_state=prior,
                    state=MissionState.ACTIVE.value,
                    reason="suspension deadline reached (on_expiry: resume)",
                    actor=SCHEDULER.to_json(),
                    nonce=None,
                    nonce_fingerprint=None,
                )

    def next_deadline(self) -> datetime | None:
        """The next instant at which the clock changes this Mission, if any."""
        if self.state == MissionState.ACTIVE.value:
            return self.expires_at
        if self.state == MissionState.SUSPENDED.value:
            if self.suspend_until is not None and self.suspend_until < self.expires_at:
                return self.suspend_until
            return self.expires_at
        return None

    def apply_operation(
        self,
        operation: Operation,
        *,
        actor: Actor,
        now: datetime,
        reason: str | None,
        nonce: str | None = None,
        nonce_fingerprint: str | None = None,
        suspend_until: datetime | None = None,
        on_expiry: OnExpiry | None = None,
    ) -> bool:
        """Apply one lifecycle operation. Returns False for an idempotent same-state request.

        Raises ``Conflict`` for an operation the legal-operation table forbids.
        Clock-driven transitions must have been advanced first (``advance_clock``).
        """
        if operation is not Operation.SUSPEND and (suspend_until or on_expiry):
            raise InvalidRequest.at(
                "/suspend_until" if suspend_until else "/on_expiry",
                "only valid with operation 'suspend'",
            )
        if on_expiry is not None and suspend_until is None:
            raise InvalidRequest.at("/on_expiry", "requires suspend_until")
        if suspend_until is not None and suspend_until <= now:
            raise InvalidRequest.at("/suspend_until", "must be in the future")
        allowed_from, target = LEGAL_OPERATIONS[operation]
        if self.state == target.value and operation is not Operation.RESUME:
            return False
        if self.state not in allowed_from:
            raise Conflict(
                f"operation {operation.value!r} is not allowed on a Mission in state "
                f"{self.state!r}",
                extensions={"state": self.state},
            )
        common: dict[str, Any] = {
            "timestamp": now,
            "prior_state": self.state,
            "state": target.value,
            "reason": reason,
            "actor": actor.to_json(),
            "nonce": nonce,
            "nonce_fingerprint": nonce_fingerprint,
        }
        if operation is Operation.SUSPEND:
            self.trigger_event(
                self.Suspended,
                suspend_until=suspend_until,
                on_expiry=(None if suspend_until is None else (on_expiry or OnExpiry.RESUME).value),
                **common,
            )
        elif operation is Operation.RESUME:
            self.trigger_event(self.Resumed, **common)
        elif operation is Operation.REVOKE:
            self.trigger_event(self.Revoked, **common)
        else:
            self.trigger_event(self.Completed, **common)
        return True

    def supersede(self, *, successor: str, actor: Actor, now: datetime) -> None:
        """T8: the successor Mission activated; only an ``active`` Mission can be superseded."""
        if self.state != MissionState.ACTIVE.value:
            raise Conflict(
                f"the predecessor Mission is {self.state!r}; only an active Mission can be "
                "superseded by an expansion",
                extensions={"state": self.state},
            )
        self.trigger_event(
            self.Superseded,
            timestamp=now,
            prior_state=self.state,
            state=MissionState.SUPERSEDED.value,
            reason=f"superseded by {successor}",
            actor=actor.to_json(),
            nonce=None,
            nonce_fingerprint=None,
            successor=successor,
        )

    def contain(
        self,
        items: Sequence[ContainedCapability],
        *,
        actor: Actor,
        now: datetime,
        reason: str | None,
        nonce: str | None = None,
        nonce_fingerprint: str | None = None,
    ) -> bool:
        """M2: add a removal-only overlay. Returns False when everything is already contained."""
        if self.state not in {MissionState.ACTIVE.value, MissionState.SUSPENDED.value}:
            raise Conflict(
                f"containment is not allowed on a Mission in state {self.state!r}",
                extensions={"state": self.state},
            )
        entries = self.entries()
        for index, item in enumerate(items):
            if not any(_overlaps(item, entry) for entry in entries):
                raise InvalidRequest.at(
                    f"/contained/{index}",
                    "names no capability of this Mission's Authority Set",
                )
        already = {_canonical_item(c) for c in self.contained_capabilities()}
        new = [dict(item.raw) for item in items if _canonical_item(item) not in already]
        if not new:
            return False
        self.trigger_event(
            self.CapabilityContained,
            timestamp=now,
            contained=new,
            containment_version=self.containment_version + 1,
            reason=reason,
            actor=actor.to_json(),
            nonce=nonce,
            nonce_fingerprint=nonce_fingerprint,
        )
        return True

    def already_reported(self, event_id: str, *, event_type: str, entry_digest: str | None) -> bool:
        """True when this completion event was already applied (a duplicate: no effect).
        The same ``event_id`` reporting another event type or entry is a ``Conflict``."""
        seen = self.completion_event_ids().get(event_id)
        if seen is None:
            return False
        if seen != _report_fingerprint(event_type, entry_digest):
            raise Conflict(
                f"completion event {event_id!r} was already reported with a different "
                "event_type or entry_digest"
            )
        return True

    def discharge(
        self,
        *,
        event_type: str,
        entry_digest: str | None,
        event_id: str,
        occurred_at: datetime,
        actor: Actor,
        now: datetime,
    ) -> bool:
        """M1: a completion event discharges every undischarged entry whose ``terminal_when``
        names ``event_type`` (only the entry ``entry_digest`` names, when given).

        Returns False (no event) when ``event_id`` was already applied with the same
        report; the same ``event_id`` reporting something else is a ``Conflict``. A
        terminal Mission accepts nothing (``Conflict``); an event that discharges no entry
        is ``NoMatchingCondition``. Discharging the last entry leaves the Mission in its
        state (M1 changes authority, not state) with an empty Effective Authority Set.
        """
        if self.already_reported(event_id, event_type=event_type, entry_digest=entry_digest):
            return False
        report = _report_fingerprint(event_type, entry_digest)
        if self.state not in {MissionState.ACTIVE.value, MissionState.SUSPENDED.value}:
            raise Conflict(
                f"a completion event cannot discharge authority of a Mission in state "
                f"{self.state!r}",
                extensions={"state": self.state},
            )
        matches = self._conditions_for(event_type, entry_digest)
        for digest, condition in matches:
            self.trigger_event(
                self.EntryDischarged,
                timestamp=now,
                entry_digest=digest,
                condition_digest=raw_digest(condition),
                event_type=event_type,
                event_id=event_id,
                event_fingerprint=report,
                occurred_at=occurred_at,
                actor=actor.to_json(),
            )
        return True

    # ----------------------------------------------------------------- internals

    def _conditions_for(
        self, event_type: str, wanted: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(entry digest, matching condition) of each undischarged entry the event fires."""
        named = False
        out: list[tuple[str, dict[str, Any]]] = []
        for entry in self.undischarged_entries():
            digest = self.entry_digest_of(entry)
            if wanted is not None and digest != wanted:
                continue
            named = True
            conditions = entry.constraints.get(TERMINAL_WHEN)
            for condition in conditions if isinstance(conditions, list) else ():
                if isinstance(condition, dict) and condition.get("event_type") == event_type:
                    out.append((digest, condition))
                    break
        if out:
            return out
        if wanted is not None and not named:
            raise NoMatchingCondition(
                f"entry_digest {wanted!r} names no undischarged entry of this Mission",
                extensions={"entry_digest": wanted, "event_type": event_type},
            )
        raise NoMatchingCondition(
            f"no undischarged entry of this Mission has a terminal_when condition with "
            f"event_type {event_type!r}",
            extensions={"event_type": event_type},
        )

    def _next_due(self, now: datetime) -> tuple[datetime, str] | None:
        if self.state not in {MissionState.ACTIVE.value, MissionState.SUSPENDED.value}:
            return None
        candidates: list[tuple[datetime, str]] = [(self.expires_at, "expire")]
        if self.state == MissionState.SUSPENDED.value and self.suspend_until is not None:
            candidates.append((self.suspend_until, self.on_expiry or OnExpiry.RESUME.value))
        deadline, kind = min(candidates, key=lambda c: (c[0], c[1] != "expire"))
        if deadline > now:
            return None
        return deadline, kind

    def _clock_outcome(self, now: datetime) -> str:
        state = self.state
        suspend_until = self.suspend_until
        while state in {MissionState.ACTIVE.value, MissionState.SUSPENDED.value}:
            if (
                state == MissionState.SUSPENDED.value
                and suspend_until is not None
                and suspend_until < self.expires_at
                and suspend_until <= now
            ):
                state = (
                    MissionState.REVOKED.value
                    if self.on_expiry == OnExpiry.REVOKE.value
                    else MissionState.ACTIVE.value
                )
                suspend_until = None
                continue
            if self.expires_at <= now:
                return MissionState.EXPIRED.value
            break
        return state


def _report_fingerprint(event_type: str, entry_digest: str | None) -> str:
    return raw_digest({"event_type": event_type, "entry_digest": entry_digest})


def discharge_cause(event: Mission.EntryDischarged) -> dict[str, str]:
    """How a Mandate change caused by a discharge names its cause (one per completion
    event: every change that event causes shares it)."""
    return {"kind": "discharge", "id": event.originator_id, "event_id": event.event_id}


def _nonce_key(actor: Mapping[str, Any], nonce: str) -> str:
    return f"{Actor.from_json(actor).key}\x1f{nonce}"


def _contains_whole_resource(item: ContainedCapability, entry: AuthorityEntry) -> bool:
    """The containment item removes the entry's whole resource (prefix semantics)."""
    return resource_covers(item.resource, "prefix", entry.resource)


def _overlaps(item: ContainedCapability, entry: AuthorityEntry) -> bool:
    resources_meet = resource_covers(item.resource, "prefix", entry.resource) or (
        resource_covers(entry.resource, entry.resource_match, item.resource)
    )
    if not resources_meet:
        return False
    if item.actions is None:
        return True
    return any(
        action_within(removed, granted) or action_within(granted, removed)
        for removed in item.actions
        for granted in entry.actions
    )


def _canonical_item(item: ContainedCapability) -> tuple[str, tuple[str, ...] | None]:
    return item.resource, None if item.actions is None else tuple(sorted(item.actions))
