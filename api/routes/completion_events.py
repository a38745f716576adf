"""Completion events: a reported business event fires ``terminal_when`` (discharge, M1)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import PrincipalDep, hidden
from api.idempotency import idempotency_for
from api.json_body import JsonBodyRoute
from api.routes.common import ServicesDep, finish_write
from api.routes.missions import _load
from api.schemas import CompletionEventIn
from api.views import mission_view
from ledger.domain.instants import parse_instant
from ledger.domain.roles import Role

router = APIRouter(tags=["missions"], route_class=JsonBodyRoute)


@router.post("/v1/missions/{mission_id}/completion-events")
async def report_completion_event(
    mission_id: str,
    body: CompletionEventIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Discharge the entries whose ``terminal_when`` names ``event_type`` (operator, or the
    Mission's own agent); a repeated ``event_id`` changes nothing."""
    principal.require(Role.OPERATOR, Role.AGENT)
    mission = await _load(services, principal, mission_id)
    if not (principal.has(Role.OPERATOR) or principal.owns_client(mission.client_id)):
        raise hidden("Mission", mission_id)
    occurred_at = parse_instant(body.occurred_at, "/occurred_at")
    idempotency = await idempotency_for(request, principal, 200)
    written = await run_in_threadpool(
        lambda: services.ledger.report_completion_event(
            actor=principal.actor(),
            mission_id=mission_id,
            event_type=body.event_type,
            event_id=body.event_id,
            occurred_at=occurred_at,
            entry_digest=body.entry_digest,
            idempotency=idempotency,
        )
    )
    await finish_write(services, response, written, status_code=200)
    return mission_view(written.value, services.clock.now())
