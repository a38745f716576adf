"""The SSF 1.0 transmitter: metadata, stream management, status, subjects, verification.

``GET /.well-known/ssf-configuration`` is public. Everything under ``/ssf/`` needs the
``pep`` role (``admin`` passes), and a caller sees only the streams it created: any
other stream id answers the same 404 as an unknown one. The ``receiver`` role (the
``ssf.read`` OAuth scope; ``ssf.manage`` grants ``pep``) may read streams and their
status and receive their SETs, not create, change or verify them: 403.

Wire rules (OpenID SSF 1.0 section 8, reference/standards.md 3.3-3.6):

* create ``POST /ssf/streams`` answers 201 with the whole configuration; the body holds
  the receiver-supplied members (``delivery``, ``events_requested``, ``description``
  and our ``signing_alg`` and ``resources`` extensions); transmitter-supplied and unknown
  members are ignored; no ``delivery`` means poll, answered with the transmitter's
  ``endpoint_url``. A stream carries only the Missions and Mandates whose authority
  touches its ``resources``; a non-admin caller (a PEP) must give them, on create and on
  every update or replace, else 400 ``stream_resources_required``;
* read ``GET /ssf/streams[?stream_id=]`` answers one configuration, or without
  ``stream_id`` a JSON array of the caller's live streams (possibly ``[]``);
* update ``PATCH`` changes only the receiver members present (``null`` removes one);
  replace ``PUT`` removes every receiver member left out. In both, a transmitter
  member that is sent must equal its current value (``events_delivered`` the value
  before the update), else 400;
* delete answers 204; status ``GET|POST /ssf/status``; subjects add 200 (empty body),
  remove 204; verification 204, or 429 with ``Retry-After`` when requested faster than
  ``min_verification_interval``.

Every answer carries ``Cache-Control: no-store``; every write answers ``Ledger-Position``
once this replica's read models include it. Bodies are parsed here, by hand: anything
that is not a JSON object, or a member of the wrong type, is a 400 problem and writes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, hidden
from api.consistency import POSITION_HEADER, FreshSignals
from api.idempotency import idempotency_for
from api.json_body import JsonBodyError, JsonBodyRoute, json_of
from api.routes.common import ServicesDep, finish_write
from api.routes.ssf_sse import owned_stream
from api.services import Services
from ledger.application import Written
from ledger.domain.errors import FieldError, Gone, InvalidRequest, StreamResourcesRequired
from ledger.domain.streams import (
    DELIVERY_METHODS,
    EVENTS_SUPPORTED,
    POLL,
    RECEIVER_MEMBERS,
    SSE,
    TRANSMITTER_MEMBERS,
    Stream,
    StreamStatus,
    validate_receiver_config,
    validate_subject,
)
from ledger.persistence.snapshots import StateCodec

router = APIRouter(tags=["signals"], route_class=JsonBodyRoute)

SPEC_VERSION = "1_0"
OAUTH_SCHEME = {"spec_urn": "urn:ietf:rfc:6749"}
NO_STORE = {"Cache-Control": "no-store"}
MAX_REASON = 1024
MAX_STATE = 1024


# ---------------------------------------------------------------------- helpers


def poll_endpoint(issuer: str, stream_id: str) -> str:
    return f"{issuer}/ssf/poll/{stream_id}"


def sse_endpoint(issuer: str, stream_id: str) -> str:
    return f"{issuer}/ssf/streams/{stream_id}/events"


def _transmitter_url(issuer: str, stream_id: str, method: object) -> str | None:
    """The ``endpoint_url`` the transmitter supplies (poll and SSE), else None (push)."""
    if method == POLL:
        return poll_endpoint(issuer, stream_id)
    if method == SSE:
        return sse_endpoint(issuer, stream_id)
    return None


def config_view(services: Services, stream: Stream) -> dict[str, Any]:
    """The SSF stream configuration object (SSF 1.0 section 8.1.1)."""
    issuer = services.settings.public_issuer
    config = stream.config
    delivery = dict(config["delivery"])
    url = _transmitter_url(issuer, stream.stream_id, delivery.get("method"))
    if url is not None:
        delivery["endpoint_url"] = url
    view: dict[str, Any] = {
        "stream_id": stream.stream_id,
        "iss": issuer,
        "aud": stream.aud,
        "delivery": delivery,
        "events_supported": list(EVENTS_SUPPORTED),
    }
    if config.get("events_requested") is not None:
        view["events_requested"] = list(config["events_requested"])
    view["events_delivered"] = stream.events_delivered
    if config.get("description") is not None:
        view["description"] = config["description"]
    if config.get("resources") is not None:
        view["resources"] = list(config["resources"])
    view["min_verification_interval"] = int(
        services.ledger.min_verification_interval.total_seconds()
    )
    view["signing_alg"] = str(config.get("signing_alg", "ES256"))
    return view


def _json(view: Any, status_code: int = 200, headers: Mapping[str, str] = NO_STORE) -> JSONResponse:
    return JSONResponse(view, status_code=status_code, headers=dict(headers))


def _bad(pointer: str, message: str) -> NoReturn:
    raise InvalidRequest.at(pointer, message)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 problem."""
    if not (await request.body()).strip():
        _bad("", "the body must be a JSON object")
    try:
        value = await json_of(request)
    except JsonBodyError as error:
        _bad("", str(error))
    if not isinstance(value, dict):
        _bad("", "the body must be a JSON object")
    return value


def _stream_id_of(body: Mapping[str, Any]) -> str:
    value = body.get("stream_id")
    if not isinstance(value, str) or not value:
        _bad("/stream_id", "is required and must be a string")
    return value


def _optional_string(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        _bad(f"/{name}", f"must be a string of at most {limit} characters")
    return value


def _required_query(value: str | None) -> str:
    if value is None or value == "":
        _bad("/stream_id", "the stream_id query parameter is required")
    return value


def _same(sent: object, current: object) -> bool:
    """Whether a transmitter member sent back equals its current value (arrays of strings
    as sets: their order carries no meaning; ``aud`` may come back as a one-item array)."""
    if isinstance(sent, bool) or isinstance(current, bool):
        return sent is current
    if isinstance(sent, list) and isinstance(current, list):
        if not all(isinstance(item, str) for item in sent):
            return False
        return set(sent) == set(current)
    if isinstance(sent, list) and isinstance(current, str):
        return sent == [current]
    return sent == current


def _check_transmitter_members(body: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    for name in sorted(TRANSMITTER_MEMBERS - {"stream_id"}):
        if name in body and not _same(body[name], current.get(name)):
            _bad(
                f"/{name}",
                "is supplied by the transmitter and, when sent, must equal its current value",
            )
    delivery = body.get("delivery")
    if isinstance(delivery, Mapping) and "endpoint_url" in delivery:
        expected = _transmitter_url(
            str(current["iss"]), str(current["stream_id"]), delivery.get("method")
        )
        if expected is not None and delivery["endpoint_url"] != expected:
            _bad(
                "/delivery/endpoint_url",
                f"is supplied by the transmitter for this delivery method and must be {expected}",
            )


def _receiver_members(value: Mapping[str, Any]) -> dict[str, Any]:
    """The receiver-supplied members of ``value`` that carry a value (``null`` = absent)."""
    return {k: v for k, v in value.items() if k in RECEIVER_MEMBERS and v is not None}


async def _checked_config(
    services: Services, principal: Principal, receiver_config: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate the receiver members (400 before anything is written; a stream without
    ``resources`` only for an admin), then make sure a key of the stream's signing
    algorithm exists before any SET needs it."""
    config = validate_receiver_config(
        receiver_config, allow_http_loopback=services.ledger.allow_http_loopback_push
    )
    if "resources" not in config and not policy.may_run_unscoped_stream(principal):
        raise StreamResourcesRequired(
            "/resources: a PEP's stream names the resources it guards (an array of resource "
            "URIs; each covers itself and everything below it)",
            errors=(FieldError("/resources", "is required"),),
        )
    await run_in_threadpool(services.keyring.ensure, config["signing_alg"], services.clock.now())
    return config


async def _write(
    services: Services, stream_id: str, command: Callable[[], Written[Stream]]
) -> tuple[Written[Stream], dict[str, str]]:
    """Run a stream command in a worker thread (a stream deleted meanwhile is a 404), wait
    for read-your-writes, and give the headers of the answer (``Ledger-Position``)."""
    try:
        written = await run_in_threadpool(command)
    except Gone:
        raise hidden("stream", stream_id) from None
    holder = Response()
    await finish_write(services, holder, written, status_code=200, signals=True)
    headers = dict(NO_STORE)
    position = holder.headers.get(POSITION_HEADER)
    if position is not None:
        headers[POSITION_HEADER] = position
    return written, headers


# ---------------------------------------------------------------------- metadata


@router.get("/.well-known/ssf-configuration")
async def ssf_metadata(services: ServicesDep) -> dict[str, Any]:
    """Transmitter configuration metadata (SSF 1.0 section 7.1); no credential needed."""
    issuer = services.settings.public_issuer
    return {
        "spec_version": SPEC_VERSION,
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "delivery_methods_supported": list(DELIVERY_METHODS),
        "configuration_endpoint": f"{issuer}/ssf/streams",
        "status_endpoint": f"{issuer}/ssf/status",
        "add_subject_endpoint": f"{issuer}/ssf/subjects/add",
        "remove_subject_endpoint": f"{issuer}/ssf/subjects/remove",
        "verification_endpoint": f"{issuer}/ssf/verify",
        "authorization_schemes": [dict(OAUTH_SCHEME)],
        "default_subjects": "ALL",
    }


# ---------------------------------------------------------------------- streams


@router.post("/ssf/streams", status_code=201, response_model=None)
async def create_stream(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Create a stream for the caller (``aud`` = its principal name)."""
    principal.require_stream_management()
    body = await json_object(request)
    config = await _checked_config(services, principal, _receiver_members(body))
    idempotency = await idempotency_for(request, principal, 201)
    actor = principal.actor()
    written, headers = await _write(
        services,
        "",
        lambda: services.ledger.create_stream(
            actor=actor, aud=principal.name, receiver_config=config, idempotency=idempotency
        ),
    )
    return _json(config_view(services, written.value), 201, headers)


@router.get("/ssf/streams", dependencies=[FreshSignals], response_model=None)
async def read_streams(
    principal: PrincipalDep, services: ServicesDep, stream_id: str | None = None
) -> JSONResponse:
    """One stream's configuration, or without ``stream_id`` all of the caller's."""
    principal.require_stream_reading()
    if stream_id is not None:
        stream = await owned_stream(services, principal, stream_id)
        return _json(config_view(services, stream))
    streams = await run_in_threadpool(_owned_streams, services, principal)
    return _json([config_view(services, s) for s in streams])


def _owned_streams(services: Services, principal: Principal) -> list[Stream]:
    """The caller's live streams in creation order, from the signal log's stream table."""
    codec = StateCodec(services.ledger.mapper.transcoder)
    rows = services.ledger.database.fetchall(
        "SELECT snapshot FROM ssf_streams WHERE owner_key = %s AND deleted = 0 "
        "ORDER BY created_position",
        (principal.actor().key,),
    )
    streams = []
    for row in rows:
        stream = codec.thaw(bytes(row["snapshot"]))
        assert isinstance(stream, Stream)
        streams.append(stream)
    return streams


async def _reconfigure(
    request: Request, principal: Principal, services: Services, *, replace: bool
) -> JSONResponse:
    principal.require_stream_management()
    body = await json_object(request)
    stream_id = _stream_id_of(body)
    stream = await owned_stream(services, principal, stream_id)
    _check_transmitter_members(body, config_view(services, stream))
    if replace:
        merged = _receiver_members(body)
    else:
        merged = _receiver_members(stream.config)
        merged.update({name: body[name] for name in RECEIVER_MEMBERS & set(body)})
        merged = _receiver_members(merged)
    config = await _checked_config(services, principal, merged)
    actor = principal.actor()
    written, headers = await _write(
        services,
        stream_id,
        lambda: services.ledger.configure_stream(
            actor=actor, stream_id=stream_id, receiver_config=config
        ),
    )
    return _json(config_view(services, written.value), 200, headers)


@router.patch("/ssf/streams", response_model=None)
async def update_stream(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Change only the receiver members present in the body (``null`` removes one)."""
    return await _reconfigure(request, principal, services, replace=False)


@router.put("/ssf/streams", response_model=None)
async def replace_stream(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """Replace the receiver members: those left out are removed (delivery: poll)."""
    return await _reconfigure(request, principal, services, replace=True)


@router.delete("/ssf/streams", status_code=204, response_model=None)
async def delete_stream(
    principal: PrincipalDep, services: ServicesDep, stream_id: str | None = None
) -> Response:
    principal.require_stream_management()
    wanted = _required_query(stream_id)
    await owned_stream(services, principal, wanted)
    actor = principal.actor()
    _, headers = await _write(
        services, wanted, lambda: services.ledger.delete_stream(actor=actor, stream_id=wanted)
    )
    return Response(status_code=204, headers=headers)


# ---------------------------------------------------------------------- status


def _status_view(stream: Stream) -> dict[str, Any]:
    view: dict[str, Any] = {"stream_id": stream.stream_id, "status": stream.status}
    if stream.status_reason:
        view["reason"] = stream.status_reason
    return view


@router.get("/ssf/status", dependencies=[FreshSignals], response_model=None)
async def read_status(
    principal: PrincipalDep, services: ServicesDep, stream_id: str | None = None
) -> JSONResponse:
    principal.require_stream_reading()
    stream = await owned_stream(services, principal, _required_query(stream_id))
    return _json(_status_view(stream))


@router.post("/ssf/status", response_model=None)
async def update_status(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> JSONResponse:
    """``enabled`` delivers, ``paused`` holds (delivered in order on re-enable),
    ``disabled`` neither delivers nor holds."""
    principal.require_stream_management()
    body = await json_object(request)
    stream_id = _stream_id_of(body)
    status = body.get("status")
    if not isinstance(status, str) or status not in {s.value for s in StreamStatus}:
        _bad("/status", f"must be one of {', '.join(s.value for s in StreamStatus)}")
    reason = _optional_string(body, "reason", MAX_REASON)
    await owned_stream(services, principal, stream_id)
    actor = principal.actor()
    written, headers = await _write(
        services,
        stream_id,
        lambda: services.ledger.set_stream_status(
            actor=actor, stream_id=stream_id, status=StreamStatus(status), reason=reason
        ),
    )
    return _json(_status_view(written.value), 200, headers)


# ---------------------------------------------------------------------- subjects


@router.post("/ssf/subjects/add", status_code=200, response_model=None)
async def add_subject(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Include a subject (200, empty body). Every subject is in by default ("ALL"); adding
    one undoes its removal. ``verified`` is accepted and not used."""
    principal.require_stream_management()
    body = await json_object(request)
    stream_id = _stream_id_of(body)
    subject = validate_subject(body.get("subject"))
    verified = body.get("verified")
    if verified is not None and not isinstance(verified, bool):
        _bad("/verified", "must be a boolean")
    await owned_stream(services, principal, stream_id)
    _, headers = await _write(
        services,
        stream_id,
        lambda: services.ledger.add_stream_subject(stream_id=stream_id, subject=subject),
    )
    return Response(status_code=200, headers=headers)


@router.post("/ssf/subjects/remove", status_code=204, response_model=None)
async def remove_subject(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Leave a subject out of the stream (204)."""
    principal.require_stream_management()
    body = await json_object(request)
    stream_id = _stream_id_of(body)
    subject = validate_subject(body.get("subject"))
    await owned_stream(services, principal, stream_id)
    _, headers = await _write(
        services,
        stream_id,
        lambda: services.ledger.remove_stream_subject(stream_id=stream_id, subject=subject),
    )
    return Response(status_code=204, headers=headers)


# ---------------------------------------------------------------------- verification


@router.post("/ssf/verify", status_code=204, response_model=None)
async def verify(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Ask for a verification SET echoing ``state`` (204); 429 with ``Retry-After`` when
    asked again within ``min_verification_interval``."""
    principal.require_stream_management()
    body = await json_object(request)
    stream_id = _stream_id_of(body)
    state = _optional_string(body, "state", MAX_STATE)
    await owned_stream(services, principal, stream_id)
    _, headers = await _write(
        services,
        stream_id,
        lambda: services.ledger.request_verification(stream_id=stream_id, state=state),
    )
    return Response(status_code=204, headers=headers)
