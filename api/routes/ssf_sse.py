"""SSE delivery of a stream's SETs (``urn:mission-ledger:delivery:sse``)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, PrincipalDep, hidden
from api.json_body import JsonBodyRoute
from api.routes.common import ServicesDep
from api.services import Services
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
    text = value.strip()
    if not text.isdigit() or len(text) > 18:
        raise InvalidRequest.at(pointer, "must be a non-negative integer event id")
    return int(text)


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
    after it, in order; a cursor outside the retained log gets ``event: resync``."""
    principal.require_stream_reading()
    await owned_stream(services, principal, stream_id)
    last = _cursor(request.headers.get("last-event-id"), "/headers/Last-Event-ID")
    if last is None:
        last = _cursor(after, "/after")
    return EventSourceResponse(
        services.sse.events(stream_id, last),
        ping=services.settings.sse_heartbeat_seconds,
        send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
