"""``GET /metrics``: Prometheus text exposition, for operators and auditors (a scraper
sends a bearer credential like every other client)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import PrincipalDep
from api.json_body import JsonBodyRoute
from api.metrics import ServiceCollector
from api.routes.common import ServicesDep

router = APIRouter(tags=["operations"], route_class=JsonBodyRoute)


def _exposition(request: Request, services: ServicesDep) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(services, getattr(request.app.state, "scheduler", None)))
    return generate_latest(registry)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    policy.READ_METRICS.check(principal)
    body = await run_in_threadpool(_exposition, request, services)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
