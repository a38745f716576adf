"""Governance use cases: proposals, approval, the Mission lifecycle, containment,
expansion, and the clock-driven transitions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError

from ledger.application.base import (
    Changes,
    IdempotencyRequest,
    Replay,
    Written,
    fingerprint,
    new_id,
)
from ledger.application.cascades import MandateCascades
from ledger.domain.access_requests import AccessRequest
from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.authority import parse_authority_set, parse_containment, set_within
from ledger.domain.canonical import authority_hash, intent_hash, proposal_hash
from ledger.domain.errors import Conflict, InvalidRequest, NotFound
from ledger.domain.events import name_the_write
from ledger.domain.intent import parse_intent, refuse_unenforced_controls, resource_in_intent
from ledger.domain.mandate_tree import tree_id
from ledger.domain.missions import Mission, MissionRecord
from ledger.domain.proposals import Proposal, Submission
from ledger.domain.states import OnExpiry, Operation
from ledger.domain.subjects import (
    ATTESTED,
    PrincipalIdentity,
    SubjectAssertion,
    establish_subject,
)


class GovernanceUseCases(MandateCascades):
    # ------------------------------------------------------------------ proposals

    def submit_proposal(
        self,
        *,
        actor: Actor,
        client_id: str,
        instance_id: str | None,
        subject: Mapping[str, Any] | None,
        intent: object,
        authorization_details: object | None,
        subject_assertion: SubjectAssertion | None = None,
        predecessor: Mission | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        """Record a Mission Intent (and optional authority proposal) as a pending proposal.

        ``subject_assertion`` holds the verified claims of a ``subject_token``; an expansion
        keeps its ``predecessor``'s subject and its provenance.
        """
        established = establish_subject(
            subject,
            subject_assertion,
            require_assertion=self.require_subject_assertion,
            inherited_provenance=None if predecessor is None else predecessor.subject_provenance,
        )
        parsed_intent = parse_intent(intent)
        refuse_unenforced_controls(parsed_intent)
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
            subject=established.subject,
            intent=dict(parsed_intent.raw),
            proposed_authority=raw_proposal,
            intent_hash=intent_hash(self.issuer, dict(parsed_intent.raw)),
            proposal_hash=None
            if raw_proposal is None
            else proposal_hash(self.issuer, raw_proposal),
            expires_at=min(now + self.proposal_ttl, parsed_intent.expires_at),
            predecessor=None if predecessor is None else predecessor.id,
            subject_provenance=established.provenance,
        )

        def command() -> Changes:
            proposal = Proposal.submit(
                proposal_id=new_id("prp"), submission=submission, actor=actor, now=now
            )
            return Changes(proposal, [proposal], {})

        return self.execute(command, idempotency, Proposal)

    def approve_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        approver: PrincipalIdentity | None = None,
        authorization_details: object | None = None,
        expires_at: datetime | None = None,
        approval_event_id: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Mission]:
        """Approve a pending proposal: create the Mission ``active`` in the same transaction.

        The approver may narrow the proposed authority (never widen it) and shorten the
        requested expiry. A proposal already approved under the same ``approval_event_id``
        answers with its Mission (idempotent replay). ``approver`` is the acting principal's
        identity for the approver rules (``Proposal.approve``; by default the actor's, with
        no ``acr``); an unasserted subject is recorded as attested by it.
        """
        identity = approver or PrincipalIdentity(iss=actor.iss or self.issuer, sub=actor.name)
        narrowed = (
            None if authorization_details is None else parse_authority_set(authorization_details)
        )

        def command() -> Changes:
            now = self.clock.now()
            proposal = self.get_proposal(proposal_id)
            if proposal.is_replayed_approval(approval_event_id):
                assert proposal.mission_id is not None
                raise Replay(self.get_mission(proposal.mission_id))
            intent = parse_intent(proposal.intent)
            # A proposal recorded before a control was refused is not approved either.
            refuse_unenforced_controls(intent)
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
                subject_provenance=proposal.subject_provenance,
                subject_attested_by=(
                    identity.to_json() if proposal.subject_provenance == ATTESTED else None
                ),
            )
            proposal.approve(
                mission_id=mission_id,
                approval_event_id=approval_event_id,
                actor=actor,
                approver=identity,
                granted_actions=[action for entry in granted for action in entry.actions],
                now=now,
            )
            mission = Mission.approve(mission_id=mission_id, record=record, actor=actor, now=now)
            changed: list[BaseAggregate[str]] = [proposal]
            if proposal.predecessor is not None:
                predecessor = self.get_mission(proposal.predecessor)
                predecessor.advance_clock(now)
                predecessor.supersede(successor=mission_id, actor=actor, now=now)
                changed.append(predecessor)
                effects = self.mandate_effects(predecessor, actor=actor, now=now)
                changed.extend(effects.changed)
                expect = effects.expect
            else:
                expect = {}
            changed.append(mission)
            # A new Mission has no mandate tree: its first revoke need not look for one
            # (and if another process makes one meanwhile, the revoke's check of the
            # tree's version catches it).
            return Changes(mission, changed, expect, absent=(tree_id(mission_id),))

        return self.execute(command, idempotency, Mission)

    def deny_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        def command() -> Changes:
            proposal = self.get_proposal(proposal_id)
            proposal.deny(reason=reason, actor=actor, now=self.clock.now())
            return Changes(proposal, [proposal], {})

        return self.execute(command, idempotency, Proposal)

    def cancel_proposal(
        self,
        *,
        actor: Actor,
        proposal_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Proposal]:
        def command() -> Changes:
            proposal = self.get_proposal(proposal_id)
            proposal.cancel(reason=reason, actor=actor, now=self.clock.now())
            return Changes(proposal, [proposal], {})

        return self.execute(command, idempotency, Proposal)

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
        request_fingerprint = (
            None  # only a nonce needs the request's digest
            if nonce is None
            else fingerprint(
                {
                    "operation": operation.value,
                    "reason": reason,
                    "expected_version": expected_version,
                    "suspend_until": None if suspend_until is None else suspend_until.isoformat(),
                    "on_expiry": None if on_expiry is None else on_expiry.value,
                }
            )
        )

        def command() -> Changes:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            if mission.check_nonce(actor, nonce, request_fingerprint):
                return Changes(mission, [], {})
            mission.check_expected_version(expected_version)
            mission.advance_clock(now)
            mission.apply_operation(
                operation,
                actor=actor,
                now=now,
                reason=reason,
                nonce=nonce,
                nonce_fingerprint=request_fingerprint,
                suspend_until=suspend_until,
                on_expiry=on_expiry,
            )
            effects = self.mandate_effects(mission, actor=actor, now=now)
            return Changes(mission, [*effects.changed, mission], effects.expect)

        return self.execute(
            command,
            idempotency,
            Mission,
            pinned=None if expected_version is None else (mission_id, expected_version),
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
        request_fingerprint = (
            None
            if nonce is None
            else fingerprint(
                {
                    "contained": [dict(i.raw) for i in items],
                    "reason": reason,
                    "expected_version": expected_version,
                }
            )
        )

        def command() -> Changes:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            if mission.check_nonce(actor, nonce, request_fingerprint):
                return Changes(mission, [], {})
            mission.check_expected_version(expected_version)
            mission.advance_clock(now)
            mission.contain(
                items,
                actor=actor,
                now=now,
                reason=reason,
                nonce=nonce,
                nonce_fingerprint=request_fingerprint,
            )
            effects = self.mandate_effects(mission, actor=actor, now=now)
            return Changes(mission, [*effects.changed, mission], effects.expect)

        return self.execute(
            command,
            idempotency,
            Mission,
            pinned=None if expected_version is None else (mission_id, expected_version),
        )

    def report_completion_event(
        self,
        *,
        actor: Actor,
        mission_id: str,
        event_type: str,
        event_id: str,
        occurred_at: datetime,
        entry_digest: str | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[Mission]:
        """A completion event fires ``terminal_when`` (M1): the matching entries leave the
        Effective Authority Set and every Mandate narrows or ends by cascade, in one write.
        A ``event_id`` already applied changes nothing (on every replica: the ids are part
        of the Mission)."""

        def command() -> Changes:
            now = self.clock.now()
            mission = self.get_mission(mission_id)
            if mission.already_reported(event_id, event_type=event_type, entry_digest=entry_digest):
                return Changes(mission, [], {})
            mission.advance_clock(now)
            mission.discharge(
                event_type=event_type,
                entry_digest=entry_digest,
                event_id=event_id,
                occurred_at=occurred_at,
                actor=actor,
                now=now,
            )
            effects = self.mandate_effects(mission, actor=actor, now=now)
            return Changes(mission, [*effects.changed, mission], effects.expect)

        return self.execute(command, idempotency, Mission)

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
            predecessor=mission,
            idempotency=idempotency,
        )

    # ------------------------------------------------------------------ the clock

    def record_due_transitions(self, aggregate_id: str) -> int | None:
        """Record every clock-driven transition due now for one Mission, proposal, Mandate or
        access request.

        Safe to call from every replica at once: only one write per version can win,
        and losers see the recorded outcome. Returns the position written, if any.
        """
        now = self.clock.now()
        changed: list[BaseAggregate[str]] = []
        try:
            if aggregate_id.startswith("msn_"):
                mission = self.get_mission(aggregate_id)
                mission.advance_clock(now)
                effects = self.mandate_effects(mission, actor=SCHEDULER, now=now)
                changed = [*effects.changed, mission]
                expect = effects.expect
            elif aggregate_id.startswith("prp_"):
                proposal = self.get_proposal(aggregate_id)
                proposal.advance_clock(now)
                changed, expect = [proposal], {}
            elif aggregate_id.startswith("mdt_"):
                mandate = self.get_mandate(aggregate_id)
                mandate.advance_clock(now)
                changed, expect = [mandate], {}
            elif aggregate_id.startswith("tsk_"):
                task = self._get(AccessRequest, aggregate_id, "access request")
                task.advance_clock(now)
                changed, expect = [task], {}
            else:
                return None
            if not any(a.pending_events for a in changed):
                return None
            name_the_write(changed, changed[-1])  # the Mission, proposal or Mandate itself
            recordings = self.save(*changed, expect=expect or None)
        except (IntegrityError, NotFound):
            return None  # another process recorded it first (or it is gone)
        finally:
            # Written outside ``execute``: whatever commands cached of these is now old.
            self._command_cache.forget([aggregate_id, *(a.id for a in changed)])
        return recordings[-1].notification.id
