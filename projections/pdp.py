"""The policy decision point: one AuthZEN evaluation against the evaluation index.

A permit requires, each independently (SPEC "Continuous evaluation"):

1. the Mandate is valid by the domain's one rule (``ledger.domain.mandates.validity``):
   known, recorded active, within its validity window, every ancestor likewise, its
   Mission effectively active (or, in join mode, a Mission reference of ours that is);
2. a Mission the request names is the Mandate's own;
3. the actor named in ``subject`` is the Mandate's holder (client and instance);
4. the action on that resource lies inside the Mandate's authority and the Mission's
   Effective Authority Set (containment applied);
5. every constraint of a covering entry holds for the request's parameters
   (unknown constraint: deny);
6. for a metered action on a Mission with ``max_budget`` or ``max_calls`` (SPEC 7.3), a
   reservation on the Mission's Meter. Given a ``LeaseDraw`` (this replica's budget lease,
   in memory), the decision point takes the reservation from it and answers at once;
   otherwise (no lease covers it, an approval's use is to be spent first, a DPoP
   signature is still being checked) its answer is *pending* (``Decision.pending``): the
   caller has the Meter writer record the reservation and ``settle`` turns the outcome into
   the final answer (a permit with ``reservation_expires_at``, or a ``budget_exceeded``
   denial).

Denials carry a reason code from domain.md 3.4. A denial an approval can lift
(``ledger.domain.access_binding.REQUESTABLE``) also carries ``context.access_request`` with a
signed ``binding_token``; a re-evaluation presenting ``context.approval`` permits exactly the
approved request, once per use (standards.md 2.3, 2.6). Nothing here touches a database: a
permit under an approval names the use it spends (``Decision.use``), which the caller
records before answering, or answers ``Decision.fallback`` when none is left.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import orjson

from ledger.domain.access_binding import (
    APPROVAL_EXPIRED,
    APPROVAL_UNVERIFIABLE,
    BINDING_TOKEN_TYP,
    NEXT_ACTIONS,
    OUT_OF_SCOPE,
    POLICY_DENIED,
    access_request_endpoint,
    binding_context_members,
    binding_hash,
    template_of,
)
from ledger.domain.actions import is_concrete
from ledger.domain.authority import CompiledEntry
from ledger.domain.constraints import (
    PARAMETER_VIOLATION,
    Facts,
    Violation,
    evaluate_constraints,
)
from ledger.domain.egress import EGRESS, captive_url, egress_uri
from ledger.domain.errors import BudgetExceeded, InvalidRequest, LedgerError
from ledger.domain.mandates import Validity, validity
from ledger.domain.metering import (
    MAX_BUDGET,
    Bounds,
    MeteredCall,
    metered_call,
    metered_evaluation_id,
    reservation_expiry,
)
from ledger.domain.resources import parse_request
from ledger.signing.dpop import (
    BAD_SIGNATURE,
    ProofInvalid,
    ReadProof,
    ReplayCache,
    proven_key,
    read_dpop,
    verify_dpop,
)
from projections.evaluation_index import EvaluationIndex, MandateEntry, MissionEntry

# Reason codes (domain.md 3.4).
MISSION_INACTIVE = "mission_inactive"
MISSION_BINDING_FAILED = "mission_binding_failed"
CREDENTIAL_INVALID = "credential_invalid"
ACTOR_INVALID = "actor_invalid"
OUT_OF_AUTHORITY = "out_of_authority"
AUTHORITY_CONTAINED = "authority_contained"
STALE_STATE = "stale_state"
KEY_MISMATCH = "key_mismatch"
BUDGET_EXCEEDED = "budget_exceeded"

# next_action values (SPEC 7.1).
RETRY = "retry"


@dataclass(frozen=True)
class Subject:
    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    type: str
    id: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    subject: Subject
    action: Action
    resource: Resource
    context: Mapping[str, Any] = field(default_factory=dict)
    #: The DPoP proof at ``context.proof.dpop``, read (``read_proof``) by a caller that has
    #: its signature checked elsewhere meanwhile: the decision takes the proof's key as
    #: shown, and is an answer only once ``DecisionPoint.confirm`` has the verdict.
    deferred_proof: ReadProof | None = None

    def deferring(self, proof: ReadProof) -> Evaluation:
        """This request, to be decided with ``proof`` taken as shown (see above)."""
        return Evaluation(self.subject, self.action, self.resource, self.context, proof)


@dataclass(frozen=True)
class ApprovalUse:
    """The approval use a permit spends: recorded (once across replicas) before it is
    answered."""

    task_id: str
    approval_id: str


@dataclass(frozen=True)
class PendingReservation:
    """What a metered permit must reserve before it is answered (see ``settle``)."""

    mission_id: str
    bounds: Bounds
    call: MeteredCall
    mandate_id: str | None
    #: The permit's ``valid_until`` before the reservation's expiry bounds it (epoch s).
    valid_until: float
    #: The request and instant decided (a refusal is a requestable ``budget_exceeded``).
    request: Evaluation
    now: datetime
    #: Under an approved ``mission_budget_increase``: the approval whose use the permit
    #: spends (first) and that raises the bound by what the call needs (then).
    approval_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    decision: bool
    context: dict[str, Any]
    #: Evidence for the decision log, never sent: the Mandate the decision was about (one
    #: the index holds), the index position it was answered from, the approval it honoured.
    mandate_id: str | None = None
    position: int | None = None
    approval_id: str | None = None
    #: A permit under an approval: the use to record before answering it.
    use: ApprovalUse | None = None
    #: What to answer instead when that use cannot be recorded (none left).
    fallback: Decision | None = None
    #: Set on a metered permit until its reservation is recorded (never serialised).
    pending: PendingReservation | None = None

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "context": self.context}

    def at(self, position: int) -> Decision:
        """This decision, answered from the index at ``position``. (Every decision is
        copied once so; ``dataclasses.replace`` takes about 2.7 µs, this about 1.1 µs.)"""
        return Decision(
            self.decision,
            self.context,
            self.mandate_id,
            position,
            self.approval_id,
            self.use,
            self.fallback,
            self.pending,
        )


Signer = Callable[[Mapping[str, Any], bytes, datetime], str]
"""Signs a compact JWS (protected header members, payload, now) with the ledger's keys."""

ApprovalVerifier = Callable[[str, datetime], Mapping[str, Any] | None]
"""The claims of an approval ``state`` whose signature verifies (None otherwise)."""


@dataclass(frozen=True)
class AccessRequests:
    """What the decision point needs for requestable denials (SPEC 7.1)."""

    sign: Signer
    verify_approval: ApprovalVerifier
    denial_ttl_seconds: int


TokenResolver = Callable[[str], str | None]
"""Verifies a compact Mandate token and returns its ``jti`` (None when it does not verify)."""

Staleness = Callable[[], float]
"""Seconds since the index last confirmed it included everything in the store."""


class LeaseDraw(Protocol):
    """Reserve a metered permit's call from this replica's budget lease on the Mission, in
    memory (``MeterWriter.draw``): True when the lease covered it, False when it must be
    reserved durably."""

    def __call__(
        self,
        *,
        mission_id: str,
        call: MeteredCall,
        evaluation_id: str,
        mandate_id: str | None,
        expires_at: datetime,
        now: datetime,
    ) -> bool: ...


def _never_stale() -> float:
    return 0.0


_ID_PREFIX = "ev_" + secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def new_evaluation_id() -> str:
    """Unique across processes (a random per-process prefix) and cheap (a counter). The
    counter is zero-padded, so a process's ids sort in the order it made them (the decision
    log orders records of one instant by id)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


class DecisionPoint:
    def __init__(
        self,
        index: EvaluationIndex,
        *,
        issuer: str,
        resolve_token: TokenResolver,
        max_stale_seconds: int,
        staleness: Staleness = _never_stale,
        require_proof: bool = True,
        access_requests: AccessRequests | None = None,
        replay_cache_size: int = 200_000,
        draw: LeaseDraw | None = None,
        reservation_ttl_seconds: int = 300,
    ) -> None:
        """``draw``: this replica's budget leases (``MeterWriter.draw``); without it every
        metered permit is pending. ``reservation_ttl_seconds``: how long a reservation drawn
        here waits for its usage report (the ``reservation_ttl_seconds`` setting)."""
        self._index = index
        self._draw = draw
        self._reservation_ttl = reservation_ttl_seconds
        self._access = access_requests
        self._access_endpoint = access_request_endpoint(issuer)
        self._issuer = issuer
        self._resolve_token = resolve_token
        self._max_stale = max_stale_seconds
        self._staleness = staleness
        self._require_proof = require_proof
        self._replays = ReplayCache(capacity=replay_cache_size)
        #: Decisions made by this process (read by the metrics endpoint).
        self.permits = 0
        self.denials: Counter[str] = Counter()  # by context.reason

    def evaluate(self, request: Evaluation, now: datetime) -> Decision:
        """The answer; or a decision the caller finishes: a metered permit no lease covered
        (``Decision.pending``: reserve durably, then ``settle``), a permit under an approval
        (``Decision.use``: record the use, then ``spent``), and with a ``deferred_proof`` a
        decision to ``confirm`` once its signature is checked (its reservation is taken only
        then). A metered permit this replica's lease covers is drawn from it here (``draw``)
        and answered at once."""
        position = self._index.position
        decision = self._evaluate(request, now)
        pending = decision.pending
        if (
            pending is not None
            and pending.approval_id is None
            and request.deferred_proof is None
            and self._draw is not None
        ):
            expires_at = reservation_expiry(now, self._reservation_ttl)
            if self._draw(
                mission_id=pending.mission_id,
                call=pending.call,
                evaluation_id=decision.context["evaluation_id"],
                mandate_id=pending.mandate_id,
                expires_at=expires_at,
                now=now,
            ):
                final = _reserved(decision, pending, expires_at, position)
                self._count(final)
                return final
        decision = decision.at(position)
        if request.deferred_proof is None:
            self._answered(decision)
        return decision

    def read_proof(self, request: Evaluation, now: datetime) -> ReadProof | None:
        """The request's DPoP proof, all checked but its signature; None when it carries
        none, or one that fails a check (``evaluate`` then refuses it, saying which)."""
        proof = request.context.get("proof")
        if not isinstance(proof, Mapping):
            return None
        dpop = proof.get("dpop")
        if not isinstance(dpop, str):
            return None
        try:
            return read_dpop(dpop, htm=proof.get("htm"), htu=proof.get("htu"), now=now.timestamp())
        except ProofInvalid:
            return None

    def confirm(
        self, decision: Decision, proof: ReadProof, signature_valid: bool, now: datetime
    ) -> Decision:
        """The answer to a request decided with a ``deferred_proof`` once its signature is
        checked: the decision when the signature verifies and the proof is used for the
        first time (recorded now); otherwise a ``key_mismatch`` denial, whatever the
        decision was. (A proof that does not verify shows nothing, so no other reason is
        given for it.)"""
        if not signature_valid:
            final = _unproven(decision, BAD_SIGNATURE)
        elif not self._replays.first_use(proof.proof, now.timestamp()):
            final = _unproven(decision, _REPLAYED)
        else:
            final = decision
        self._answered(final)
        return final

    def spent(self, decision: Decision, recorded: bool) -> Decision:
        """A decision under an approval (``Decision.use``) once the use it spends is
        recorded (``recorded``: the decision stands; a metered one still to ``settle``) or
        found spent already (its ``fallback`` denial)."""
        final = decision if recorded else decision.fallback
        assert final is not None
        if final.pending is None:
            self._count(final)
        return final

    def settle(
        self, decision: Decision, refusal: BaseException | None, expires_at: datetime
    ) -> Decision:
        """The final answer to a pending metered permit once the Meter writer has recorded
        its reservation (``refusal`` None, expiring at ``expires_at``) or refused it."""
        pending = decision.pending
        assert pending is not None
        if refusal is None:
            final = _reserved(decision, pending, expires_at, decision.position)
        else:
            context = dict(decision.context)
            final = replace(
                decision,
                decision=False,
                context=_refused(context, refusal),
                pending=None,
                use=None,
                fallback=None,
                approval_id=None,
            )
            access = self._access
            if isinstance(refusal, BudgetExceeded) and access is not None:
                # Requestable (SPEC 7.1 ``mission_budget_increase``).
                final = self._requestable(pending.request, final, access, pending.now)
        self._count(final)
        return final

    def unreached(self, position: int, requested: int) -> Decision:
        """The ``stale_state`` answer to a request demanding a log position (``requested``)
        this replica, at ``position``, has not reached in time; counted as every answer."""
        decision = stale(new_evaluation_id(), position, requested)
        self._count(decision)
        return decision

    def _answered(self, decision: Decision) -> None:
        """Count ``decision`` unless the caller still finishes it (a reservation to take, an
        approval's use to record): every answer is counted once, as what was answered."""
        if decision.pending is None and decision.use is None:
            self._count(decision)

    def _count(self, decision: Decision) -> None:
        if decision.decision:
            self.permits += 1
        else:
            self.denials[str(decision.context.get("reason"))] += 1

    @property
    def position(self) -> int:
        """The position of the ledger the index holds now."""
        return self._index.position

    def fresh(self) -> bool:
        """The index confirmed, within the staleness bound, that it holds the whole store."""
        return self._staleness() < self._max_stale

    def stale_context(self, evaluation_id: str | None = None) -> dict[str, Any]:
        """The denial context of an answer refused because this replica is too stale."""
        return _deny(
            evaluation_id or new_evaluation_id(),
            STALE_STATE,
            f"this replica has not caught up with the ledger for more than "
            f"{self._max_stale} s; retry (here or on another replica)",
            next_action=RETRY,
        ).context

    def _evaluate(self, request: Evaluation, now: datetime) -> Decision:
        decision = self._decide(request, now)
        access = self._access
        if access is None or decision.context.get("reason") == STALE_STATE:
            return decision
        approval = request.context.get("approval")
        if approval is not None:
            return self._reevaluate(request, decision, approval, access, now)
        return self._requestable(request, decision, access, now)

    def _decide(self, request: Evaluation, now: datetime) -> Decision:
        evaluation_id = new_evaluation_id()
        # Freshness fails closed: an index that has not confirmed it holds everything in
        # the store for longer than the bound may be missing a revocation.
        budget = self._max_stale - self._staleness()
        if budget <= 0:
            return Decision(decision=False, context=self.stale_context(evaluation_id))
        context = request.context
        mandate_ref = context.get("mandate")
        if mandate_ref is not None:
            return self._with_mandate(request, mandate_ref, now, evaluation_id, budget)
        mission_ref = context.get("mission")
        if isinstance(mission_ref, Mapping):
            return self._join(request, mission_ref, now, evaluation_id, budget)
        return _deny(
            evaluation_id,
            CREDENTIAL_INVALID,
            "present a Mandate (context.mandate) or a Mission reference (context.mission)",
        )

    # ------------------------------------------------------------------ mandate mode

    def _with_mandate(
        self,
        request: Evaluation,
        reference: object,
        now: datetime,
        evaluation_id: str,
        budget: float,
    ) -> Decision:
        mandate_id = self._mandate_id(reference)
        mandate = None if mandate_id is None else self._index.mandate(mandate_id)
        if mandate is None:
            return _deny(evaluation_id, CREDENTIAL_INVALID, "unknown, inactive or invalid Mandate")
        mission_ref = request.context.get("mission")
        if isinstance(mission_ref, Mapping) and mission_ref.get("id") not in (
            None,
            mandate.mission_id,
        ):
            return _deny(
                evaluation_id,
                MISSION_BINDING_FAILED,
                "the Mandate is bound to a different Mission",
                mandate_id=mandate_id,
            )
        mission = self._index.mission(mandate.mission_id)
        verdict = validity(
            mandate,
            ancestors=self._index.chain(mandate),
            mission_state=None if mission is None else mission.mission.effective_state(now),
            # Revoking an instance revokes every Mandate it holds in the same write (and a
            # revoked instance holds no new one), so the index holds none of its Mandates.
            instance_revoked=False,
            now=now,
        )
        if not verdict.active:
            return _invalid(evaluation_id, verdict, mission, mandate.mandate_id)
        assert mission is not None
        actor = _actor_problem(request.subject, mandate.client_id, mandate.instance_id)
        if actor is not None:
            return _deny(
                evaluation_id, ACTOR_INVALID, actor, mission=mission, mandate_id=mandate_id
            )
        key = self._key_problem(
            request.context.get("proof"),
            mandate.jkt,
            now,
            required=not _is_token(reference),
            deferred=request.deferred_proof,
        )
        if key is not None:
            return _deny(evaluation_id, KEY_MISMATCH, key, mission=mission, mandate_id=mandate_id)
        return self._authority(
            request, mandate.entries, mission, now, evaluation_id, budget, mandate=mandate
        )

    def _mandate_id(self, reference: object) -> str | None:
        if not isinstance(reference, str) or not reference or len(reference) > 32_768:
            return None
        if reference.startswith("mdt_"):
            return reference
        if reference.count(".") == 2:
            return self._resolve_token(reference)
        return None

    # ------------------------------------------------------------------ key binding

    def _key_problem(
        self,
        proof: object,
        bound: str | None,
        now: datetime,
        *,
        required: bool,
        deferred: ReadProof | None = None,
    ) -> str | None:
        """Why the caller has not shown it holds the key the authority is bound to (None
        when it has). ``bound`` is the Mandate's ``cnf.jkt`` (None in join mode, where a
        proof is required but there is no Mandate key to compare it with). ``deferred``:
        the request's DPoP proof, read, whose signature and single use ``confirm`` checks."""
        if proof is None:
            if required or self._require_proof:
                return (
                    "present proof that the caller holds the Mandate's key: context.proof.jkt "
                    "(the thumbprint you verified) or context.proof.dpop (the DPoP proof)"
                )
            return None
        if not isinstance(proof, Mapping):
            return "context.proof must be an object"
        dpop = proof.get("dpop")
        if deferred is not None and dpop is deferred.token:
            proven = deferred.proof.jkt
        elif dpop is not None:
            try:
                verified = verify_dpop(
                    dpop, htm=proof.get("htm"), htu=proof.get("htu"), now=now.timestamp()
                )
            except ProofInvalid as error:
                return str(error)
            if not self._replays.first_use(verified, now.timestamp()):
                return _REPLAYED
            proven = verified.jkt
        else:
            jkt = proof.get("jkt")
            if not isinstance(jkt, str) or not jkt:
                return "context.proof needs jkt or dpop"
            proven = jkt
        if bound is not None and proven != bound:
            return "the caller's key is not the key the Mandate is bound to (cnf.jkt)"
        return None

    # ------------------------------------------------------------------ join mode

    def _join(
        self,
        request: Evaluation,
        reference: Mapping[str, Any],
        now: datetime,
        evaluation_id: str,
        budget: float,
    ) -> Decision:
        issuer = reference.get("issuer")
        if issuer is not None and issuer != self._issuer:
            return _deny(
                evaluation_id, MISSION_BINDING_FAILED, "the Mission reference names another issuer"
            )
        mission_id = reference.get("id")
        mission = self._index.mission(mission_id) if isinstance(mission_id, str) else None
        inactive = _mission_problem(mission, now)
        if inactive is not None:
            return _deny(evaluation_id, MISSION_INACTIVE, inactive, mission=mission)
        assert mission is not None
        actor = _actor_problem(request.subject, mission.mission.client_id, None)
        if actor is not None:
            return _deny(evaluation_id, ACTOR_INVALID, actor, mission=mission)
        key = self._key_problem(
            request.context.get("proof"), None, now, required=True, deferred=request.deferred_proof
        )
        if key is not None:
            return _deny(evaluation_id, KEY_MISMATCH, key, mission=mission)
        return self._authority(request, mission.entries, mission, now, evaluation_id, budget)

    # ------------------------------------------------------------------ authority

    def _authority(
        self,
        request: Evaluation,
        entries: tuple[CompiledEntry, ...],
        mission: MissionEntry,
        now: datetime,
        evaluation_id: str,
        budget: float,
        *,
        mandate: MandateEntry | None = None,
    ) -> Decision:
        uri = request.resource.id
        action = request.action.name
        mandate_id = None if mandate is None else mandate.mandate_id
        target = parse_request(egress_uri(uri) if request.resource.type == EGRESS else uri)
        covering = [e for e in entries if e.covers(target, action)] if is_concrete(action) else []
        if not covering:
            return _deny(
                evaluation_id,
                OUT_OF_AUTHORITY,
                f"{action!r} on {uri!r} is outside the granted authority",
                mission=mission,
                mandate_id=mandate_id,
            )
        if not any(e.covers(target, action) for e in mission.entries) or any(
            c.covers(target, action) for c in mission.contained
        ):
            return _deny(
                evaluation_id,
                AUTHORITY_CONTAINED,
                f"{action!r} on {uri!r} has been contained on the Mission",
                mission=mission,
                mandate_id=mandate_id,
            )
        facts = Facts(
            action_properties=request.action.properties,
            resource_properties=request.resource.properties,
            context=request.context,
            now=now,
        )
        permitting: CompiledEntry | None = None
        violation: Violation | None = None
        for compiled in covering:
            violation = evaluate_constraints(compiled.entry.constraints, facts, validated=True)
            if violation is None:
                permitting = compiled
                break
        if permitting is not None and mission.bounds is not None:
            metered = metered_call(
                mission.bounds,
                permitting.entry.constraints,
                request.action.properties,
                request.context,
            )
            if isinstance(metered, Violation):
                violation = metered
            elif metered is not None:
                return _pending(evaluation_id, mission, mandate, now, budget, metered, request)
        if violation is None:
            return _permit(evaluation_id, mission, mandate, now, budget)
        return _deny(
            evaluation_id,
            violation.reason,
            violation.detail,
            mission=mission,
            constraint=violation.constraint,
            mandate_id=mandate_id,
        )

    # ------------------------------------------------------------------ requestable

    def _requestable(
        self, request: Evaluation, decision: Decision, access: AccessRequests, now: datetime
    ) -> Decision:
        """A denial an approval can lift, with ``context.access_request`` and its signed
        ``binding_token`` (minted here, without the database); any other decision as is."""
        reason = decision.context.get("reason")
        template = None if decision.decision or reason is None else template_of(str(reason))
        mission = decision.context.get("mission")
        if template is None or not isinstance(mission, Mapping):
            return decision
        entry = self._index.mission(str(mission["id"]))
        expires = now.timestamp() + access.denial_ttl_seconds
        members = binding_context_members(request.context)
        claims = {
            "iss": self._issuer,
            "aud": self._access_endpoint,
            "iat": int(now.timestamp()),
            "exp": int(expires),
            "jti": secrets.token_urlsafe(18),
            "evaluation_id": decision.context["evaluation_id"],
            "denial_expires_at": _instant(expires),
            "reason": reason,
            "template": template,
            "binding_hash": _binding_of(request, members),
            "binding_context_members": members,
            "mission": {
                "ref": mission["id"],
                "status": "unknown" if entry is None else entry.mission.effective_state(now),
            },
        }
        egress = request.resource.type == EGRESS
        if egress:
            claims["egress"] = True
        token = access.sign(
            {"typ": BINDING_TOKEN_TYP},
            orjson.dumps(claims),
            now,
        )
        context = dict(decision.context)
        context["evaluated_at"] = _instant(now.timestamp())
        context["access_request"] = {
            "endpoint": self._access_endpoint,
            "template": template,
            "expires_at": claims["denial_expires_at"],
            "binding_token": token,
        }
        if egress:
            context["access_request"]["captive_url"] = captive_url(self._issuer, token)
        return replace(decision, decision=False, context=context)

    def _reevaluate(
        self,
        request: Evaluation,
        decision: Decision,
        approval: object,
        access: AccessRequests,
        now: datetime,
    ) -> Decision:
        """A re-evaluation under ``context.approval`` (standards.md 2.6): permits exactly the
        approved request while the Mission stays active, until ``approved_until``, spending
        one use; otherwise a denial with a registered reason and ``next_action``."""
        evaluation_id = str(decision.context["evaluation_id"])
        claims = _approval_claims(approval, access, self._issuer, now)
        if claims is None:
            return _reject(
                decision, APPROVAL_UNVERIFIABLE, "the approval does not verify (state, aud, id)"
            )
        members = binding_context_members(request.context)
        mission = decision.context.get("mission")
        if claims["binding_hash"] != _binding_of(request, members) or (
            isinstance(mission, Mapping) and mission.get("id") != claims["mission"].get("ref")
        ):
            return _reject(
                self._requestable(request, decision, access, now),
                OUT_OF_SCOPE,
                "the approval is for another subject, resource, action or context",
            )
        pending = decision.pending
        if pending is not None and claims["reason"] == BUDGET_EXCEEDED:
            return self._raising(decision, pending, claims, request, access, now)
        if decision.decision:
            return decision  # permitted without it: nothing to spend
        if decision.context.get("reason") != claims["reason"]:
            return _reject(
                decision,
                POLICY_DENIED,
                f"current policy denies the request ({decision.context.get('reason')}); the "
                "approval lifts only the denial it was granted for",
            )
        requestable = self._requestable(request, decision, access, now)
        expired = _reject(
            requestable,
            APPROVAL_EXPIRED,
            "the approval is past its approved_until or its uses are spent",
        )
        if now.timestamp() >= claims["exp"]:
            return expired
        context: dict[str, Any] = {
            "evaluation_id": evaluation_id,
            "approval": {"id": claims["approval_id"], "max_uses": claims["max_uses"]},
            "valid_until": _instant(min(claims["exp"], now.timestamp() + self._budget())),
        }
        if isinstance(mission, Mapping):
            context["mission"] = dict(mission)
        return Decision(
            decision=True,
            context=context,
            approval_id=claims["approval_id"],
            use=ApprovalUse(task_id=claims["task_id"], approval_id=claims["approval_id"]),
            fallback=expired,
        )

    def _raising(
        self,
        decision: Decision,
        pending: PendingReservation,
        claims: Mapping[str, Any],
        request: Evaluation,
        access: AccessRequests,
        now: datetime,
    ) -> Decision:
        """A metered request under an approved ``mission_budget_increase``: a pending permit
        that first spends a use of the approval (``Decision.use``; none left: ``fallback``),
        then reserves with the Meter's bound raised by exactly what it needs."""
        denial = replace(
            decision,
            decision=False,
            pending=None,
            context={
                "evaluation_id": decision.context["evaluation_id"],
                "reason": BUDGET_EXCEEDED,
                "reason_admin": {"en": "the approved increase is spent"},
                "mission": decision.context["mission"],
            },
        )
        expired = _reject(
            self._requestable(request, denial, access, now),
            APPROVAL_EXPIRED,
            "the approval is past its approved_until or its uses are spent",
        )
        if now.timestamp() >= claims["exp"]:
            return expired
        context = dict(decision.context)
        context["approval"] = {"id": claims["approval_id"], "max_uses": claims["max_uses"]}
        return replace(
            decision,
            context=context,
            approval_id=claims["approval_id"],
            use=ApprovalUse(task_id=claims["task_id"], approval_id=claims["approval_id"]),
            fallback=expired,
            pending=replace(pending, approval_id=claims["approval_id"]),
        )

    def _budget(self) -> float:
        return max(0.0, self._max_stale - self._staleness())


def _binding_of(request: Evaluation, members: list[str]) -> str:
    return binding_hash(
        subject={
            "type": request.subject.type,
            "id": request.subject.id,
            "properties": request.subject.properties,
        },
        resource={
            "type": request.resource.type,
            "id": request.resource.id,
            "properties": request.resource.properties,
        },
        action={"name": request.action.name, "properties": request.action.properties},
        context=request.context,
        members=members,
        proof_jkt=proven_key(request.context.get("proof")),
    )


def _approval_claims(
    approval: object, access: AccessRequests, issuer: str, now: datetime
) -> dict[str, Any] | None:
    """The verified claims of ``context.approval`` (the task result's unchanged ``approval``
    object), or None when it is not one this issuer granted for this PDP."""
    if not isinstance(approval, Mapping):
        return None
    state = approval.get("state")
    if not isinstance(state, str) or len(state) > 16_384:
        return None
    claims = access.verify_approval(state, now)
    if claims is None or claims.get("iss") != issuer or claims.get("aud") != issuer:
        return None
    try:
        checked = {
            "approval_id": str(claims["approval_id"]),
            "task_id": str(claims["task_id"]),
            "reason": str(claims["reason"]),
            "binding_hash": str(claims["binding_hash"]),
            "mission": dict(claims["mission"]),
            "max_uses": int(claims["max_uses"]),
            "exp": int(claims["exp"]),
        }
    except (KeyError, TypeError, ValueError):
        return None
    if approval.get("id") != checked["approval_id"]:
        return None
    return checked


def _reject(decision: Decision, reason: str, detail: str) -> Decision:
    """A re-evaluation denial: ``reason`` and its ``next_action`` (standards.md 2.6); the
    denial's ``access_request`` is kept where asking again can help."""
    context = dict(decision.context)
    context.pop("valid_until", None)
    context.pop("mandate", None)
    if context.get("reason") not in (None, reason):
        detail = f"{detail} (underlying reason: {context['reason']})"
    context["reason"] = reason
    context["reason_admin"] = {"en": detail}
    context["next_action"] = NEXT_ACTIONS[reason]
    if NEXT_ACTIONS[reason] != "request":
        context.pop("access_request", None)
        context.pop("evaluated_at", None)
    return replace(decision, decision=False, context=context, use=None, fallback=None, pending=None)


def _is_token(reference: object) -> bool:
    """A compact Mandate token (signed, carrying its own ``cnf``), not a bare id."""
    return isinstance(reference, str) and reference.count(".") == 2


def _invalid(
    evaluation_id: str, verdict: Validity, mission: MissionEntry | None, mandate_id: str
) -> Decision:
    """The denial for a Mandate that the domain's validity rule finds invalid."""
    reason = verdict.reason or ""
    if reason.startswith("mission_"):
        detail = (
            "the Mission is not active"
            if reason == "mission_inactive"
            else f"the Mission is {reason.removeprefix('mission_')}"
        )
        return _deny(
            evaluation_id, MISSION_INACTIVE, detail, mission=mission, mandate_id=mandate_id
        )
    detail = _CREDENTIAL_DETAILS.get(reason) or f"the Mandate is {verdict.state}"
    return _deny(evaluation_id, CREDENTIAL_INVALID, detail, mandate_id=mandate_id)


_CREDENTIAL_DETAILS = {
    "mandate_expired": "the Mandate has expired",
    "mandate_not_yet_valid": "the Mandate is not yet valid",
    "parent_inactive": "a parent Mandate is not active",
}


def _mission_problem(mission: MissionEntry | None, now: datetime) -> str | None:
    if mission is None:
        return "the Mission is not active"
    state = mission.mission.effective_state(now)
    if state != "active":
        return f"the Mission is {state}"
    return None


def _actor_problem(subject: Subject, client_id: str, instance_id: str | None) -> str | None:
    if subject.type != "agent":
        return "subject.type must be 'agent'"
    if subject.id != client_id:
        return "the subject is not the holder of this authority"
    if instance_id is not None and subject.properties.get("instance_id") != instance_id:
        return "subject.properties.instance_id does not match the Mandate's holder"
    return None


def _permit(
    evaluation_id: str,
    mission: MissionEntry,
    mandate: MandateEntry | None,
    now: datetime,
    budget: float,
) -> Decision:
    """``valid_until`` is no later than the index's freshness plus the staleness bound
    (``budget`` is what remains of that bound now), the Mission's and the Mandate's expiry."""
    context = _permit_context(
        evaluation_id, mission, mandate, _valid_until(mission, mandate, now, budget)
    )
    return Decision(
        decision=True, context=context, mandate_id=None if mandate is None else mandate.mandate_id
    )


def _permit_context(
    evaluation_id: str, mission: MissionEntry, mandate: MandateEntry | None, valid_until: float
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "mission": {"id": mission.mission.id, "version": mission.version},
        "valid_until": _instant(valid_until),
    }
    if mandate is not None:
        context["mandate"] = {"id": mandate.mandate_id, "version": mandate.token_version}
    return context


def _pending(
    evaluation_id: str,
    mission: MissionEntry,
    mandate: MandateEntry | None,
    now: datetime,
    budget: float,
    call: MeteredCall,
    request: Evaluation,
) -> Decision:
    """A metered permit waiting for its reservation. Its ``evaluation_id`` names the Mission,
    so a usage report reaching any replica finds the Meter without a lookup."""
    assert mission.bounds is not None
    mission_id = mission.mission.id
    mandate_id = None if mandate is None else mandate.mandate_id
    valid_until = _valid_until(mission, mandate, now, budget)
    return Decision(
        decision=True,
        context=_permit_context(
            metered_evaluation_id(evaluation_id, mission_id), mission, mandate, valid_until
        ),
        mandate_id=mandate_id,
        pending=PendingReservation(
            mission_id=mission_id,
            bounds=mission.bounds,
            call=call,
            mandate_id=mandate_id,
            valid_until=valid_until,
            request=request,
            now=now,
        ),
    )


def _reserved(
    decision: Decision, pending: PendingReservation, expires_at: datetime, position: int | None
) -> Decision:
    """The permit a pending one becomes once its reservation, expiring at ``expires_at``,
    is taken: valid no longer than the reservation."""
    expires = expires_at.timestamp()
    context = dict(decision.context)
    context["valid_until"] = _instant(min(pending.valid_until, expires))
    context["reservation_expires_at"] = _instant(expires)
    return Decision(
        decision=True,
        context=context,
        mandate_id=decision.mandate_id,
        position=position,
        approval_id=decision.approval_id,
    )


def _valid_until(
    mission: MissionEntry, mandate: MandateEntry | None, now: datetime, budget: float
) -> float:
    bound = min(now.timestamp() + budget, mission.expires_ts)
    if mandate is not None:
        bound = min(bound, mandate.expires_ts)
    return bound


def _refused(context: dict[str, Any], refusal: BaseException) -> dict[str, Any]:
    """The denial context of a metered permit whose reservation was refused (or could not
    be recorded: that fails closed, as a transient ``stale_state``)."""
    denial: dict[str, Any] = {"evaluation_id": context["evaluation_id"]}
    if isinstance(refusal, BudgetExceeded):
        denial |= {"reason": BUDGET_EXCEEDED, "constraint": refusal.control}
    elif isinstance(refusal, InvalidRequest):
        denial |= {"reason": PARAMETER_VIOLATION, "constraint": MAX_BUDGET}
    else:
        denial |= {"reason": STALE_STATE, "next_action": RETRY}
    detail = (
        refusal.detail
        if isinstance(refusal, LedgerError)
        else "the reservation could not be recorded; retry"
    )
    denial["reason_admin"] = {"en": detail}
    denial["mission"] = context["mission"]
    return denial


def _instant(ts: float) -> str:
    """RFC 3339 UTC with whole seconds (what a PEP needs of ``valid_until``), rounded down."""
    return _second(int(ts))


@functools.lru_cache(maxsize=1024)
def _second(second: int) -> str:
    # (Every decision formats one to three instants, nearly all within the same seconds.)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _deny(
    evaluation_id: str,
    reason: str,
    detail: str,
    *,
    mission: MissionEntry | None = None,
    constraint: str | None = None,
    next_action: str | None = None,
    mandate_id: str | None = None,
) -> Decision:
    context: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "reason": reason,
        "reason_admin": {"en": detail},
    }
    if next_action is not None:
        context["next_action"] = next_action
    if mission is not None:
        context["mission"] = {"id": mission.mission.id, "version": mission.version}
    if constraint is not None:
        context["constraint"] = constraint
    return Decision(decision=False, context=context, mandate_id=mandate_id)


_REPLAYED = "the DPoP proof has been used before (jti replayed)"


def _unproven(decision: Decision, detail: str) -> Decision:
    """``decision`` refused because the proof it took as shown is not (``detail``)."""
    refused = _deny(str(decision.context["evaluation_id"]), KEY_MISMATCH, detail)
    mission = decision.context.get("mission")
    if mission is not None:
        refused.context["mission"] = mission
    return replace(refused, mandate_id=decision.mandate_id, position=decision.position)


def stale(evaluation_id: str, position: int, requested: int) -> Decision:
    """The denial of a request demanding a position this replica has not reached in time
    (``position``: the one it is at)."""
    denial = _deny(
        evaluation_id,
        STALE_STATE,
        f"this replica is at position {position}, behind the requested {requested}; retry",
        next_action=RETRY,
    )
    return Decision(denial.decision, denial.context, position=position)
