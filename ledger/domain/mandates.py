"""The ExecutionMandate aggregate: a signed, actor-bound grant of part of a Mission.

A Mandate gives one actor (an agent's runtime instance, or a sub-agent it
delegated to) a subset of the Mission's Effective Authority Set, bound to the
holder's key (``cnf.jkt``), until ``expires_at``. Its own states are ``active``,
``revoked``, ``cascaded`` (its Mission or an ancestor ended) and ``expired``;
narrowing is a new version of the token, not a state. Whether it authorises
anything *now* also depends on its Mission, its ancestors and its holder's
instance: ``validity`` computes that, failing closed, for every reader alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.authority import AuthorityEntry, parse_authority_set, set_within
from ledger.domain.errors import Conflict
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent


class MandateState(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    CASCADED = "cascaded"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Grant:
    """Everything fixed when a Mandate is issued or delegated."""

    mission_id: str
    issuer: str
    mission_authority_hash: str
    subject: Mapping[str, Any]
    client_id: str
    holder: Mapping[str, Any]
    cnf: Mapping[str, Any]
    authorization_details: Sequence[Mapping[str, Any]]
    depth: int
    act: Mapping[str, Any]
    purpose: Mapping[str, Any]
    provenance: Mapping[str, Any]
    parent_hash: str | None


def expiry_within(
    now: datetime,
    lifetime: timedelta,
    *,
    mission_expires_at: datetime,
    parent: ExecutionMandate | None,
) -> datetime:
    """When a new Mandate expires: ``lifetime`` from ``now``, but never after its Mission or
    its parent, in whole seconds (the token's ``exp`` is a NumericDate: the recorded value
    stays identical). ``Conflict`` when that leaves no time at all."""
    ceiling = mission_expires_at if parent is None else min(mission_expires_at, parent.expires_at)
    latest = min(now + lifetime, ceiling)
    expires_at = datetime.fromtimestamp(math.floor(latest.timestamp()), tz=latest.tzinfo)
    if expires_at <= now:
        if parent is None:
            raise Conflict("the Mission expires too soon to issue a Mandate")
        raise Conflict("the parent Mandate expires too soon to delegate")
    return expires_at


class ExecutionMandate(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "ExecutionMandate"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Event"

    @dataclass(frozen=True)
    class Issued(Event, LedgerCreated):
        """A root Mandate issued under a Mission to one of its agent's instances."""

        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Issued"
        mission_id: str
        issuer: str
        mission_authority_hash: str
        subject: dict[str, Any]
        client_id: str
        holder: dict[str, Any]
        cnf: dict[str, Any]
        authorization_details: list[dict[str, Any]]
        expires_at: datetime
        parent_mandate_id: str | None
        depth: int
        act: dict[str, Any]
        purpose: dict[str, Any]
        provenance: dict[str, Any]
        parent_hash: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: ExecutionMandate) -> None:
            aggregate.mission_id = self.mission_id
            aggregate.issuer = self.issuer
            aggregate.mission_authority_hash = self.mission_authority_hash
            aggregate.subject = dict(self.subject)
            aggregate.client_id = self.client_id
            aggregate.holder = dict(self.holder)
            aggregate.cnf = dict(self.cnf)
            aggregate.authorization_details = list(self.authorization_details)
            aggregate.expires_at = self.expires_at
            aggregate.parent_mandate_id = self.parent_mandate_id
            aggregate.depth = self.depth
            aggregate.act = dict(self.act)
            aggregate.purpose = dict(self.purpose)
            aggregate.provenance = dict(self.provenance)
            aggregate.parent_hash = self.parent_hash
            aggregate.issued_by = dict(self.actor)
            aggregate.state = MandateState.ACTIVE.value
            aggregate.token_version = 1
            aggregate.token_issued_at = self.timestamp
            aggregate.reason = None

    @dataclass(frozen=True)
    class Delegated(Issued):
        """A child Mandate delegated by the holder of ``parent_mandate_id`` (never wider)."""

        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Delegated"

    @dataclass(frozen=True)
    class Narrowed(Event):
        """Authority removed; the token is re-signed as a new version."""

        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Narrowed"
        authorization_details: list[dict[str, Any]]
        cause: str
        reason: str | None
        actor: dict[str, Any]
        #: The write that recorded it (``ledger.domain.events.name_the_write``). Recorded
        #: before release 2 by a discharge only, as ``{"kind": "discharge", "id":
        #: mission_id, "event_id": ...}``; absent from other events recorded then.
        caused_by: dict[str, Any] | None = None

        def apply(self, aggregate: ExecutionMandate) -> None:
            aggregate.authorization_details = list(self.authorization_details)
            aggregate.token_version += 1
            aggregate.token_issued_at = self.timestamp
            aggregate.reason = self.reason

    @dataclass(frozen=True)
    class Revoked(Event):
        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Revoked"
        reason: str | None
        actor: dict[str, Any]
        #: The write that recorded it (``ledger.domain.events.name_the_write``).
        caused_by: dict[str, Any] | None = None

        def apply(self, aggregate: ExecutionMandate) -> None:
            aggregate.state = MandateState.REVOKED.value
            aggregate.reason = self.reason

    @dataclass(frozen=True)
    class Cascaded(Event):
        """Ended because its Mission or an ancestor Mandate ended."""

        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Cascaded"
        cause: dict[str, Any]
        reason: str | None
        actor: dict[str, Any]
        #: The write that recorded it (``ledger.domain.events.name_the_write``).
        caused_by: dict[str, Any] | None = None

        def apply(self, aggregate: ExecutionMandate) -> None:
            aggregate.state = MandateState.CASCADED.value
            aggregate.reason = self.reason

    @dataclass(frozen=True)
    class Expired(Event):
        TOPIC = TOPIC_PREFIX + "ExecutionMandate.Expired"
        deadline: datetime
        actor: dict[str, Any]
        #: The write that recorded it (``ledger.domain.events.name_the_write``).
        caused_by: dict[str, Any] | None = None

        def apply(self, aggregate: ExecutionMandate) -> None:
            aggregate.state = MandateState.EXPIRED.value
            aggregate.reason = "expires_at reached"

    if TYPE_CHECKING:
        mission_id: str
        issuer: str
        mission_authority_hash: str
        subject: dict[str, Any]
        client_id: str
        holder: dict[str, Any]
        cnf: dict[str, Any]
        authorization_details: list[dict[str, Any]]
        expires_at: datetime
        parent_mandate_id: str | None
        depth: int
        act: dict[str, Any]
        purpose: dict[str, Any]
        provenance: dict[str, Any]
        parent_hash: str | None
        issued_by: dict[str, Any]
        state: str
        token_version: int
        token_issued_at: datetime
        reason: str | None

    # ------------------------------------------------------------------ creation

    @classmethod
    def issue(
        cls,
        *,
        mandate_id: str,
        grant: Grant,
        lifetime: timedelta,
        mission_expires_at: datetime,
        parent: ExecutionMandate | None,
        actor: Actor,
        now: datetime,
    ) -> ExecutionMandate:
        """A root Mandate (``parent`` None) or one delegated from ``parent``; it never
        outlives its Mission or its parent (``expiry_within``)."""
        expires_at = expiry_within(
            now, lifetime, mission_expires_at=mission_expires_at, parent=parent
        )
        event = cls.Issued if parent is None else cls.Delegated
        return cls._create(
            event,
            id=mandate_id,
            timestamp=now,
            mission_id=grant.mission_id,
            issuer=grant.issuer,
            mission_authority_hash=grant.mission_authority_hash,
            subject=dict(grant.subject),
            client_id=grant.client_id,
            holder=dict(grant.holder),
            cnf=dict(grant.cnf),
            authorization_details=[dict(e) for e in grant.authorization_details],
            expires_at=expires_at,
            parent_mandate_id=None if parent is None else parent.id,
            depth=grant.depth,
            act=dict(grant.act),
            purpose=dict(grant.purpose),
            provenance=dict(grant.provenance),
            parent_hash=grant.parent_hash,
            actor=actor.to_json(),
        )

    # ------------------------------------------------------------------ queries

    def entries(self) -> tuple[AuthorityEntry, ...]:
        return parse_authority_set(self.authorization_details) if self.authorization_details else ()

    @property
    def not_before_ts(self) -> float:
        """Valid from its issuance (narrowing re-signs it, but does not move this)."""
        return self.created_on.timestamp()

    @property
    def expires_ts(self) -> float:
        return self.expires_at.timestamp()

    def own_state(self, now: datetime) -> str:
        """Its own lifecycle state, with expiry applied before it is recorded."""
        return own_state(self, now.timestamp())

    def is_live(self) -> bool:
        """Recorded as active (it may still have expired by the clock)."""
        return self.state == MandateState.ACTIVE.value

    def next_deadline(self) -> datetime | None:
        return self.expires_at if self.is_live() else None

    # ------------------------------------------------------------------ commands

    def narrow(
        self,
        authorization_details: Sequence[Mapping[str, Any]],
        *,
        cause: str,
        reason: str | None,
        actor: Actor,
        now: datetime,
    ) -> bool:
        """Replace the authority by a narrower one: every new entry lies within the current
        authority (``AuthorityExceeded`` naming the first that does not: narrowing only
        removes). Returns False when nothing changes."""
        new = [dict(e) for e in authorization_details]
        set_within(parse_authority_set(new) if new else (), self.entries())
        if new == self.authorization_details:
            return False
        self.trigger_event(
            self.Narrowed,
            timestamp=now,
            authorization_details=new,
            cause=cause,
            reason=reason,
            actor=actor.to_json(),
        )
        return True

    def revoke(self, *, reason: str | None, actor: Actor, now: datetime) -> bool:
        """Returns False (no event) when the Mandate is no longer active."""
        if not self.is_live():
            return False
        self.trigger_event(self.Revoked, timestamp=now, reason=reason, actor=actor.to_json())
        return True

    def cascade(
        self, *, cause: Mapping[str, Any], reason: str, actor: Actor, now: datetime
    ) -> bool:
        if not self.is_live():
            return False
        self.trigger_event(
            self.Cascaded, timestamp=now, cause=dict(cause), reason=reason, actor=actor.to_json()
        )
        return True

    def advance_clock(self, now: datetime) -> None:
        if self.is_live() and now >= self.expires_at:
            self.trigger_event(
                self.Expired, timestamp=now, deadline=self.expires_at, actor=SCHEDULER.to_json()
            )


# ---------------------------------------------------------------------- validity
#
# The one rule for "does this Mandate authorise anything now" (domain.md 2.2). The ledger
# (inspection, introspection, delegation), the decision point and search all ask it: the
# first two on the aggregate, the last two on the decision index's slim records.


class MandateWindow(Protocol):
    """What the rule reads of one Mandate: its recorded state and its validity window in
    epoch seconds (the decision index keeps floats; the aggregate computes them)."""

    @property
    def state(self) -> str: ...

    @property
    def not_before_ts(self) -> float: ...

    @property
    def expires_ts(self) -> float: ...


@dataclass(frozen=True)
class Validity:
    """Whether a Mandate authorises anything now, and if not, why (fail closed)."""

    active: bool
    reason: str | None = None
    state: str = MandateState.ACTIVE.value


VALID = Validity(active=True)


_ACTIVE = MandateState.ACTIVE.value  # (read on every decision: no enum lookups)
_EXPIRED = MandateState.EXPIRED.value


def own_state(mandate: MandateWindow, ts: float) -> str:
    """Its own lifecycle state at ``ts``, with expiry applied before it is recorded."""
    state = mandate.state
    if state == _ACTIVE and ts >= mandate.expires_ts:
        return _EXPIRED
    return state


def window_problem(mandate: MandateWindow, ts: float) -> str | None:
    """Why the Mandate's own window does not hold at ``ts`` (recorded active and not expired:
    ``own_state``; issued at or before ``ts``), or None when it holds."""
    state = mandate.state
    if state != _ACTIVE or ts >= mandate.expires_ts:
        return f"mandate_{own_state(mandate, ts)}"
    if ts < mandate.not_before_ts:
        return "mandate_not_yet_valid"
    return None


def validity(
    mandate: MandateWindow,
    *,
    ancestors: Iterable[MandateWindow | None],
    mission_state: str | None,
    instance_revoked: bool,
    now: datetime,
) -> Validity:
    """A Mandate is valid at ``now`` when, in this order (the first failure is the reason):

    1. its own window holds (``window_problem``);
    2. so does every ancestor's, up its delegation chain (``None``: an ancestor the caller
       does not hold, which fails closed);
    3. its Mission is effectively ``active`` (``mission_state``: expiry and suspension
       deadlines applied; ``None``: a Mission the caller does not hold);
    4. its holder's instance has not been revoked (the kill switch).
    """
    ts = now.timestamp()
    problem = window_problem(mandate, ts)
    if problem is not None:
        return Validity(active=False, reason=problem, state=own_state(mandate, ts))
    for ancestor in ancestors:
        if ancestor is None or window_problem(ancestor, ts) is not None:
            return Validity(
                active=False, reason="parent_inactive", state=MandateState.CASCADED.value
            )
    if mission_state != _ACTIVE:
        suspended = mission_state == "suspended"
        return Validity(
            active=False,
            reason="mission_inactive" if mission_state is None else f"mission_{mission_state}",
            state="suspended" if suspended else MandateState.CASCADED.value,
        )
    if instance_revoked:
        return Validity(active=False, reason="instance_revoked", state=MandateState.REVOKED.value)
    return VALID
