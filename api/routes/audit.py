"""The audit surface (SPEC 7.4): the ordered, hash-chained log of every event."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api import policy
from api.routes.common import ServicesDep
from api.routes.gate import GatedRoute, allowed
from api.views import audit_entry_view

router = APIRouter(tags=["audit"], route_class=GatedRoute)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


@router.get("/v1/audit/log", dependencies=[allowed(policy.READ_AUDIT_LOG)])
async def audit_log(
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Events after position ``after`` in position order, each with its actor and chain
    hash; ``next_after`` is the position to ask from next (null at the head). Auditors
    verify the chain offline with ``mission-ledger audit verify`` or from these hashes."""
    page = await run_in_threadpool(services.ledger.audit_log, after, limit)
    next_after = page[-1].position if len(page) == limit else None
    return {"data": [audit_entry_view(e) for e in page], "next_after": next_after}
