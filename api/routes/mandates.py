"""Execution Mandates: issue, delegate, narrow, revoke, inspect, introspect; the instance
kill switch."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, hidden
from api.consistency import Fresh
from api.idempotency import idempotency_for
from api.mandate_views import introspection_view, issued_view
from api.replay import mandate_at, mandate_resource
from api.routes.common import ServicesDep, finish_write, refuse_null_body, well_formed_id
from api.routes.gate import GatedRoute, allowed
from api.schemas import NAME_PATTERN, IntrospectIn, MandateIn, NarrowIn, RevokeIn
from api.services import Services
from ledger.domain.delegation import ActorRef
from ledger.domain.errors import NotFound
from ledger.domain.instants import parse_as_of
from ledger.domain.mandate_claims import MANDATE_TYP
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission

router = APIRouter(tags=["mandates"], route_class=GatedRoute)

INACTIVE = {"active": False}


async def _mandate(services: Services, mandate_id: str) -> ExecutionMandate | None:
    if not well_formed_id(mandate_id, "mdt"):
        return None
    try:
        return await run_in_threadpool(services.ledger.get_mandate, mandate_id)
    except NotFound:
        return None


async def _own_mission(services: Services, principal: Principal, mission_id: str) -> Mission:
    mission = None
    if well_formed_id(mission_id, "msn"):
        try:
            mission = await run_in_threadpool(services.ledger.get_mission, mission_id)
        except NotFound:
            mission = None
    if mission is None or not policy.may_issue_mandate(principal, mission):
        raise hidden("Mission", mission_id)
    return mission


def _holder(body: MandateIn) -> ActorRef:
    return ActorRef(
        client_id=body.actor.client_id,
        instance_id=body.actor.instance_id,
        sub_profile=body.actor.sub_profile,
    )


@router.post(
    "/v1/missions/{mission_id}/mandates",
    status_code=201,
    dependencies=[allowed(policy.ISSUE_MANDATE)],
)
async def issue_mandate(
    mission_id: str,
    body: MandateIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Issue a signed Mandate to one instance of the Mission's agent (the caller)."""
    await _own_mission(services, principal, mission_id)
    idempotency = await idempotency_for(request, principal, 201)
    written = await run_in_threadpool(
        lambda: services.ledger.issue_mandate(
            actor=principal.actor(),
            mission_id=mission_id,
            holder=_holder(body),
            jkt=body.cnf.jkt,
            authorization_details=body.authorization_details,
            ttl_seconds=body.ttl_seconds,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=201)
    token = await run_in_threadpool(services.ledger.mandate_token, written.value)
    return issued_view(written.value, token)


@router.post(
    "/v1/mandates/{mandate_id}/delegations",
    status_code=201,
    dependencies=[allowed(policy.DELEGATE_MANDATE)],
)
async def delegate_mandate(
    mandate_id: str,
    body: MandateIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """A child Mandate for a sub-agent: a subset of the parent, never wider."""
    parent = await _mandate(services, mandate_id)
    if parent is None or not policy.may_delegate(principal, parent):
        raise hidden("Mandate", mandate_id)
    idempotency = await idempotency_for(request, principal, 201)
    written = await run_in_threadpool(
        lambda: services.ledger.delegate_mandate(
            actor=principal.actor(),
            parent_mandate_id=mandate_id,
            holder=_holder(body),
            jkt=body.cnf.jkt,
            authorization_details=body.authorization_details,
            ttl_seconds=body.ttl_seconds,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=201)
    token = await run_in_threadpool(services.ledger.mandate_token, written.value)
    return issued_view(written.value, token)


@router.post("/v1/mandates/{mandate_id}/narrow", dependencies=[allowed(policy.NARROW_MANDATE)])
async def narrow_mandate(
    mandate_id: str,
    body: NarrowIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Remove authority; answers the re-signed token (a new version)."""
    mandate = await _mandate(services, mandate_id)
    if mandate is None or not policy.may_narrow(principal, mandate):
        raise hidden("Mandate", mandate_id)
    idempotency = await idempotency_for(request, principal, 200)
    written = await run_in_threadpool(
        lambda: services.ledger.narrow_mandate(
            actor=principal.actor(),
            mandate_id=mandate_id,
            authorization_details=body.authorization_details,
            reason=body.reason,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=200)
    token = await run_in_threadpool(services.ledger.mandate_token, written.value)
    return issued_view(written.value, token)


@router.post("/v1/mandates/{mandate_id}/revoke", dependencies=[allowed(policy.REVOKE_MANDATE)])
async def revoke_mandate(
    mandate_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: RevokeIn | None = None,
) -> dict[str, Any]:
    """Revoke; every descendant cascades. Revoking an inactive Mandate changes nothing."""
    await refuse_null_body(request, body)
    if await _mandate(services, mandate_id) is None:
        raise hidden("Mandate", mandate_id)
    reason = None if body is None else body.reason
    idempotency = await idempotency_for(request, principal, 200)
    written = await run_in_threadpool(
        lambda: services.ledger.revoke_mandate(
            actor=principal.actor(), mandate_id=mandate_id, reason=reason, idempotency=idempotency
        )
    )
    await finish_write(services, response, written, status_code=200)
    return await run_in_threadpool(
        mandate_resource, services.ledger, written.value, services.clock.now()
    )


@router.post(
    "/v1/agents/{client_id}/instances/{instance_id}/revoke",
    dependencies=[allowed(policy.REVOKE_INSTANCE)],
)
async def revoke_instance(
    client_id: Annotated[str, Path(max_length=128, pattern=NAME_PATTERN)],
    instance_id: Annotated[str, Path(max_length=128, pattern=NAME_PATTERN)],
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: RevokeIn | None = None,
) -> dict[str, Any]:
    """The kill switch: every Mandate this instance holds ends, and it can hold no new one."""
    await refuse_null_body(request, body)
    reason = None if body is None else body.reason
    idempotency = await idempotency_for(request, principal, 200)
    written = await run_in_threadpool(
        lambda: services.ledger.revoke_instance(
            actor=principal.actor(),
            client_id=client_id,
            instance_id=instance_id,
            reason=reason,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=200)
    instance = written.value
    return {
        "client_id": instance.client_id,
        "instance_id": instance.instance_id,
        "revoked": instance.revoked,
        "mandates": [mandate_id for mandate_id, _ in instance.holdings],
    }


@router.get("/v1/mandates/{mandate_id}", dependencies=[allowed(policy.READ_MANDATE), Fresh])
async def get_mandate(
    mandate_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    as_of: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Claims, state, delegation chain, history and a plain-language rendering; with
    ``as_of`` (RFC 3339, not in the future) the same resource as it stood then, rebuilt from
    the events recorded by then (404 before its issuance)."""
    mandate = await _mandate(services, mandate_id)
    if mandate is None or not policy.may_see_mandate(principal, mandate):
        raise hidden("Mandate", mandate_id)
    now = services.clock.now()
    if as_of is None:
        return await run_in_threadpool(mandate_resource, services.ledger, mandate, now)
    instant = parse_as_of(as_of, now, "/as_of")
    return await run_in_threadpool(mandate_at, services.ledger, mandate_id, instant)


@router.post("/v1/mandates/introspect", dependencies=[allowed(policy.INTROSPECT_MANDATE), Fresh])
async def introspect(body: IntrospectIn, services: ServicesDep) -> dict[str, Any]:
    """``{active: false}`` for anything revoked, expired, cascaded, unknown or badly signed."""
    return await run_in_threadpool(_introspect, services, body.token)


def _introspect(services: Services, token: str) -> dict[str, Any]:
    now = services.clock.now()
    claims = services.tokens.verify(token, typ=MANDATE_TYP, now=now)
    if claims is None:
        return INACTIVE
    mandate_id = claims.get("jti")
    if not isinstance(mandate_id, str) or not mandate_id.startswith("mdt_"):
        return INACTIVE
    try:
        mandate = services.ledger.get_mandate(mandate_id)
    except NotFound:
        return INACTIVE
    if claims.get("iss") != mandate.issuer:
        return INACTIVE
    if not services.ledger.mandate_validity(mandate, now).active:
        return INACTIVE
    version = claims.get("mandate_version")
    return introspection_view(mandate, version if isinstance(version, int) else 0, now)
