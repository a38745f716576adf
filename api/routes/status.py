"""Mission Status (domain.md 3.6): a signed, audience-scoped statement of a Mission's state.

``POST /mission-status`` with a form (``mission_id``, ``audience?``, ``nonce?``) answers
``application/mission-status-response+jwt`` with ``Cache-Control: no-store``. Unknown ids
and ids outside the caller's view get the same 404.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, hidden
from api.consistency import Fresh
from api.json_body import JsonBodyError, JsonBodyRoute, max_depth_of, parse_json
from api.routes.common import ServicesDep, well_formed_id
from api.services import Services
from ledger.domain.authority import parse_authority_set
from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.instants import epoch_seconds, format_instant
from ledger.domain.missions import Mission
from ledger.domain.resources import resource_covers

router = APIRouter(tags=["mission status"], route_class=JsonBodyRoute)

MEDIA_TYPE = "application/mission-status-response+jwt"
TYP = "mission-status-response+jwt"
LIFETIME = timedelta(seconds=60)


async def _form(request: Request) -> dict[str, str]:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if media == "application/json":
        try:
            value = parse_json(body or b"{}", max_depth_of(request))
        except JsonBodyError as error:
            raise InvalidRequest.at("", str(error)) from None
        if not isinstance(value, dict):
            raise InvalidRequest.at("", "the body must be a JSON object")
        return {k: v for k, v in value.items() if isinstance(v, str)}
    if media not in ("application/x-www-form-urlencoded", ""):
        raise InvalidRequest.at("", "send an application/x-www-form-urlencoded form")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=False, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest.at("", "the form is not UTF-8") from None
    out: dict[str, str] = {}
    for key, values in parsed.items():
        if len(values) != 1:
            raise InvalidRequest.at(f"/{key}", "must appear once")
        out[key] = values[0]
    return out


def _audience_entries(mission: Mission, audience: str) -> list[dict[str, Any]]:
    """Only the entries for resources at or below the audience (never other audiences'):
    none for an audience that is not a URL with a host (``urlsplit`` refuses some texts
    outright, such as an unclosed bracket)."""
    try:
        parts = urlsplit(audience)
    except ValueError:
        return []
    if not parts.scheme or not parts.netloc:
        return []
    entries = parse_authority_set(mission.effective_authority()) if mission.authority_set else ()
    return [
        dict(entry.raw) for entry in entries if resource_covers(audience, "prefix", entry.resource)
    ]


@router.post("/mission-status", dependencies=[Fresh], response_model=None)
async def mission_status(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """The Mission's state, signed, fresh until ``fresh_until``."""
    policy.READ_MISSION_STATUS.check(principal)
    form = await _form(request)
    mission_id = form.get("mission_id")
    if not mission_id:
        raise InvalidRequest.at("/mission_id", "is required")
    audience = form.get("audience")
    nonce = form.get("nonce")
    if nonce is not None and len(nonce) > 256:
        raise InvalidRequest.at("/nonce", "is too long")
    if audience is not None and len(audience) > 2048:
        raise InvalidRequest.at("/audience", "is too long")
    mission = None
    if well_formed_id(mission_id, "msn"):
        try:
            mission = await run_in_threadpool(services.ledger.get_mission, mission_id)
        except NotFound:
            mission = None
    if mission is None or not policy.may_read_mission_status(principal, mission):
        raise hidden("Mission", mission_id)
    token = await run_in_threadpool(_sign, services, principal, mission, audience, nonce)
    return Response(token, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})


def _sign(
    services: Services,
    principal: Principal,
    mission: Mission,
    audience: str | None,
    nonce: str | None,
) -> str:
    now = services.clock.now()
    fresh_until = min(
        now + timedelta(seconds=services.settings.mission_max_stale_seconds), mission.expires_at
    )
    fresh_until = max(fresh_until, now)
    state = mission.effective_state(now)
    described: dict[str, Any] = {
        "id": mission.id,
        "issuer": mission.issuer,
        "authority_hash": mission.authority_hash,
        "state": state,
        "version": mission.version,
        "subject": mission.subject,
        "subject_provenance": mission.subject_provenance,
        "expires_at": format_instant(mission.expires_at),
        "fresh_until": format_instant(fresh_until),
    }
    if mission.suspend_until is not None and state == "suspended":
        described["suspend_until"] = format_instant(mission.suspend_until)
        described["on_expiry"] = mission.on_expiry
    if mission.successor is not None:
        described["successor"] = mission.successor
    if mission.containment_version:
        described["containment_version"] = mission.containment_version
    claims: dict[str, Any] = {
        "iss": services.settings.public_issuer,
        "aud": audience or principal.name,
        "sub": principal.name,
        "iat": epoch_seconds(now),
        "exp": epoch_seconds(now + LIFETIME),
        "mission": described,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if audience is not None:
        claims["authorization_details"] = _audience_entries(mission, audience)
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return services.keyring.sign_compact(
        {"typ": TYP}, payload, alg=services.settings.signing_alg, now=now
    )
