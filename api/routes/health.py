"""Liveness and readiness (no credential needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.json_body import JsonBodyRoute
from api.routes.common import ServicesDep

router = APIRouter(tags=["health"], route_class=JsonBodyRoute)

MAX_READY_LAG = 1_000


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(services: ServicesDep) -> dict[str, Any] | JSONResponse:
    """The store answers and this replica's read models are within the lag bound and the
    staleness bound (``mission_max_stale_seconds``, the same one decisions fail closed on)."""
    try:
        head = await run_in_threadpool(services.follower.head)
    except Exception as error:
        return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
    lag = max(0, head - services.follower.position)
    staleness = services.follower.staleness()
    body = {
        "status": "ready",
        "head_position": head,
        "read_model_position": services.follower.position,
        "lag": lag,
        "staleness_seconds": round(staleness, 3),
        "max_stale_seconds": services.settings.mission_max_stale_seconds,
        "follower_healthy": services.follower.healthy,
    }
    # Past the staleness bound the decision point denies everything (stale_state): this
    # replica must leave the load balancer's rotation at the same moment.
    stale = staleness > services.settings.mission_max_stale_seconds
    if lag > MAX_READY_LAG or stale or not services.follower.healthy:
        body["status"] = "lagging"
        return JSONResponse(body, status_code=503)
    return body
