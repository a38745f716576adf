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
   (unknown constraint: deny).

Denials carry a reason code from domain.md 3.4. Nothing here touches a database.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.actions import is_concrete
from ledger.domain.authority import CompiledEntry
from ledger.domain.constraints import Facts, Violation, evaluate_constraints
from ledger.domain.mandates import Validity, validity
from ledger.domain.resources import parse_request
from ledger.signing.dpop import ProofInvalid, ReplayCache, verify_dpop
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


@dataclass(frozen=True, slots=True)
class Decision:
    decision: bool
    context: dict[str, Any]
    #: Evidence for the decision log, never sent: the Mandate the decision was about (one
    #: the index holds), the index position it was answered from, the approval it honoured.
    mandate_id: str | None = None
    position: int | None = None
    approval_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "context": self.context}


TokenResolver = Callable[[str], str | None]
"""Verifies a compact Mandate token and returns its ``jti`` (None when it does not verify)."""

Staleness = Callable[[], float]
"""Seconds since the index last confirmed it included everything in the store."""


def _never_stale() -> float:
    return 0.0


_ID_PREFIX = "ev_" + secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


def new_evaluation_id() -> str:
    """Unique across processes (a random per-process prefix) and cheap (a counter)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"


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
    ) -> None:
        self._index = index
        self._issuer = issuer
        self._resolve_token = resolve_token
        self._max_stale = max_stale_seconds
        self._staleness = staleness
        self._require_proof = require_proof
        self._replays = ReplayCache()
        #: Decisions made by this process (read by the metrics endpoint).
        self.permits = 0
        self.denials: Counter[str] = Counter()  # by context.reason

    def evaluate(self, request: Evaluation, now: datetime) -> Decision:
        position = self._index.position
        decided = self._evaluate(request, now)
        if decided.decision:
            self.permits += 1
        else:
            self.denials[str(decided.context.get("reason"))] += 1
        return Decision(decided.decision, decided.context, decided.mandate_id, position)

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
            request.context.get("proof"), mandate.jkt, now, required=not _is_token(reference)
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
        self, proof: object, bound: str | None, now: datetime, *, required: bool
    ) -> str | None:
        """Why the caller has not shown it holds the key the authority is bound to (None
        when it has). ``bound`` is the Mandate's ``cnf.jkt`` (None in join mode, where a
        proof is required but there is no Mandate key to compare it with)."""
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
        if dpop is not None:
            try:
                verified = verify_dpop(
                    dpop, htm=proof.get("htm"), htu=proof.get("htu"), now=now.timestamp()
                )
            except ProofInvalid as error:
                return str(error)
            if not self._replays.first_use(verified, now.timestamp()):
                return "the DPoP proof has been used before (jti replayed)"
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
        key = self._key_problem(request.context.get("proof"), None, now, required=True)
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
        target = parse_request(uri)
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
        violation: Violation | None = None
        for compiled in covering:
            violation = evaluate_constraints(compiled.entry.constraints, facts, validated=True)
            if violation is None:
                return _permit(evaluation_id, mission, mandate, now, budget)
        assert violation is not None
        return _deny(
            evaluation_id,
            violation.reason,
            violation.detail,
            mission=mission,
            constraint=violation.constraint,
            mandate_id=mandate_id,
        )


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
    bound = min(now.timestamp() + budget, mission.expires_ts)
    if mandate is not None:
        bound = min(bound, mandate.expires_ts)
    context: dict[str, Any] = {
        "evaluation_id": evaluation_id,
        "mission": {"id": mission.mission.id, "version": mission.version},
        "valid_until": _instant(bound),
    }
    if mandate is None:
        return Decision(decision=True, context=context)
    context["mandate"] = {"id": mandate.mandate_id, "version": mandate.token_version}
    return Decision(decision=True, context=context, mandate_id=mandate.mandate_id)


def _instant(ts: float) -> str:
    """RFC 3339 UTC with whole seconds (what a PEP needs of ``valid_until``), rounded down."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


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
