"""The Captive Portal API of egress denials (SPEC 7.2, RFC 8908): what a forward proxy's
511 ``Link`` points the agent at. The denial id is the denial's binding token
(``ledger.domain.egress``): verified here, on any replica, without a table."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.routes.common import ServicesDep
from api.routes.gate import GatedRoute, allowed
from ledger.domain.access_binding import BINDING_TOKEN_TYP, task_id_for
from ledger.domain.access_requests import APPROVED
from ledger.domain.egress import (
    CAPTIVE_JSON,
    EGRESS_DENIALS_PATH,
    captive_state,
    captive_url,
    user_portal_url,
)
from ledger.domain.errors import UnknownDenial

router = APIRouter(tags=["egress"], route_class=GatedRoute)

#: A compact JWS of a binding token is well under this.
MAX_DENIAL_ID = 4096


@router.get(
    EGRESS_DENIALS_PATH + "{denial_id}",
    dependencies=[allowed(policy.READ_EGRESS_DENIAL)],
    response_class=Response,
    responses={200: {"content": {CAPTIVE_JSON: {}}}},
)
async def egress_denial(
    services: ServicesDep,
    denial_id: str = Path(max_length=MAX_DENIAL_ID),
) -> Response:
    """``captive: true`` with the portal and the denial's ``access_request`` until the access
    request made with it is approved; then ``captive: false`` with ``seconds-remaining`` to
    ``approved_until``; captive again once that passes or the approval's uses are spent."""
    now = services.clock.now()
    claims = services.tokens.verify(denial_id, typ=BINDING_TOKEN_TYP, now=now)
    if claims is None or claims.get("egress") is not True or not isinstance(claims.get("jti"), str):
        raise UnknownDenial("no egress denial with this id")
    issuer = services.settings.public_issuer
    task_id = task_id_for(claims["jti"])
    task = await run_in_threadpool(services.ledger.existing_access_request, claims["jti"])
    approved = task is not None and task.status == APPROVED
    state = captive_state(
        task.approval if task is not None and approved else None,
        len(task.uses) if task is not None else 0,
        now,
    )
    body: dict[str, Any]
    if state.captive:
        body = {
            "captive": True,
            "user-portal-url": user_portal_url(issuer, task_id),
            "access-request": {
                "context": {
                    "access_request": {
                        "endpoint": claims.get("aud"),
                        "template": claims.get("template"),
                        "expires_at": claims.get("denial_expires_at"),
                        "binding_token": denial_id,
                        "captive_url": captive_url(issuer, denial_id),
                    }
                }
            },
        }
    else:
        body = {"captive": False, "seconds-remaining": state.seconds_remaining}
    return Response(
        orjson.dumps(body),
        media_type=CAPTIVE_JSON,
        headers={"Cache-Control": "private"},
    )
