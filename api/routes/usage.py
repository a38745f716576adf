"""Usage reports: the outcome of a metered permit commits or releases its reservation."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from api import policy
from api.auth import PrincipalDep
from api.routes.common import ServicesDep, well_formed_id
from api.routes.gate import GatedRoute, allowed
from api.schemas import UsageIn
from api.views import usage_report_view
from ledger.application.metering import Report, Reported
from ledger.domain.errors import LedgerError, NotFound
from ledger.domain.metering import mission_of_evaluation

router = APIRouter(tags=["usage"], route_class=GatedRoute)


@router.post("/v1/usage", dependencies=[allowed(policy.REPORT_USAGE)])
async def report_usage(
    body: UsageIn, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    """``executed`` commits the permit's reservation (for ``amount`` when it is lower than
    the reserved amount), ``aborted`` releases it. Reporting the same ``evaluation_id`` again
    answers with the first outcome and changes nothing."""
    mission_id = mission_of_evaluation(body.evaluation_id)
    if mission_id is None or not well_formed_id(mission_id, "msn"):
        raise NotFound(f"no reservation for evaluation {body.evaluation_id!r}")
    outcome = await asyncio.wrap_future(
        services.meters.submit(
            Report(
                mission_id=mission_id,
                evaluation_id=body.evaluation_id,
                outcome=body.outcome,
                amount=body.amount,
                actor=principal.actor(),
            )
        )
    )
    if isinstance(outcome, LedgerError):
        raise outcome
    assert isinstance(outcome, Reported)
    return usage_report_view(body.evaluation_id, mission_id, outcome)
