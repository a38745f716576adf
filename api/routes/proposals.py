"""Proposals: submission by agents, the approval inbox, approve / deny / cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, hidden
from api.consistency import Fresh
from api.idempotency import idempotency_for
from api.routes.common import (
    ServicesDep,
    finish_write,
    optional_instant,
    refuse_null_body,
    well_formed_id,
)
from api.routes.gate import GatedRoute, allowed
from api.schemas import ApproveIn, DecisionIn, ProposalIn
from api.services import Services
from api.views import mission_view, proposal_view
from ledger.application import IdempotencyRequest, Written
from ledger.domain.errors import Forbidden, InvalidRequest, NotFound
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.domain.states import ProposalStatus

router = APIRouter(tags=["proposals"], route_class=GatedRoute)

#: What a decision on a proposal writes: the Mission it creates, or the denied proposal.
Decided = TypeVar("Decided", Mission, Proposal)


async def load_proposal(services: Services, principal: Principal, proposal_id: str) -> Proposal:
    """The proposal, if the caller may see it; otherwise the 404 of an unknown id."""
    proposal = None
    if well_formed_id(proposal_id, "prp"):
        try:
            proposal = await run_in_threadpool(services.ledger.get_proposal, proposal_id)
        except NotFound:
            proposal = None
    if proposal is None or not policy.may_see_proposal(principal, proposal):
        raise hidden("proposal", proposal_id)
    return proposal


@router.post("/v1/proposals", status_code=202, dependencies=[allowed(policy.SUBMIT_PROPOSAL)])
async def submit_proposal(
    body: ProposalIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Submit a Mission Intent (and optionally proposed authority) for approval."""
    if not policy.may_submit_for(principal, body.client_id):
        raise Forbidden("an agent may only submit proposals for its own client_id")
    assertion = (
        None
        if body.subject_token is None
        else await services.subject_tokens.verify(body.subject_token)
    )
    idempotency = await idempotency_for(request, principal, 202)
    written = await run_in_threadpool(
        lambda: services.ledger.submit_proposal(
            actor=principal.actor(),
            client_id=body.client_id,
            instance_id=body.instance_id,
            subject=None if body.subject is None else body.subject.model_dump(),
            subject_assertion=assertion,
            intent=body.intent,
            authorization_details=body.authorization_details,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=202)
    return proposal_view(written.value, services.clock.now())


@router.get("/v1/proposals", dependencies=[allowed(policy.READ_PROPOSALS), Fresh])
async def list_proposals(
    principal: PrincipalDep,
    services: ServicesDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The approval inbox (approvers), or an agent's own proposals."""
    if status is not None and status not in {s.value for s in ProposalStatus}:
        raise InvalidRequest.at("/status", f"must be one of {[s.value for s in ProposalStatus]}")
    client_filter = None if policy.sees_every_proposal(principal) else principal.client_id
    items, next_cursor = await run_in_threadpool(
        services.proposals.page,
        services.ledger.database,
        filters={"status": status, "client_id": client_filter},
        cursor=cursor,
        limit=limit,
    )
    now = services.clock.now()
    return {"data": [proposal_view(p, now) for p in items], "next_cursor": next_cursor}


@router.get("/v1/proposals/{proposal_id}", dependencies=[allowed(policy.READ_PROPOSALS), Fresh])
async def get_proposal(
    proposal_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    proposal = await load_proposal(services, principal, proposal_id)
    return proposal_view(proposal, services.clock.now())


@router.post(
    "/v1/proposals/{proposal_id}/approve",
    status_code=201,
    dependencies=[allowed(policy.DECIDE_PROPOSAL)],
)
async def approve_proposal(
    proposal_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: ApproveIn | None = None,
) -> dict[str, Any]:
    """Approve: create the Mission (201), optionally narrower and shorter-lived."""
    await refuse_null_body(request, body)
    written = await approve(services, principal, proposal_id, body or ApproveIn(), request=request)
    await finish_write(services, response, written, status_code=201)
    return mission_view(written.value, services.clock.now())


async def approve(
    services: Services,
    principal: Principal,
    proposal_id: str,
    body: ApproveIn,
    *,
    request: Request | None = None,
) -> Written[Mission]:
    """The approval (API and console alike); ``request`` for its ``Idempotency-Key``."""
    policy.DECIDE_PROPOSAL.check(principal)
    expires_at = optional_instant(body.expires_at, "/expires_at")  # the body's own check first
    return await _decide(
        services,
        principal,
        proposal_id,
        request,
        201,
        lambda idempotency: services.ledger.approve_proposal(
            actor=principal.actor(),
            approver=principal.identity(services.settings.public_issuer),
            proposal_id=proposal_id,
            authorization_details=body.authorization_details,
            expires_at=expires_at,
            approval_event_id=body.approval_event_id,
            idempotency=idempotency,
        ),
    )


@router.post("/v1/proposals/{proposal_id}/deny", dependencies=[allowed(policy.DECIDE_PROPOSAL)])
async def deny_proposal(
    proposal_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    await refuse_null_body(request, body)
    written = await deny(services, principal, proposal_id, body or DecisionIn(), request=request)
    await finish_write(services, response, written, status_code=200)
    return proposal_view(written.value, services.clock.now())


async def deny(
    services: Services,
    principal: Principal,
    proposal_id: str,
    body: DecisionIn,
    *,
    request: Request | None = None,
) -> Written[Proposal]:
    """The denial (API and console alike); ``request`` for its ``Idempotency-Key``."""
    policy.DECIDE_PROPOSAL.check(principal)
    return await _decide(
        services,
        principal,
        proposal_id,
        request,
        200,
        lambda idempotency: services.ledger.deny_proposal(
            actor=principal.actor(),
            proposal_id=proposal_id,
            reason=body.reason,
            idempotency=idempotency,
        ),
    )


async def _decide(
    services: Services,
    principal: Principal,
    proposal_id: str,
    request: Request | None,
    status_code: int,
    write: Callable[[IdempotencyRequest | None], Written[Decided]],
) -> Written[Decided]:
    """A decision (after the caller checked its policy gate) on a proposal the caller may
    see, 404 for any other; ``write`` runs in a thread under the ``Idempotency-Key`` of
    ``request`` (none from the console)."""
    await load_proposal(services, principal, proposal_id)
    idempotency = (
        None if request is None else await idempotency_for(request, principal, status_code)
    )
    return await run_in_threadpool(write, idempotency)


@router.post("/v1/proposals/{proposal_id}/cancel", dependencies=[allowed(policy.CANCEL_PROPOSAL)])
async def cancel_proposal(
    proposal_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    await refuse_null_body(request, body)
    body = body or DecisionIn()
    proposal = await load_proposal(services, principal, proposal_id)
    if not policy.may_cancel_proposal(principal, proposal):
        raise hidden("proposal", proposal_id)
    idempotency = await idempotency_for(request, principal, 200)
    written = await run_in_threadpool(
        lambda: services.ledger.cancel_proposal(
            actor=principal.actor(),
            proposal_id=proposal_id,
            reason=body.reason,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=200)
    return proposal_view(written.value, services.clock.now())
