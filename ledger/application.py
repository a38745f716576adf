"""The Ledger application: one method per use case, on top of ``eventsourcing``.

Every command loads the aggregates it needs, lets them decide (domain rules raise
``LedgerError`` subclasses), and saves every changed aggregate in one atomic
``save``. A command returns a ``Written`` with the aggregate and the log position
of its last event (``None`` when the request changed nothing).

Concurrency: two commands on the same aggregate from different processes both
load version *n* and try to write *n+1*; the store's primary key lets exactly one
win. The loser is retried from a fresh load (so its checks run against the new
state) unless the caller pinned ``expected_version``, in which case it gets
``StaleVersion``.

Idempotency: an ``IdempotencyRequest`` makes the write's record part of the same
transaction (``ledger.persistence.idempotency``); a retry with the same key and the
same request gets the original result, a different request gets
``IdempotencyConflict``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import Environment

from ledger.clock import Clock
from ledger.domain.actors import Actor
from ledger.domain.apikeys import ApiKey, api_key_id
from ledger.domain.authority import parse_authority_set, parse_containment, set_within
from ledger.domain.canonical import authority_hash, intent_hash, proposal_hash, raw_digest
from ledger.domain.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    StaleVersion,
)
from ledger.domain.intent import parse_intent, resource_in_intent
from ledger.domain.missions import Mission, MissionRecord
from ledger.domain.proposals import Proposal, Submission
from ledger.domain.roles import Role
from ledger.domain.states import OnExpiry, Operation
from ledger.persistence.database import Database
from ledger.persistence.eventlog import EventLog, LoggedEvent
from ledger.persistence.idempotency import IdempotencyRecord
from ledger.persistence.notify import CommitListeners

A = TypeVar("A", bound=BaseAggregate[str])

_MAX_ATTEMPTS = 5


def new_id(prefix: str) -> str:
    """An opaque identifier with 192 bits of entropy (URL-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"


@dataclass(frozen=True)
class IdempotencyRequest:
    """An ``Idempotency-Key`` as scoped to its credential, with the request's digest."""

    scope: str
    key: str
    request_hash: str
    status_code: int


@dataclass(frozen=True)
class Written(Generic[A]):
    """The outcome of a command: the aggregate, and the position of the last event written."""

    value: A
    position: int | None
    replayed: bool = False
    status_code: int | None = None
    response: str | None = None


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str
    position: int


class Ledger(Application[str]):
    """The write side of Mission Ledger."""

    name = "Ledger"

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        clock: Clock,
        issuer: str,
        proposal_ttl: timedelta,
        policy_version: str,
    ) -> None:
        self._explicit_env = dict(env)
        super().__init__(env=dict(env))
        self.clock = clock
        self.issuer = issuer
        self.proposal_ttl = proposal_ttl
        self.policy_version = policy_version
        self.commit_listeners = CommitListeners()
        self.recorder.commit_listeners = self.commit_listeners  # type: ignore[attr-defined]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        self.database = Database(datastore)
        self.event_log = EventLog(self.database, self.mapper)

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        # Configuration comes only from Settings (via ``env``), never from stray
        # process environment variables such as POSTGRES_HOST.
        return Environment(name, dict(env or {}))

    # ------------------------------------------------------------------ reads

    def get_proposal(self, proposal_id: str) -> Proposal:
        return self._get(Proposal, proposal_id, "proposal")

    def get_mission(self, mission_id: str, *, as_of: datetime | None = None) -> Mission:
        if as_of is None:
            return self._get(Mission, mission_id, "Mission")
        events = [e.event for e in self.event_log.history(mission_id) if e.event.timestamp <= as_of]
        if not events or not isinstance(events[0], Mission.Approved):
            raise NotFound(f"no Mission {mission_id!r} existed at that instant")
        aggregate: Mission | None = None
        for event in events:
            aggregate = event.mutate(aggregate)
        assert aggregate is not None
        return aggregate

    def history(self, originator_id: str) -> list[LoggedEvent]:
        return self.event_log.history(originator_id)

    def head_position(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    # ------------------------------------------------------------------ proposals

    def submit_proposal(
        self,
        *,
        actor: Actor,
        client_id: str,
        instance_id: str | None,
        subject: Mapping[str, Any],
        intent: object,
        authorization_details: object | None,
        predecessor: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        """Record a Mission Intent (and optional authority proposal) as a pending proposal."""
        parsed_intent = parse_intent(intent)
        proposed = None
        if authorization_details is not None:
            proposed = parse_authority_set(authorization_details)
            for index, entry in enumerate(proposed):
                if not resource_in_intent(parsed_intent, entry.resource):
                    raise InvalidRequest.at(
                        f"/authorization_details/{index}/resource",
                        "is not one of the intent's resources (or below one)",
                    )
        now = self.clock.now()
        if parsed_intent.expires_at <= now:
            raise InvalidRequest.at("/intent/expires_at", "must be in the future")
        raw_proposal = None if proposed is None else [dict(e.raw) for e in proposed]
        submission = Submission(
            issuer=self.issuer,
            client_id=client_id,
            instance_id=instance_id,
            subject=dict(subject),
            intent=dict(parsed_intent.raw),
            proposed_authority=raw_proposal,
            intent_hash=intent_hash(self.issuer, dict(parsed_intent.raw)),
            proposal_hash=None
            if raw_proposal is None
            else proposal_hash(self.issuer, raw_proposal),
            expires_at=min(now + self.proposal_ttl, parsed_intent.expires_at),
            predecessor=predecessor,
        )

        def command() -> tuple[Proposal, list[BaseAggregate[str]]]:
            proposal = Proposal.submit(
                proposal_id=new_id("prp"), submission=submission, actor=actor, now=now
            )
            return proposal, [proposal]

        return self._execute(command, idempotency, Proposal)

    def approve_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        authorization_details: object | None = None,
        expires_at: datetime | None = None,
        approval_event_id: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Mission]:
        """Approve a pending proposal: create the Mission ``active`` in the same transaction.

        The approver may narrow the proposed authority (never widen it) and shorten the
        requested expiry. A proposal already approved under the same ``approval_event_id``
        answers with its Mission (idempotent replay).
        """
        narrowed = (
            None if authorization_details is None else parse_authority_set(authorization_details)
        )

        def command() -> tuple[Mission, list[BaseAggregate[str]]]:
            now = self.clock.now()
            proposal = self.get_proposal(proposal_id)
            if proposal.is_replayed_approval(approval_event_id):
                assert proposal.mission_id is not None
                raise _Replay(self.get_mission(proposal.mission_id))
            intent = parse_intent(proposal.intent)
            proposed = (
                None
                if proposal.proposed_authority is None
                else parse_authority_set(proposal.proposed_authority)
            )
            if narrowed is not None:
                if proposed is not None:
                    set_within(narrowed, proposed)
                else:
                    for index, entry in enumerate(narrowed):
                        if not resource_in_intent(intent, entry.resource):
                            raise InvalidRequest.at(
                                f"/authorization_details/{index}/resource",
                                "is not one of the intent's resources (or below one)",
                            )
                granted = narrowed
            elif proposed is not None:
                granted = proposed
            else:
                raise InvalidRequest.at(
                    "/authorization_details",
                    "the proposal carries no authority; the approver must supply it",
                )
            effective_expiry = intent.expires_at
            if expires_at is not None:
                if expires_at > intent.expires_at:
                    raise InvalidRequest.at(
                        "/expires_at", "may only shorten the requested expiry, never extend it"
                    )
                effective_expiry = expires_at
            if effective_expiry <= now:
                raise InvalidRequest.at("/expires_at", "must be in the future")
            granted_raw = [dict(e.raw) for e in granted]
            mission_id = new_id("msn")
            record = MissionRecord(
                issuer=proposal.issuer,
                submission_id=proposal.id,
                client_id=proposal.client_id,
                instance_id=proposal.instance_id,
                subject=proposal.subject,
                approver=actor.to_json(),
                intent=proposal.intent,
                proposed_authority=proposal.proposed_authority,
                authority_set=granted_raw,
                intent_hash=proposal.intent_hash,
                proposal_hash=proposal.proposal_hash,
                authority_hash=authority_hash(proposal.issuer, granted_raw),
                approval_event_id=approval_event_id,
                policy_version=self.policy_version,
                approval_basis={
                    "type": "direct",
                    "consent_principal": actor.to_json(),
                    "activation": {"approval_event_id": approval_event_id},
                },
                authority_source={"type": "user_delegated"},
                expires_at=effective_expiry,
                predecessor=proposal.predecessor,
            )
            proposal.approve(
                mission_id=mission_id, approval_event_id=approval_event_id, actor=actor, now=now
            )
            mission = Mission.approve(mission_id=mission_id, record=record, actor=actor, now=now)
            changed: list[BaseAggregate[str]] = [proposal]
            if proposal.predecessor is not None:
                predecessor = self.get_mission(proposal.predecessor)
                predecessor.advance_clock(now)
                predecessor.supersede(successor=mission_id, actor=actor, now=now)
                changed.append(predecessor)
            changed.append(mission)
            return mission, changed

        return self._execute(command, idempotency, Mission)

    def deny_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        def command() -> tuple[Proposal, list[BaseAggregate[str]]]:
            proposal = self.get_proposal(proposal_id)
            proposal.deny(reason=reason, actor=actor, now=self.clock.now())
            return proposal, [proposal]

        return self._execute(command, idempotency, Proposal)

    def cancel_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        def command() -> tuple[Proposal, list[BaseAggregate[str]]]:
            proposal = self.get_proposal(proposal_id)
            proposal.cancel(reason=reason, actor=actor, now=self.clock.now())
            return proposal, [proposal]

        return self._execute(command, idempotency, Proposal)

    # ------------------------------------------------------------------ missions

    def change_lifecycle(
        self,
        *,
        actor: Actor,
        mission_id: str,
        operation: Operation,
        reason: str | None,
        nonce: str | None = None,
        expected_version: int | None = None,
        suspend_until: datetime | None = None,
        on_expiry: OnExpiry | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Mission]:
        """Revoke, suspend, resume or complete a Mission (legal-operation table)."""
        fingerprint = _fingerprint(
            {
                "operation": operation.value,
                "reason": reason,
                "expected_version": expected_version,
                "suspend_until": None if suspend_until is None else suspend_until.isoformat(),
                "on_expiry": None if on_expiry is None else on_expiry.value,
            }
        )

        def command() -> tuple[Mission, list[BaseAggregate[str]]]:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            if mission.check_nonce(actor, nonce, fingerprint):
                return mission, []
            mission.check_expected_version(expected_version)
            mission.advance_clock(now)
            mission.apply_operation(
                operation,
                actor=actor,
                now=now,
                reason=reason,
                nonce=nonce,
                nonce_fingerprint=fingerprint,
                suspend_until=suspend_until,
                on_expiry=on_expiry,
            )
            return mission, [mission]

        return self._execute(
            command, idempotency, Mission, pinned_version=expected_version is not None
        )

    def contain(
        self,
        *,
        actor: Actor,
        mission_id: str,
        contained: object,
        reason: str | None,
        nonce: str | None = None,
        expected_version: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Mission]:
        """Add a removal-only containment overlay (M2)."""
        items = parse_containment(contained)
        fingerprint = _fingerprint(
            {
                "contained": [dict(i.raw) for i in items],
                "reason": reason,
                "expected_version": expected_version,
            }
        )

        def command() -> tuple[Mission, list[BaseAggregate[str]]]:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            if mission.check_nonce(actor, nonce, fingerprint):
                return mission, []
            mission.check_expected_version(expected_version)
            mission.advance_clock(now)
            mission.contain(
                items,
                actor=actor,
                now=now,
                reason=reason,
                nonce=nonce,
                nonce_fingerprint=fingerprint,
            )
            return mission, [mission]

        return self._execute(
            command, idempotency, Mission, pinned_version=expected_version is not None
        )

    def propose_expansion(
        self,
        *,
        actor: Actor,
        mission_id: str,
        intent: object,
        authorization_details: object | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        """Submit a successor proposal linked to an active Mission by ``predecessor``."""
        mission = self.get_mission(mission_id)
        if not mission.is_effectively_active(self.clock.now()):
            raise Conflict(
                f"only an active Mission can be expanded; this one is "
                f"{mission.effective_state(self.clock.now())!r}",
                extensions={"state": mission.effective_state(self.clock.now())},
            )
        return self.submit_proposal(
            actor=actor,
            client_id=mission.client_id,
            instance_id=mission.instance_id,
            subject=mission.subject,
            intent=intent,
            authorization_details=authorization_details,
            predecessor=mission.id,
            idempotency=idempotency,
        )

    # ------------------------------------------------------------------ the clock

    def record_due_transitions(self, aggregate_id: str) -> int | None:
        """Record every clock-driven transition due now for one Mission or proposal.

        Safe to call from every replica at once: only one write per version can win,
        and losers see the recorded outcome. Returns the position written, if any.
        """
        cls: type[Mission] | type[Proposal] = (
            Mission if aggregate_id.startswith("msn_") else Proposal
        )
        try:
            aggregate = self._get(cls, aggregate_id, "aggregate")
            aggregate.advance_clock(self.clock.now())
            if not aggregate.pending_events:
                return None
            recordings = self.save(aggregate)
        except IntegrityError:
            return None  # another process recorded it first
        return recordings[-1].notification.id

    # ------------------------------------------------------------------ API keys

    def issue_api_key(self, *, name: str, role: Role, actor: Actor) -> IssuedKey:
        """Create (or reinstate a revoked) named key; the secret is returned once."""
        key_id = secrets.token_urlsafe(9)
        secret = secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        aggregate_id = api_key_id(name)
        for _ in range(_MAX_ATTEMPTS):
            now = self.clock.now()
            try:
                key: ApiKey = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                key = ApiKey.create(
                    name=name,
                    role=role,
                    key_id=key_id,
                    secret_sha256=digest,
                    actor=actor,
                    now=now,
                )
            else:
                key.reinstate(role=role, key_id=key_id, secret_sha256=digest, actor=actor, now=now)
            try:
                recordings = self.save(key)
            except IntegrityError:
                continue
            return IssuedKey(
                key=key, secret=f"mlk_{key_id}.{secret}", position=recordings[-1].notification.id
            )
        raise Conflict("the key changed concurrently; try again")

    def revoke_api_key(self, *, name: str, actor: Actor, reason: str | None = None) -> int | None:
        key = self._get(ApiKey, api_key_id(name), "API key")
        if not key.revoke(reason=reason, actor=actor, now=self.clock.now()):
            return None
        return self.save(key)[-1].notification.id

    # ------------------------------------------------------------------ internals

    def _get(self, cls: type[A], aggregate_id: str, what: str) -> A:
        try:
            aggregate: BaseAggregate[str] = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"no {what} with id {aggregate_id!r}") from None
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {what} with id {aggregate_id!r}")
        return aggregate

    def _execute(
        self,
        command: Callable[[], tuple[A, Sequence[BaseAggregate[str]]]],
        idempotency: IdempotencyRequest | None,
        result_type: type[A],
        *,
        pinned_version: bool = False,
    ) -> Written[A]:
        if idempotency is not None:
            replay = self._replay(idempotency, result_type)
            if replay is not None:
                return replay
        for _attempt in range(_MAX_ATTEMPTS):
            try:
                result, changed = command()
            except _Replay as replay_signal:
                value = replay_signal.aggregate
                assert isinstance(value, result_type)
                position = self.event_log.position_of(value.id, value.version)
                return Written(value=value, position=position, replayed=True)
            if not any(a.pending_events for a in changed):
                return Written(value=result, position=None)
            record = None
            if idempotency is not None:
                record = IdempotencyRecord(
                    scope=idempotency.scope,
                    key=idempotency.key,
                    request_hash=idempotency.request_hash,
                    originator_id=result.id,
                    originator_version=result.version,
                    status_code=idempotency.status_code,
                    response=None,
                    created_at=int(self.clock.now().timestamp()),
                )
            try:
                recordings = self.save(*changed, idempotency=record)
            except IntegrityError:
                if idempotency is not None:
                    replay = self._replay(idempotency, result_type)
                    if replay is not None:
                        return replay
                if pinned_version:
                    raise StaleVersion(
                        "the Mission changed concurrently; expected_version is no longer current"
                    ) from None
                continue
            return Written(value=result, position=recordings[-1].notification.id)
        raise Conflict("the aggregate kept changing concurrently; try again")

    def _replay(self, idempotency: IdempotencyRequest, result_type: type[A]) -> Written[A] | None:
        row = self.database.fetchone(
            "SELECT request_hash, originator_id, originator_version, status_code, response "
            "FROM idempotency_records WHERE scope = %s AND key = %s",
            (idempotency.scope, idempotency.key),
        )
        if row is None:
            return None
        if row["request_hash"] != idempotency.request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request"
            )
        originator_id = str(row["originator_id"])
        version = int(row["originator_version"])
        aggregate: BaseAggregate[str] = self.repository.get(originator_id, version=version)
        if not isinstance(aggregate, result_type):
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different kind of request"
            )
        return Written(
            value=aggregate,
            position=self.event_log.position_of(originator_id, version),
            replayed=True,
            status_code=int(row["status_code"]),
            response=row["response"],
        )


class _Replay(Exception):
    def __init__(self, aggregate: BaseAggregate[str]) -> None:
        super().__init__("replay")
        self.aggregate = aggregate


def _fingerprint(request: Mapping[str, Any]) -> str:
    return raw_digest(dict(request))
