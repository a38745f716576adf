"""Metadata: the Mission Authority Server discovery document (public) and the OpenAPI
description of every route (any valid credential)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import PrincipalDep
from api.json_body import JsonBodyRoute
from api.openapi import served
from api.routes.common import ServicesDep

router = APIRouter(tags=["discovery"], route_class=JsonBodyRoute)


@router.get("/.well-known/mission-authority-server")
async def mas_metadata(services: ServicesDep) -> dict[str, Any]:
    issuer = services.settings.public_issuer
    return {
        "issuer": issuer,
        "mission_submission_endpoint": f"{issuer}/v1/proposals",
        "mission_status_endpoint": f"{issuer}/mission-status",
        "mission_status_signing_alg_values_supported": ["ES256", "EdDSA"],
        "mission_lifecycle_endpoint": f"{issuer}/v1/missions/{{mission_id}}/lifecycle",
        "mission_event_stream_endpoint": f"{issuer}/.well-known/ssf-configuration",
        "mission_max_stale_seconds": services.settings.mission_max_stale_seconds,
        "mission_auth_methods_supported": ["bearer"],
        "authorization_details_types_supported": ["mission_resource_access"],
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
    }


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, principal: PrincipalDep) -> JSONResponse:
    """The OpenAPI 3 description of this API, for any authenticated caller."""
    del principal  # authentication is the check
    return JSONResponse(served(request.app))
