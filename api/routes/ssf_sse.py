"""SSE delivery of a stream's SETs (``urn:mission-ledger:delivery:sse``)."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, PrincipalDep, hidden
from api.json_body import JsonBodyRoute
from api.routes.common import ServicesDep
from api.services import Services
from api.whole_numbers import whole_number
from api.workers.sse_hub import UNKNOWN_CURSOR
from ledger.domain.actors import Actor
from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.streams import Stream

router = APIRouter(tags=["signals"], route_class=JsonBodyRoute)

SEND_TIMEOUT_SECONDS = 10
_STREAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # anything else never reaches the store


def owns(principal: Principal, stream: Stream) -> bool:
    return principal.is_admin or Actor.from_json(stream.owner).key == principal.actor().key


async def owned_stream(services: Services, principal: Principal, stream_id: str) -> Stream:
    """The caller's live stream, or the same 404 as an unknown one."""
    stream = None
    if _STREAM_ID.fullmatch(stream_id):
        try:
            stream = await run_in_threadpool(services.ledger.get_stream, stream_id)
        except NotFound:
            stream = None
    if stream is None or stream.deleted or not owns(principal, stream):
        raise hidden("stream", stream_id)
    return stream


def _cursor(value: str | None, pointer: str) -> int | None:
    if value is None or value == "":
        return None
    cursor = whole_number(value.strip())
    if cursor is None:
        raise InvalidRequest.at(pointer, "must be a non-negative integer event id")
    return cursor


def _last_event_id(value: str | None) -> int | None:
    """The ``Last-Event-ID`` cursor; one that is not an event id gets ``event: resync``
    (a 400 would make a browser's EventSource give up reconnecting for good)."""
    try:
        return _cursor(value, "/headers/Last-Event-ID")
    except InvalidRequest:
        return UNKNOWN_CURSOR


@dataclass(frozen=True)
class CredentialLease:
    """The credential an SSE subscription was opened with: an API key is looked up again
    in the key directory (in memory) on every check, a JWT lapses at its ``exp``."""

    services: Services
    token: str
    expires_at: float | None
    recheck_seconds: float

    def lapsed(self) -> str | None:
        if self.expires_at is not None and time.time() >= self.expires_at:
            return "the access token expired"
        if self.token.startswith("mlk_") and self.services.keys.verify(self.token) is None:
            return "the API key was revoked"
        return None

    def recheck_in(self) -> float:
        if self.expires_at is None:
            return self.recheck_seconds
        return max(0.0, min(self.recheck_seconds, self.expires_at - time.time()))


def _expiry(token: str) -> float | None:
    """The ``exp`` of a JWT that ``authenticate`` has already verified (None for API keys)."""
    if token.startswith("mlk_"):
        return None
    parts = token.split(".")
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return time.time()  # cannot happen after verification; fail closed
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def lease_of(request: Request, services: Services) -> CredentialLease:
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return CredentialLease(
        services=services,
        token=token,
        expires_at=_expiry(token),
        recheck_seconds=services.settings.sse_credential_recheck_seconds,
    )


@router.get("/ssf/streams/{stream_id}/events", response_model=None)
async def stream_events(
    stream_id: str,
    request: Request,
    principal: PrincipalDep,
    services: ServicesDep,
    after: Annotated[str | None, Query(max_length=20)] = None,
) -> EventSourceResponse:
    """The stream's SETs as Server-Sent Events: ``id`` = cursor, ``event: set``, ``data`` =
    compact SET; resume with ``Last-Event-ID`` (or ``?after=N``) gets exactly the events
    after it, in order; a cursor outside the retained log (or a ``Last-Event-ID`` that is
    not an event id) gets ``event: resync``. The stream ends, after an ``event:
    unauthorized``, within ``sse_credential_recheck_seconds`` of the revocation of the API
    key that opened it, or at the ``exp`` of its access token."""
    principal.require_stream_reading()
    await owned_stream(services, principal, stream_id)
    last = _last_event_id(request.headers.get("last-event-id"))
    if last is None:
        last = _cursor(after, "/after")
    return EventSourceResponse(
        services.requests.stream(services.sse.events(stream_id, last, lease_of(request, services))),
        ping=services.settings.sse_heartbeat_seconds,
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
