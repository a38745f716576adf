"""Access requests (AuthZEN Access Request and Approval profile, Draft 1; SPEC 7.1).

PEPs and agents turn a requestable denial into a task (``POST /access/v1/requests``), poll
or cancel it through its portable handle; approvers list, read, approve and deny
(``/v1/access-requests``). Errors use the profile's problem ``type`` URNs
(``urn:openid:authzen:access-request:error:*``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.access_views import approver_view, status_endpoint, task_view
from api.auth import Principal, PrincipalDep
from api.authzen_parsing import AuthZenBadRequest, action_of, resource_of, subject_of
from api.consistency import Fresh
from api.idempotency import idempotency_for
from api.routes.common import (
    ServicesDep,
    finish_write,
    optional_instant,
    refuse_null_body,
    well_formed_id,
)
from api.routes.gate import GatedRoute, allowed
from api.schemas import AccessApproveIn, AccessRequestIn, CallbackIn, CancelIn, DecisionIn
from api.services import Services
from api.text_filters import text_filter
from ledger.application import AccessRequestInput, IdempotencyRequest, Written
from ledger.domain.access_binding import ACCESS_REQUEST_PATH, BINDING_TOKEN_TYP
from ledger.domain.access_requests import STATUSES, AccessRequest
from ledger.domain.callbacks import Callback, parse_callback
from ledger.domain.errors import (
    DuplicateRequest,
    Forbidden,
    IdempotencyConflict,
    InvalidDenialBinding,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    UnknownTask,
)
from ledger.domain.missions import Mission
from ledger.signing.dpop import proven_key

router = APIRouter(tags=["access requests"], route_class=GatedRoute)

RATE_WINDOW = timedelta(minutes=1)


async def load_task(services: Services, principal: Principal, task_id: str) -> AccessRequest:
    """The task, if the caller may see it; else the same 404 as for an unknown task."""
    task = None
    if well_formed_id(task_id, "tsk"):
        try:
            task = await run_in_threadpool(services.ledger.get_access_request, task_id)
        except NotFound:
            task = None
    if task is None or not policy.may_see_task(principal, task):
        raise UnknownTask(f"no task with id {task_id!r}")
    return task


async def _written(write: Any) -> Written[AccessRequest]:
    """Run a write; the profile names a reused Idempotency-Key ``duplicate_request``."""
    try:
        written: Written[AccessRequest] = await run_in_threadpool(write)
    except IdempotencyConflict as error:
        raise DuplicateRequest(error.detail) from None
    return written


# ---------------------------------------------------------------------- PEPs and agents


@router.post(
    ACCESS_REQUEST_PATH, status_code=202, dependencies=[allowed(policy.SUBMIT_ACCESS_REQUEST)]
)
async def submit_access_request(
    body: AccessRequestIn,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
) -> dict[str, Any]:
    """Ask a person to lift a requestable denial: 202 with a pending task (200 with the
    existing task when this denial's binding token was used before)."""
    raw = body.model_dump()
    try:
        subject = subject_of(raw)
        resource_of(raw)
        action_of(raw)
    except AuthZenBadRequest as error:
        raise InvalidRequest(str(error)) from None
    if body.items is not None:
        raise InvalidRequest.at("/items", "bundled requests are not supported")
    if not policy.may_request_access_for(principal, subject.id):
        raise Forbidden("an agent may only request access for itself (subject.id)")
    callback = await _callback(services, body.callback)
    now = services.clock.now()
    context = dict(body.context or {})
    justification = context.pop("business_justification", None)
    if justification is not None and not isinstance(justification, str):
        raise InvalidRequest.at("/context/business_justification", "must be a string")
    binding = None
    token = body.denial.binding_token
    if token is not None:
        binding = services.tokens.verify(token, typ=BINDING_TOKEN_TYP, now=now)
        if binding is None:
            raise InvalidDenialBinding("the binding_token does not verify against our keys")
    requested = body.requested_access
    access = AccessRequestInput(
        subject=raw["subject"],
        resource=raw["resource"],
        action=raw["action"],
        context=context,
        denial=body.denial.model_dump(),
        binding=binding,
        proof_jkt=proven_key(context.get("proof")),
        justification=justification,
        requested_until=optional_instant(
            None if requested is None else requested.requested_until,
            "/requested_access/requested_until",
        ),
        callback=callback,
    )
    if binding is not None and "jti" in binding:
        existing = await run_in_threadpool(
            services.ledger.existing_access_request, str(binding["jti"])
        )
        if existing is None:
            await _rate_limit(services, principal)
    idempotency = await idempotency_for(request, principal, 202)
    written = await _written(
        lambda: services.ledger.submit_access_request(
            actor=principal.actor(),
            requester=principal.identity(services.settings.public_issuer),
            scope=principal.scope,
            request=access,
            idempotency=idempotency,
        ),
    )
    # A binding token used before answers with its task: 200, not a second 202.
    replayed_token = written.replayed and written.status_code is None
    await finish_write(services, response, written, status_code=200 if replayed_token else 202)
    issuer = services.settings.public_issuer
    task = written.value
    response.headers["Location"] = status_endpoint(issuer, task.id)
    view = task_view(task, issuer, services.clock.now())
    if task.callback is not None and not replayed_token:
        # Only to the caller that created the task (and its Idempotency-Key replays).
        view["callback"] = {
            "endpoint": task.callback["endpoint"],
            "secret": services.keyring.callback_secret(task.id),
            "signature": "hmac-sha256",
        }
    return view


async def _callback(services: Services, value: CallbackIn | None) -> Callback | None:
    """The request's callback, refused (400 ``callback_refused``) unless it is https and
    its host resolves to public addresses only (``api.workers.callbacks``)."""
    if value is None:
        return None
    callback = parse_callback(value.endpoint, value.state, value.events)
    await run_in_threadpool(services.callbacks.check, callback)
    return callback


async def _rate_limit(services: Services, principal: Principal) -> None:
    """At most ``access_requests_per_minute`` new tasks per caller (across replicas: counted
    on the shared board), else 429 with ``Retry-After``."""
    now = services.clock.now()
    recent = await run_in_threadpool(
        services.access_requests.submitted_since,
        services.ledger.database,
        principal.scope,
        now - RATE_WINDOW,
    )
    limit = services.settings.access_requests_per_minute
    if len(recent) < limit:
        return
    # The window frees a place when the oldest submission in it is a minute old.
    frees_at = recent[len(recent) - limit] / 1_000_000 + RATE_WINDOW.total_seconds()
    retry_after = max(1, math.ceil(frees_at - now.timestamp()))
    raise TooManyRequests(
        f"at most {limit} access requests a minute; retry in {retry_after} s",
        extensions={"retry_after": retry_after},
    )


@router.get(
    ACCESS_REQUEST_PATH + "/{task_id}",
    dependencies=[allowed(policy.READ_ACCESS_REQUEST_TASK), Fresh],
)
async def get_task(task_id: str, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """The task handle: ``{task, result?}``."""
    task = await load_task(services, principal, task_id)
    return task_view(task, services.settings.public_issuer, services.clock.now())


@router.post(
    ACCESS_REQUEST_PATH + "/{task_id}/cancel",
    dependencies=[allowed(policy.CANCEL_ACCESS_REQUEST)],
)
async def cancel_task(
    task_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: CancelIn | None = None,
) -> dict[str, Any]:
    """Withdraw a pending request (the requester, or an admin); 409 ``invalid_task_state``
    once it is terminal."""
    await refuse_null_body(request, body)
    task = await load_task(services, principal, task_id)
    if not policy.may_cancel_task(principal, task):
        raise Forbidden("only the principal that requested the access may cancel it")
    reason = None if body is None else body.reason or body.comment
    idempotency = await idempotency_for(request, principal, 200)
    written = await _written(
        lambda: services.ledger.cancel_access_request(
            actor=principal.actor(), task_id=task_id, reason=reason, idempotency=idempotency
        ),
    )
    await finish_write(services, response, written, status_code=200)
    return task_view(written.value, services.settings.public_issuer, services.clock.now())


# ---------------------------------------------------------------------- approvers


async def mission_of(services: Services, task: AccessRequest) -> Mission | None:
    try:
        return await run_in_threadpool(services.ledger.get_mission, task.mission_id)
    except NotFound:
        return None


async def approver_views(services: Services, tasks: list[AccessRequest]) -> list[dict[str, Any]]:
    """The approver's view of each task (its Mission read from the board once)."""
    missions = {}
    for mission_id in {task.mission_id for task in tasks}:
        missions[mission_id] = await run_in_threadpool(
            services.missions.get, services.ledger.database, mission_id
        )
    now = services.clock.now()
    return [approver_view(task, missions[task.mission_id], now) for task in tasks]


@router.get("/v1/access-requests", dependencies=[allowed(policy.LIST_ACCESS_REQUESTS), Fresh])
async def list_access_requests(
    services: ServicesDep,
    status: Annotated[str | None, Query(max_length=32)] = None,
    mission: Annotated[str | None, text_filter(128)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The approver inbox, oldest first: ``{data, next_cursor}``."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest.at("/status", f"must be one of {list(STATUSES)}")
    items, next_cursor = await run_in_threadpool(
        services.access_requests.page,
        services.ledger.database,
        filters={"status": status, "mission_id": mission},
        cursor=cursor,
        limit=limit,
    )
    return {
        "data": await approver_views(services, items),
        "next_cursor": next_cursor,
    }


@router.get(
    "/v1/access-requests/{task_id}",
    dependencies=[allowed(policy.LIST_ACCESS_REQUESTS), Fresh],
)
async def get_access_request(
    task_id: str, principal: PrincipalDep, services: ServicesDep
) -> dict[str, Any]:
    task = await load_task(services, principal, task_id)
    return approver_view(task, await mission_of(services, task), services.clock.now())


@router.post(
    "/v1/access-requests/{task_id}/approve",
    dependencies=[allowed(policy.DECIDE_ACCESS_REQUEST)],
)
async def approve_access_request(
    task_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: AccessApproveIn | None = None,
) -> dict[str, Any]:
    """Approve exactly the denied request: at most ``max_uses`` permits (default 1) until
    ``approved_until`` (default 1 h, never past the Mission's expiry)."""
    await refuse_null_body(request, body)
    decide = partial(approve_task, services, principal, task_id, body or AccessApproveIn())
    return await _answered(services, principal, request, response, decide)


async def approve_task(
    services: Services,
    principal: Principal,
    task_id: str,
    decision: AccessApproveIn,
    idempotency: IdempotencyRequest | None,
) -> Written[AccessRequest]:
    """The approval (API and console alike), on a task the caller may see."""
    policy.DECIDE_ACCESS_REQUEST.check(principal)
    approved_until = optional_instant(decision.approved_until, "/approved_until")
    return await _decide_task(
        services,
        principal,
        task_id,
        lambda: services.ledger.approve_access_request(
            actor=principal.actor(),
            approver=principal.identity(services.settings.public_issuer),
            task_id=task_id,
            reason=decision.reason,
            approved_until=approved_until,
            max_uses=decision.max_uses,
            idempotency=idempotency,
        ),
    )


@router.post(
    "/v1/access-requests/{task_id}/deny",
    dependencies=[allowed(policy.DECIDE_ACCESS_REQUEST)],
)
async def deny_access_request(
    task_id: str,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    services: ServicesDep,
    body: DecisionIn | None = None,
) -> dict[str, Any]:
    await refuse_null_body(request, body)
    decide = partial(deny_task, services, principal, task_id, body or DecisionIn())
    return await _answered(services, principal, request, response, decide)


async def deny_task(
    services: Services,
    principal: Principal,
    task_id: str,
    decision: DecisionIn,
    idempotency: IdempotencyRequest | None,
) -> Written[AccessRequest]:
    """The denial (API and console alike), on a task the caller may see."""
    policy.DECIDE_ACCESS_REQUEST.check(principal)
    return await _decide_task(
        services,
        principal,
        task_id,
        lambda: services.ledger.deny_access_request(
            actor=principal.actor(),
            task_id=task_id,
            reason=decision.reason,
            idempotency=idempotency,
        ),
    )


async def _decide_task(
    services: Services,
    principal: Principal,
    task_id: str,
    write: Callable[[], Written[AccessRequest]],
) -> Written[AccessRequest]:
    """A decision (after the caller checked its policy gate) on a task the caller may see:
    404 for any other; ``write`` runs in a thread, and only once the task is found."""
    await load_task(services, principal, task_id)
    return await _written(write)


async def _answered(
    services: Services,
    principal: Principal,
    request: Request,
    response: Response,
    decide: Callable[[IdempotencyRequest | None], Awaitable[Written[AccessRequest]]],
) -> dict[str, Any]:
    """An approve or deny route's decision, made under the request's ``Idempotency-Key`` and
    answered with the approver's view of the task."""
    written = await decide(await idempotency_for(request, principal, 200))
    await finish_write(services, response, written, status_code=200)
    task = written.value
    return approver_view(task, await mission_of(services, task), services.clock.now())
