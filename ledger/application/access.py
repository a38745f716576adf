"""Access requests (AuthZEN Access Request and Approval profile, SPEC 7.1): submitting a
requestable denial, approving, denying, cancelling, and spending an approval's uses.

The binding token's signature is verified by the caller (the API holds the key directory);
everything else about the denial is judged here, before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import rfc8785

from ledger.application.base import Changes, IdempotencyRequest, LedgerBase, Replay, Written, new_id
from ledger.domain.access_binding import (
    APPROVAL_STATE_TYP,
    access_request_endpoint,
    binding_hash,
    task_id_for,
    template_of,
)
from ledger.domain.access_requests import AccessRequest, Approval, DeniedRequest, Requester
from ledger.domain.actors import Actor
from ledger.domain.callbacks import Callback
from ledger.domain.errors import (
    ApprovalUnusable,
    ExpiredDenial,
    InvalidDenialBinding,
    InvalidRequest,
    InvalidTaskState,
    NotFound,
    NotRequestable,
    TaskExpired,
)
from ledger.domain.instants import epoch_seconds, parse_instant
from ledger.domain.subjects import PrincipalIdentity

DEFAULT_APPROVAL_LIFETIME = timedelta(hours=1)
MAX_USES_LIMIT = 1_000


@dataclass(frozen=True)
class AccessRequestInput:
    """An access request as the API received it, its binding token already verified."""

    subject: Mapping[str, Any]
    resource: Mapping[str, Any]
    action: Mapping[str, Any]
    context: Mapping[str, Any]
    denial: Mapping[str, Any]
    #: The verified claims of ``denial.binding_token`` (None when the denial carries none).
    binding: Mapping[str, Any] | None
    #: The key thumbprint ``context.proof`` names (bound by key, see access_binding).
    proof_jkt: str | None
    justification: str | None
    requested_until: datetime | None
    #: Where the task's state changes are announced (its host already checked).
    callback: Callback | None = None


class AccessRequestUseCases(LedgerBase):
    #: Pending lifetime of a task (ACCESS_REQUEST_TASK_TTL_SECONDS).
    access_request_ttl = timedelta(hours=24)

    def get_access_request(self, task_id: str) -> AccessRequest:
        return self._get(AccessRequest, task_id, "access request")

    def existing_access_request(self, binding_jti: str) -> AccessRequest | None:
        """The task already made with this binding token, if any (a replayed ``jti``)."""
        try:
            return self.get_access_request(task_id_for(binding_jti))
        except NotFound:
            return None

    # ------------------------------------------------------------------ submission

    def submit_access_request(
        self,
        *,
        actor: Actor,
        requester: PrincipalIdentity,
        scope: str,
        request: AccessRequestInput,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[AccessRequest]:
        """A new pending task for a requestable denial; a binding token used before answers
        with its task (``replayed``), never a second one."""
        now = self.clock.now()
        denied = self._denied_request(request, now)
        requested_until = request.requested_until
        if requested_until is not None and requested_until <= now:
            raise InvalidRequest.at("/requested_access/requested_until", "must be in the future")
        mission_id = str(request.binding["mission"]["ref"]) if request.binding else ""

        def command() -> Changes:
            task_id = task_id_for(denied.binding_jti)
            existing = self.existing_access_request(denied.binding_jti)
            if existing is not None:
                raise Replay(existing)
            try:
                mission = self.get_mission(mission_id)
            except NotFound:
                raise InvalidDenialBinding("the binding token names no Mission of ours") from None
            if not mission.is_effectively_active(now):
                raise NotRequestable(
                    f"the Mission is {mission.effective_state(now)}; only a denial under an "
                    "active Mission can be requested"
                )
            controls = mission.intent.get("controls") or {}
            task = AccessRequest.submit(
                task_id=task_id,
                issuer=self.issuer,
                denied=denied,
                requester=Requester(
                    actor=actor,
                    identity=requester,
                    scope=scope,
                    client_id=mission.client_id,
                    mission_id=mission.id,
                    mission_subject=mission.subject,
                    required_acr=controls.get("acr"),
                ),
                justification=request.justification,
                requested_until=requested_until,
                expires_at=now + self.access_request_ttl,
                now=now,
                callback=request.callback,
            )
            return Changes(task, [task], {mission.id: mission.version})

        return self.execute(command, idempotency, AccessRequest)

    def _denied_request(self, request: AccessRequestInput, now: datetime) -> DeniedRequest:
        """Judge the denial: requestable, bound to this request by a token of ours for our
        Access Request Service, and not expired (SPEC 7.1 errors, in that order of trust)."""
        claims = request.binding
        if claims is None:
            raise NotRequestable(
                "the denial carries no binding_token: it was not requestable (only a denial "
                "with context.access_request can be requested)"
            )
        if claims.get("aud") != access_request_endpoint(self.issuer):
            raise InvalidDenialBinding("the binding token is not addressed to this service")
        try:
            reason = str(claims["reason"])
            evaluation_id = str(claims["evaluation_id"])
            jti = str(claims["jti"])
            expected_hash = str(claims["binding_hash"])
            members = [str(m) for m in claims["binding_context_members"]]
            expires = min(
                datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo),
                parse_instant(claims["denial_expires_at"]),
            )
            if not isinstance(claims["mission"], Mapping) or not claims["mission"].get("ref"):
                raise TypeError
        except (KeyError, TypeError, ValueError, InvalidRequest):
            raise InvalidDenialBinding("the binding token lacks a required claim") from None
        template = template_of(reason)
        if template is None:
            raise NotRequestable(f"a {reason!r} denial cannot be lifted by an approval")
        echoed = request.denial.get("evaluation_id")
        if echoed is not None and echoed != evaluation_id:
            raise InvalidDenialBinding("denial.evaluation_id is not the bound evaluation's")
        if now >= expires:
            raise ExpiredDenial("the denial's access_request.expires_at has passed")
        try:
            actual = binding_hash(
                subject=request.subject,
                resource=request.resource,
                action=request.action,
                context=request.context,
                members=members,
                proof_jkt=request.proof_jkt,
            )
        except rfc8785.CanonicalizationError as error:  # the denied request's could be
            raise InvalidDenialBinding(
                "subject, resource, action or the authorization context cannot be "
                f"canonicalised (RFC 8785), so they are not the denied request's: {error}"
            ) from None
        if actual != expected_hash:
            raise InvalidDenialBinding(
                "subject, resource, action or the authorization context differ from the "
                "denied request"
            )
        return DeniedRequest(
            subject=request.subject,
            resource=request.resource,
            action=request.action,
            context={m: request.context[m] for m in members if m in request.context},
            reason=reason,
            template=template,
            evaluation_id=evaluation_id,
            binding_hash=expected_hash,
            binding_jti=jti,
            denial_expires_at=expires,
        )

    # ------------------------------------------------------------------ decisions

    def approve_access_request(
        self,
        *,
        actor: Actor,
        approver: PrincipalIdentity,
        task_id: str,
        reason: str | None,
        approved_until: datetime | None = None,
        max_uses: int | None = None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[AccessRequest]:
        """Approve a pending task: a signed approval for exactly the denied request, at most
        ``max_uses`` permits (default 1) until ``approved_until`` (default 1 h, never past
        the Mission's expiry)."""
        uses = 1 if max_uses is None else max_uses
        if not 1 <= uses <= MAX_USES_LIMIT:
            raise InvalidRequest.at("/max_uses", f"must be between 1 and {MAX_USES_LIMIT}")

        def command() -> Changes:
            now = self.clock.now()
            task = self.get_access_request(task_id)
            mission = self.get_mission(task.mission_id)
            until = approved_until or min(now + DEFAULT_APPROVAL_LIFETIME, mission.expires_at)
            if until <= now:
                raise InvalidRequest.at("/approved_until", "must be in the future")
            if until > mission.expires_at:
                raise InvalidRequest.at(
                    "/approved_until", "may not be later than the Mission's expires_at"
                )
            approval_id = new_id("apv")
            task.approve(
                approval=Approval(
                    approval_id=approval_id,
                    approved_until=until,
                    max_uses=uses,
                    state=self._approval_state(task, approval_id, until, uses, mission, now),
                ),
                reason=reason,
                approver=approver,
                actor=actor,
                now=now,
            )
            return Changes(task, [task], {})

        return self._decided_on_fresh_state(
            task_id, lambda: self.execute(command, idempotency, AccessRequest)
        )

    def _approval_state(
        self,
        task: AccessRequest,
        approval_id: str,
        until: datetime,
        max_uses: int,
        mission: Any,
        now: datetime,
    ) -> str:
        """The approval's ``state``: a compact JWS for the decision point (``aud`` = the
        PDP, this issuer), which verifies it without asking the database."""
        if self.signer is None:
            msg = "no signing keys are configured"
            raise RuntimeError(msg)
        claims = {
            "iss": self.issuer,
            "aud": self.issuer,
            "iat": epoch_seconds(now),
            "exp": epoch_seconds(until),
            "approval_id": approval_id,
            "task_id": task.id,
            "reason": task.reason,
            "binding_hash": task.binding_hash,
            "mission": {"ref": mission.id, "constraints_hash": mission.authority_hash},
            "max_uses": max_uses,
        }
        payload = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode()
        return self.signer.sign_compact(
            {"typ": APPROVAL_STATE_TYP}, payload, alg=self.mandate_alg, now=now
        )

    def deny_access_request(
        self,
        *,
        actor: Actor,
        task_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[AccessRequest]:
        return self._end_task(task_id, idempotency, AccessRequest.deny, actor, reason)

    def cancel_access_request(
        self,
        *,
        actor: Actor,
        task_id: str,
        reason: str | None,
        idempotency: IdempotencyRequest | None = None,
    ) -> Written[AccessRequest]:
        return self._end_task(task_id, idempotency, AccessRequest.cancel, actor, reason)

    def _end_task(
        self,
        task_id: str,
        idempotency: IdempotencyRequest | None,
        end: Callable[..., None],
        actor: Actor,
        reason: str | None,
    ) -> Written[AccessRequest]:
        """Deny or cancel: ``end`` is the aggregate's command (called with the task)."""

        def command() -> Changes:
            task = self.get_access_request(task_id)
            end(task, reason=reason, actor=actor, now=self.clock.now())
            return Changes(task, [task], {})

        return self._decided_on_fresh_state(
            task_id, lambda: self.execute(command, idempotency, AccessRequest)
        )

    # ------------------------------------------------------------------ re-evaluation

    def use_approval(
        self, *, task_id: str, approval_id: str, evaluation_id: str
    ) -> Written[AccessRequest]:
        """Spend one use of an approval for a permit: exactly once across every replica (a
        concurrent use moves the task's version on, and the loser retries on fresh state).
        Raises ``ApprovalUnusable`` when nothing is left to spend."""

        def command() -> Changes:
            now = self.clock.now()
            task = self.get_access_request(task_id)
            # Revocation and suspension override every approval, also one the decision
            # point judged a moment before a revoke landed: the Mission must still be
            # active at this version when the use commits.
            mission = self.get_mission(task.mission_id)
            if not mission.is_effectively_active(now):
                raise ApprovalUnusable(f"the Mission is {mission.effective_state(now)}")
            task.use_approval(approval_id=approval_id, evaluation_id=evaluation_id, now=now)
            return Changes(task, [task], {mission.id: mission.version})

        return self._decided_on_fresh_state(
            task_id, lambda: self.execute(command, None, AccessRequest)
        )

    def _decided_on_fresh_state(
        self, task_id: str, run: Callable[[], Written[AccessRequest]]
    ) -> Written[AccessRequest]:
        """Run a command on a task, and if it refuses, once more on state read from the store.

        Commands read through the command cache, which may hold a task as another replica
        left it before deciding it (say, still pending): a write from such a copy conflicts
        and is retried fresh, but a refusal writes nothing, so it is judged again on the
        current state before it is believed."""
        try:
            return run()
        except (ApprovalUnusable, InvalidTaskState, TaskExpired):
            task = self._command_cache.load(task_id)
            mission_id = getattr(task, "mission_id", None)
            self._command_cache.forget([task_id, *([mission_id] if mission_id else [])])
            return run()
