"""Missions: board, record (and its past), lifecycle, containment, expansion, history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, hidden
from api.consistency import Fresh
from api.idempotency import idempotency_for
from api.replay import mission_at, mission_resource
from api.routes.common import ServicesDep, finish_write, optional_instant, well_formed_id
from api.routes.gate import GatedRoute, allowed
from api.schemas import NAME_PATTERN, ContainmentIn, ExpansionIn, LifecycleIn
from api.services import Services
from api.text_filters import text_filter
from api.views import event_view, mission_view, proposal_view
from ledger.application import Written
from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.instants import parse_as_of
from ledger.domain.metering import meter_id
from ledger.domain.missions import Mission
from ledger.domain.states import MissionState, OnExpiry, Operation

router = APIRouter(tags=["missions"], route_class=GatedRoute)


async def load_mission(
    services: Services,
    principal: Principal,
    mission_id: str,
    visible: Callable[[Principal, Mission], bool] = policy.may_see_mission,
) -> Mission:
    """The Mission, if the caller may see it (``visible``); otherwise the 404 of an unknown
    id."""
    mission = None
    if well_formed_id(mission_id, "msn"):
        try:
            mission = await run_in_threadpool(services.ledger.get_mission, mission_id)
        except NotFound:
            mission = None
    if mission is None or not visible(principal, mission):
        raise hidden("Mission", mission_id)
    return mission


@router.get("/v1/missions", dependencies=[allowed(policy.LIST_MISSIONS), Fresh])
async def list_missions(
    services: ServicesDep,
    state: Annotated[str | None, Query(max_length=32)] = None,
    subject: Annotated[str | None, text_filter(256)] = None,
    client_id: Annotated[str | None, Query(max_length=128, pattern=NAME_PATTERN)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Paged list in approval order; filters by stored state, subject ``sub`` and client."""
    if state is not None and state not in {s.value for s in MissionState}:
        raise InvalidRequest.at("/state", f"must be one of {[s.value for s in MissionState]}")
    items, next_cursor = await run_in_threadpool(
        services.missions.page,
        services.ledger.database,
        filters={"state": state, "subject_sub": subject, "client_id": client_id},
        cursor=cursor,
        limit=limit,
    )
    now = services.clock.now()
    return {"data": [mission_view(m, now) for m in items], "next_cursor": next_cursor}


@router.get("/v1/missions/{mission_id}", dependencies=[allowed(policy.READ_MISSION), Fresh])
async def get_mission(
    mission_id: str,
    principal: PrincipalDep,
    services: ServicesDep,
    as_of: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """The Mission now, or as it stood at ``as_of`` (RFC 3339, not in the future): the same
    resource, rebuilt from the events recorded by then (404 before its approval)."""
    mission = await load_mission(services, principal, mission_id)
    now = services.clock.now()
    if as_of is None:
        return await run_in_threadpool(mission_resource, services.ledger, mission, now)
    instant = parse_as_of(as_of, now, "/as_of")
    return await run_in_threadpool(mission_at, services.ledger, mission_id, instant)


@router.post(
    "/v1/missions/{mission_id}/lifecycle",
    dependencies=[allowed(policy.CHANGE_LIFECYCLE)],
)
async def change_lifecycle(
    mission_id: str,
    body: LifecycleIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """revoke / suspend / complete (operator) or resume (admin: the elevated operation)."""
    written = await change_lifecycle_of(services, principal, mission_id, body, request=request)
    await finish_write(services, response, written, status_code=200, announces=True)
    return mission_view(written.value, services.clock.now())


async def change_lifecycle_of(
    services: Services,
    principal: Principal,
    mission_id: str,
    body: LifecycleIn,
    *,
    request: Request | None = None,
) -> Written[Mission]:
    """A lifecycle operation (API and console alike); ``request`` for its
    ``Idempotency-Key``."""
    operation = Operation(body.operation)
    policy.lifecycle_gate(operation).check(principal)
    await load_mission(services, principal, mission_id)
    suspend_until = optional_instant(body.suspend_until, "/suspend_until")
    on_expiry = None if body.on_expiry is None else OnExpiry(body.on_expiry)
    idempotency = None if request is None else await idempotency_for(request, principal, 200)
    return await run_in_threadpool(
        lambda: services.ledger.change_lifecycle(
            actor=principal.actor(),
            mission_id=mission_id,
            operation=operation,
            reason=body.reason,
            nonce=body.nonce,
            expected_version=body.expected_version,
            suspend_until=suspend_until,
            on_expiry=on_expiry,
            idempotency=idempotency,
        )
    )


@router.post(
    "/v1/missions/{mission_id}/containment", dependencies=[allowed(policy.CONTAIN_MISSION)]
)
async def contain(
    mission_id: str,
    body: ContainmentIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Remove capability from the Mission's effective authority (removal only)."""
    written = await contain_mission(services, principal, mission_id, body, request=request)
    await finish_write(services, response, written, status_code=200, announces=True)
    return mission_view(written.value, services.clock.now())


async def contain_mission(
    services: Services,
    principal: Principal,
    mission_id: str,
    body: ContainmentIn,
    *,
    request: Request | None = None,
) -> Written[Mission]:
    """Containment (API and console alike); ``request`` for its ``Idempotency-Key``."""
    policy.CONTAIN_MISSION.check(principal)
    await load_mission(services, principal, mission_id)
    idempotency = None if request is None else await idempotency_for(request, principal, 200)
    return await run_in_threadpool(
        lambda: services.ledger.contain(
            actor=principal.actor(),
            mission_id=mission_id,
            contained=body.contained,
            reason=body.reason,
            nonce=body.nonce,
            expected_version=body.expected_version,
            idempotency=idempotency,
        )
    )


@router.post(
    "/v1/missions/{mission_id}/expansion",
    status_code=202,
    dependencies=[allowed(policy.PROPOSE_EXPANSION)],
)
async def propose_expansion(
    mission_id: str,
    body: ExpansionIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """A successor proposal; when approved, this Mission becomes ``superseded``."""
    mission = await load_mission(services, principal, mission_id)
    if not policy.may_propose_expansion(principal, mission):
        raise hidden("Mission", mission_id)
    idempotency = await idempotency_for(request, principal, 202)
    written = await run_in_threadpool(
        lambda: services.ledger.propose_expansion(
            actor=principal.actor(),
            mission_id=mission_id,
            intent=body.intent,
            authorization_details=body.authorization_details,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=202)
    return proposal_view(written.value, services.clock.now())


@router.get(
    "/v1/missions/{mission_id}/events",
    dependencies=[allowed(policy.READ_MISSION_EVENTS), Fresh],
)
async def mission_events(
    mission_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Every event of the Mission, in order, with positions and chain hashes."""
    return await _events(services, principal, mission_id, mission_id)


@router.get(
    "/v1/missions/{mission_id}/usage/events",
    dependencies=[allowed(policy.READ_MISSION_EVENTS), Fresh],
)
async def usage_events(
    mission_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """Every event of the Mission's Meter (SPEC 7.3), in order: reservations, committed usage
    (the executed members of ``UsageReported``, and ``UsageCommitted`` before 2026-12-06:
    their amounts sum to ``usage.spent``) and releases."""
    return await _events(services, principal, mission_id, meter_id(mission_id))


async def _events(
    services: Services, principal: Principal, mission_id: str, aggregate_id: str
) -> dict[str, Any]:
    """The events of one of the Mission's aggregates, for a caller who may see the Mission."""
    await load_mission(services, principal, mission_id)
    history = await run_in_threadpool(services.ledger.history, aggregate_id)
    return {"data": [event_view(e) for e in history], "next_cursor": None}
