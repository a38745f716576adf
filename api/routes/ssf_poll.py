"""SSF poll delivery (RFC 8936): ``POST /ssf/poll/{stream_id}``.

Request (every member optional, names in camelCase): ``maxEvents`` (0 = acknowledge
only; absent = ``DEFAULT_MAX_EVENTS``; larger than ``MAX_EVENTS`` is capped),
``returnImmediately`` (default false: a long poll), ``ack`` (jtis the receiver has
processed) and ``setErrs`` (``{jti: {err, description}}``, SETs the receiver could not
process). Answer: 200 ``{"sets": {jti: compact SET}, "moreAvailable": bool}``.

Semantics, in order:

1. ``ack`` and ``setErrs`` mark those SETs of the stream acknowledged in the durable
   SET log (``set_log.acked_at``); an acknowledged SET is never returned again. A
   reported error is logged for the operator and also ends that SET's delivery: RFC
   8936 treats it as the receiver's final answer about that SET.
2. ``maxEvents: 0`` answers ``{"sets": {}}`` at once (acknowledge only).
3. Otherwise the oldest unacknowledged SETs, in the stream's ``seq`` order, up to
   ``maxEvents``; ``moreAvailable`` says whether more are waiting. Until acknowledged,
   the same SETs come back on every poll (retransmission).
4. Nothing pending and ``returnImmediately`` false: wait up to ``LONG_POLL_SECONDS``
   for the stream to get a new SET, then answer (possibly ``{"sets": {}}``). The wait
   is woken by this process's SSE hub (the log follower hands it every new SET and
   status change after the signal log has committed them), and re-checks the log every
   ``RECHECK_SECONDS`` regardless, so a lost wake-up only delays an answer.

A ``paused`` stream answers ``{"sets": {}}``: its SETs are held in the log and flow, in
order, once it is enabled again (a long poll waiting on a paused stream answers as soon
as it is). A ``disabled`` stream answers ``{"sets": {}}`` too, and the signal log
appends nothing for it while disabled.

Errors: a malformed body, or a stream whose delivery method is not poll, is 400 with
RFC 8936's ``{"err": "invalid_request", "description": ...}`` (not problem+json).
Credentials and ownership fail as everywhere else: 401, 403, and 404 for a stream that
is unknown or not the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.auth import PrincipalDep
from api.json_body import (
    DEFAULT_MAX_DEPTH,
    JsonBodyError,
    JsonBodyRoute,
    max_depth_of,
    parse_json,
)
from api.routes.common import ServicesDep
from api.routes.ssf_sse import owned_stream
from api.services import Services
from ledger.domain.streams import POLL, StreamStatus

router = APIRouter(tags=["signals"], route_class=JsonBodyRoute)
log = logging.getLogger("mission_ledger.poll")

#: How long a long poll waits for a new SET before answering ``{"sets": {}}``.
LONG_POLL_SECONDS = 25.0
#: A waiting poll re-reads the log this often even without a wake-up.
RECHECK_SECONDS = 5.0
#: How often a waiting poll checks whether its client went away.
DISCONNECT_CHECK_SECONDS = 1.0
DEFAULT_MAX_EVENTS = 100
MAX_EVENTS = 1000
MAX_ACKS = 1000
MAX_JTI = 256
MAX_ERR = 256
MAX_DESCRIPTION = 2048
_ACK_CHUNK = 200
_JTI = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII, no spaces or control characters
_ACK_SQL = "UPDATE set_log SET acked_at = %s WHERE stream_id = %s AND acked_at IS NULL AND jti IN "
_KNOWN = frozenset({"maxEvents", "returnImmediately", "ack", "setErrs"})
_NO_STORE = {"Cache-Control": "no-store"}


class PollRequestError(Exception):
    """A malformed poll request: 400 ``{"err": "invalid_request", "description"}``."""


def _bad(description: str) -> NoReturn:
    raise PollRequestError(description)


@dataclass(frozen=True)
class PollRequest:
    max_events: int
    return_immediately: bool
    ack: tuple[str, ...]
    set_errs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def parse_poll(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> PollRequest:
    """RFC 8936 section 2.4 request members, strictly typed. Unknown members are refused:
    the misspellings seen in the wild (``max_events``, ``acks``) would otherwise be
    ignored silently, leaving SETs unacknowledged forever."""
    try:
        body = parse_json(raw, max_depth)
    except JsonBodyError as refused:
        _bad(str(refused))
    if not isinstance(body, dict):
        _bad("the body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        _bad(f"unknown member {unknown[0]!r} (RFC 8936 names: {', '.join(sorted(_KNOWN))})")
    max_events = body.get("maxEvents", DEFAULT_MAX_EVENTS)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
        _bad("maxEvents must be a non-negative integer")
    immediately = body.get("returnImmediately", False)
    if not isinstance(immediately, bool):
        _bad("returnImmediately must be a boolean")
    ack = body.get("ack", [])
    if not isinstance(ack, list) or len(ack) > MAX_ACKS:
        _bad(f"ack must be an array of at most {MAX_ACKS} jti strings")
    for jti in ack:
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            _bad("each ack item must be a jti string")
    errors = body.get("setErrs", {})
    if not isinstance(errors, dict) or len(errors) > MAX_ACKS:
        _bad(f"setErrs must be an object of at most {MAX_ACKS} members keyed by jti")
    checked: dict[str, dict[str, str]] = {}
    for jti, error in errors.items():
        if not _JTI.fullmatch(jti):
            _bad("each setErrs member must be keyed by a jti")
        if not isinstance(error, dict):
            _bad(f"setErrs[{jti!r}] must be an object with err and description")
        err = error.get("err")
        description = error.get("description", "")
        if not isinstance(err, str) or not err or len(err) > MAX_ERR:
            _bad(f"setErrs[{jti!r}].err must be an error code string")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            _bad(f"setErrs[{jti!r}].description must be a string")
        checked[jti] = {"err": err, "description": description}
    return PollRequest(
        max_events=min(max_events, MAX_EVENTS),
        return_immediately=immediately,
        ack=tuple(dict.fromkeys(ack)),
        set_errs=checked,
    )


def _error(description: str) -> JSONResponse:
    return JSONResponse(
        {"err": "invalid_request", "description": description},
        status_code=400,
        headers=dict(_NO_STORE),
    )


# ---------------------------------------------------------------------- the log


@dataclass(frozen=True)
class Pending:
    sets: dict[str, str]
    more: bool
    #: No point waiting: the stream is gone or no longer polled.
    final: bool = False


def acknowledge(services: Services, stream_id: str, jtis: tuple[str, ...]) -> int:
    """Mark these SETs of the stream acknowledged; unknown jtis are ignored."""
    if not jtis:
        return 0
    now = int(services.clock.now().timestamp() * 1_000_000)
    done = 0
    with services.ledger.database.transaction() as cur:
        for start in range(0, len(jtis), _ACK_CHUNK):
            chunk = jtis[start : start + _ACK_CHUNK]
            marks = ", ".join(["%s"] * len(chunk))  # placeholders only, never values
            sql = _ACK_SQL + f"({marks})"
            cur.execute(sql, (now, stream_id, *chunk))
            done += max(cur.rowcount, 0)
    return done


def pending(services: Services, stream_id: str, limit: int) -> Pending:
    """Up to ``limit`` unacknowledged SETs in ``seq`` order, if the stream delivers now."""
    with services.ledger.database.snapshot() as cur:
        cur.execute(
            "SELECT status, deleted, method FROM ssf_streams WHERE stream_id = %s", (stream_id,)
        )
        stream = cur.fetchone()
        if stream is None:  # created a moment ago: the signal log has not seen it yet
            return Pending({}, more=False)
        if int(stream["deleted"]) or stream["method"] != POLL:
            return Pending({}, more=False, final=True)
        if stream["status"] != StreamStatus.ENABLED.value:
            return Pending({}, more=False)
        cur.execute(
            "SELECT jti, set_jwt FROM set_log WHERE stream_id = %s AND acked_at IS NULL "
            "ORDER BY seq LIMIT %s",
            (stream_id, max(limit, 0) + 1),
        )
        rows = cur.fetchall()
    sets = {str(r["jti"]): str(r["set_jwt"]) for r in rows[:limit]}
    return Pending(sets, more=len(rows) > limit)


# ---------------------------------------------------------------------- the endpoint


@router.post("/ssf/poll/{stream_id}", response_model=None)
async def poll(
    stream_id: str, request: Request, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """RFC 8936 poll: acknowledge, report errors, and receive the stream's pending SETs."""
    principal.require_stream_reading()
    try:
        asked = parse_poll(await request.body(), max_depth_of(request))
    except PollRequestError as refused:
        return _error(str(refused))
    stream = await owned_stream(services, principal, stream_id)
    if stream.config["delivery"]["method"] != POLL:
        return _error(f"stream {stream_id} is not delivered by poll ({POLL})")
    for jti, reported in asked.set_errs.items():
        log.warning(
            "receiver %r reported an error for SET %r of stream %s: %r %r",
            principal.name,
            jti,
            stream_id,
            reported["err"],
            reported["description"],
        )
    await asyncio.to_thread(acknowledge, services, stream_id, (*asked.ack, *asked.set_errs))
    if asked.max_events == 0:
        return _answer(Pending({}, more=False))
    # Writes answer before the signal log has their SETs (it trails the core read models):
    # let it reach what this replica's core read models hold, so a poll sees the SETs of
    # every change this replica has already answered for.
    await services.follower.wait_async(
        services.follower.core_position, services.settings.read_your_writes_timeout_seconds
    )
    found = await asyncio.to_thread(pending, services, stream_id, asked.max_events)
    if found.sets or found.final or asked.return_immediately:
        return _answer(found)
    return _answer(await _long_poll(services, request, stream_id, asked.max_events))


def _answer(found: Pending) -> JSONResponse:
    return JSONResponse({"sets": found.sets, "moreAvailable": found.more}, headers=dict(_NO_STORE))


async def _long_poll(services: Services, request: Request, stream_id: str, limit: int) -> Pending:
    """Wait until the stream has a SET to deliver, the time is up, or the client left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LONG_POLL_SECONDS
    channel = services.sse.join(stream_id)
    waiter = asyncio.Event()
    channel.waiters.add(waiter)
    try:
        while True:
            # Cleared before reading: a SET committed after the read sets it again.
            waiter.clear()
            found = await asyncio.to_thread(pending, services, stream_id, limit)
            checked_at = loop.time()
            if found.sets or found.final:
                return found
            while not waiter.is_set():
                now = loop.time()
                if now >= deadline:
                    return found
                if now - checked_at >= RECHECK_SECONDS:
                    break
                try:
                    await asyncio.wait_for(
                        waiter.wait(), min(DISCONNECT_CHECK_SECONDS, deadline - now)
                    )
                except TimeoutError:
                    if await request.is_disconnected():
                        return found
    finally:
        services.sse.leave(channel, waiter)
