"""Completion events: a reported business event fires ``terminal_when`` (discharge, M1)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import PrincipalDep, hidden
from api.idempotency import idempotency_for
from api.routes.common import ServicesDep, finish_write
from api.routes.gate import GatedRoute, allowed
from api.routes.missions import load_mission
from api.schemas import CompletionEventIn
from api.views import mission_view
from ledger.domain.instants import parse_instant

router = APIRouter(tags=["missions"], route_class=GatedRoute)


@router.post(
    "/v1/missions/{mission_id}/completion-events",
    dependencies=[allowed(policy.REPORT_COMPLETION_EVENT)],
)
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
    mission = await load_mission(services, principal, mission_id)
    if not policy.may_report_completion_event(principal, mission):
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
