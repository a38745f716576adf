"""Execution Mandate use cases: issue, delegate, narrow, revoke, the instance kill switch,
and the signed token."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ledger.application.base import Changes, IdempotencyRequest, Written, fingerprint, new_id
from ledger.application.cascades import Effects, MandateCascades
from ledger.domain.actors import Actor
from ledger.domain.authority import authority_json, parse_authority_set
from ledger.domain.canonical import anchor
from ledger.domain.delegation import (
    ActorRef,
    check_delegation,
    check_grant,
    delegable_entries,
    parse_entries,
    validate_jkt,
)
from ledger.domain.errors import AuthorityExceeded, Conflict, InvalidRequest
from ledger.domain.instances import AgentInstance
from ledger.domain.mandate_claims import MANDATE_TYP, mandate_claims
from ledger.domain.mandate_tree import MandateTree
from ledger.domain.mandates import ExecutionMandate, Grant
from ledger.domain.missions import Mission

DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 86_400


def _ttl(ttl_seconds: int | None) -> timedelta:
    if ttl_seconds is None:
        return timedelta(seconds=DEFAULT_TTL_SECONDS)
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidRequest.at("/ttl_seconds", f"must be between 1 and {MAX_TTL_SECONDS} seconds")
    return timedelta(seconds=ttl_seconds)


class MandateUseCases(MandateCascades):
    # ------------------------------------------------------------------ issuance

    def issue_mandate(
        self,
        *,
        actor: Actor,
        mission_id: str,
        holder: ActorRef,
        jkt: str,
        authorization_details: object | None = None,
        ttl_seconds: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[ExecutionMandate]:
        """A root Mandate for one instance of the Mission's own agent: a subset of the
        Mission's Effective Authority Set, for at most ``ttl_seconds``."""
        validate_jkt(jkt)
        ttl = _ttl(ttl_seconds)
        if holder.instance_id is None:
            raise InvalidRequest.at("/actor/instance_id", "is required")
        requested = (
            None if authorization_details is None else parse_authority_set(authorization_details)
        )

        def command() -> Changes:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            self._require_active(mission, now)
            if holder.client_id != mission.client_id:
                raise InvalidRequest.at(
                    "/actor/client_id",
                    f"a Mandate issued under this Mission goes to its own agent "
                    f"({mission.client_id}); other agents receive authority by delegation",
                )
            effective = parse_entries(mission.effective_authority())
            granted = effective if requested is None else requested
            check_grant(granted, effective)
            act = {"sub": holder.client_id, **_actor_members(holder)}
            return self._record_new(
                mission=mission,
                parent=None,
                holder=holder,
                grant=Grant(
                    mission_id=mission.id,
                    issuer=self.issuer,
                    mission_authority_hash=mission.authority_hash,
                    subject=mission.subject,
                    client_id=mission.client_id,
                    holder=holder.to_json(),
                    cnf={"jkt": jkt},
                    authorization_details=authority_json(granted),
                    depth=0,
                    act=act,
                    purpose=_purpose(mission),
                    provenance=_provenance(mission),
                    parent_hash=None,
                ),
                lifetime=ttl,
                actor=actor,
                now=now,
            )

        return self.execute(command, idempotency, ExecutionMandate)

    def delegate_mandate(
        self,
        *,
        actor: Actor,
        parent_mandate_id: str,
        holder: ActorRef,
        jkt: str,
        authorization_details: object | None = None,
        ttl_seconds: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[ExecutionMandate]:
        """A child Mandate for a sub-agent: never wider, longer-lived or deeper than its
        parent allows, and bound to a key of its own."""
        validate_jkt(jkt)
        ttl = _ttl(ttl_seconds)
        requested = (
            None if authorization_details is None else parse_authority_set(authorization_details)
        )

        def command() -> Changes:
            now = self.clock.now()
            parent = self.get_mandate(parent_mandate_id)
            mission = self.get_mission(parent.mission_id)
            parent_validity = self.mandate_validity(parent, now, mission=mission)
            if not parent_validity.active:
                raise Conflict(
                    f"the parent Mandate is not active ({parent_validity.reason}); it cannot "
                    "delegate",
                    extensions={"reason": parent_validity.reason},
                )
            depth = parent.depth + 1
            parent_entries = parent.entries()
            granted = delegable_entries(parent_entries) if requested is None else requested
            if not granted:
                raise AuthorityExceeded(
                    "the parent Mandate holds no delegable authority (no entry has a "
                    "delegation policy)"
                )
            check_delegation(granted, parent_entries, depth=depth, delegate=holder)
            check_grant(granted, parse_entries(mission.effective_authority()))
            ancestors = [parent, *self.ancestors_of(parent)]
            if any(a.cnf.get("jkt") == jkt for a in ancestors):
                raise AuthorityExceeded(
                    "a delegate must be bound to a key of its own (cnf.jkt is already bound "
                    "to a Mandate up the chain)",
                    errors=(),
                )
            act = {"sub": holder.client_id, **_actor_members(holder), "act": parent.act}
            changes = self._record_new(
                mission=mission,
                parent=parent,
                holder=holder,
                grant=Grant(
                    mission_id=mission.id,
                    issuer=self.issuer,
                    mission_authority_hash=mission.authority_hash,
                    subject=mission.subject,
                    client_id=mission.client_id,
                    holder=holder.to_json(),
                    cnf={"jkt": jkt},
                    authorization_details=authority_json(granted),
                    depth=depth,
                    act=act,
                    purpose=_purpose(mission),
                    provenance=_provenance(mission),
                    parent_hash=anchor(
                        "mission-derivation-entries", self.issuer, parent.authorization_details
                    ),
                ),
                lifetime=ttl,
                actor=actor,
                now=now,
            )
            for ancestor in ancestors:
                changes.expect[ancestor.id] = ancestor.version
            return changes

        return self.execute(command, idempotency, ExecutionMandate)

    # ------------------------------------------------------------------ narrowing, ending

    def narrow_mandate(
        self,
        *,
        actor: Actor,
        mandate_id: str,
        authorization_details: object,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[ExecutionMandate]:
        """Remove authority (never add); descendants are narrowed to fit, or end."""
        narrower = parse_authority_set(authorization_details)

        def command() -> Changes:
            now = self.clock.now()
            mandate = self.get_mandate(mandate_id)
            if mandate.own_state(now) != "active":
                raise Conflict(
                    f"the Mandate is {mandate.own_state(now)}; only an active Mandate can be "
                    "narrowed"
                )
            mandate.narrow(
                authority_json(narrower), cause="request", reason=reason, actor=actor, now=now
            )
            effects = self.subtree_effects(mandate, actor=actor, now=now)
            return Changes(mandate, [*effects.changed, mandate], effects.expect)

        return self.execute(command, idempotency, ExecutionMandate)

    def revoke_mandate(
        self,
        *,
        actor: Actor,
        mandate_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[ExecutionMandate]:
        """Revoke one Mandate and cascade to every descendant. A Mandate that is not
        active answers unchanged."""

        def command() -> Changes:
            now = self.clock.now()
            mandate = self.get_mandate(mandate_id)
            if not mandate.revoke(reason=reason, actor=actor, now=now):
                return Changes(mandate, [], {})
            effects = self.subtree_effects(mandate, actor=actor, now=now)
            return Changes(mandate, [*effects.changed, mandate], effects.expect)

        return self.execute(command, idempotency, ExecutionMandate)

    def revoke_instance(
        self,
        *,
        actor: Actor,
        client_id: str,
        instance_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[AgentInstance]:
        """The kill switch: every Mandate the instance holds is revoked (with its subtree),
        and the instance can hold no new one."""

        def command() -> Changes:
            now = self.clock.now()
            instance = self.get_instance(client_id, instance_id) or AgentInstance.register(
                client_id=client_id, instance_id=instance_id, now=now
            )
            instance.revoke(reason=reason, actor=actor, now=now)
            effects = Effects()
            for mandate_id, _mission_id in instance.holdings:
                mandate = self.get_mandate(mandate_id)
                if mandate.revoke(
                    reason=reason or f"agent instance {client_id}/{instance_id} revoked",
                    actor=actor,
                    now=now,
                ):
                    effects.add(mandate)
                    self.subtree_effects(mandate, actor=actor, now=now, effects=effects)
            return Changes(instance, [*effects.changed, instance], effects.expect)

        return self.execute(command, idempotency, AgentInstance)

    # ------------------------------------------------------------------ the token

    def mandate_token(self, mandate: ExecutionMandate) -> str:
        """The compact JWS of the Mandate's current version (re-signing is deterministic
        in its claims)."""
        if self.signer is None:
            msg = "no signing keys are configured"
            raise RuntimeError(msg)
        claims = mandate_claims(mandate)
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        return self.signer.sign_compact(
            {"typ": MANDATE_TYP}, payload, alg=self.mandate_alg, now=self.clock.now()
        )

    # ------------------------------------------------------------------ internals

    def _require_active(self, mission: Mission, now: datetime) -> None:
        state = mission.effective_state(now)
        if state != "active":
            raise Conflict(
                f"the Mission is {state}; Mandates are issued only under an active Mission",
                extensions={"reason": "mission_inactive", "state": state},
            )

    def _record_new(
        self,
        *,
        mission: Mission,
        parent: ExecutionMandate | None,
        holder: ActorRef,
        grant: Grant,
        lifetime: timedelta,
        actor: Actor,
        now: datetime,
    ) -> Changes:
        mandate_id = new_id("mdt")
        mandate = ExecutionMandate.issue(
            mandate_id=mandate_id,
            grant=grant,
            lifetime=lifetime,
            mission_expires_at=mission.expires_at,
            parent=parent,
            actor=actor,
            now=now,
        )
        tree = self.get_tree(mission.id) or MandateTree.start(mission_id=mission.id, now=now)
        tree.record(
            mandate_id=mandate_id,
            parent_mandate_id=None if parent is None else parent.id,
            holder=holder.to_json(),
            max_derivations=_max_derivations(mission),
            now=now,
        )
        changed: list[Any] = [tree]
        if holder.instance_id is not None:
            instance = self.get_instance(holder.client_id, holder.instance_id) or (
                AgentInstance.register(
                    client_id=holder.client_id, instance_id=holder.instance_id, now=now
                )
            )
            instance.hold(mandate_id=mandate_id, mission_id=mission.id, now=now)
            changed.append(instance)
        changed.append(mandate)
        return Changes(mandate, changed, {mission.id: mission.version})


def _actor_members(holder: ActorRef) -> dict[str, str]:
    members = holder.to_json()
    members.pop("client_id")
    return members


def _purpose(mission: Mission) -> dict[str, Any]:
    out: dict[str, Any] = {"goal_digest": fingerprint({"goal": mission.intent.get("goal")})}
    if "purpose" in mission.intent:
        out["purpose"] = mission.intent["purpose"]
    return out


def _provenance(mission: Mission) -> dict[str, Any]:
    return {
        "approval_event_id": mission.approval_event_id,
        "policy_version": mission.policy_version,
        "mission_version": mission.version,
        "intent_hash": mission.intent_hash,
    }


def _max_derivations(mission: Mission) -> int | None:
    controls = mission.intent.get("controls")
    if isinstance(controls, Mapping):
        value = controls.get("max_derivations")
        if isinstance(value, int):
            return value
    return None
