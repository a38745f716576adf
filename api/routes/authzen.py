"""OpenID AuthZEN Authorization API 1.0: evaluation, evaluations, search, PDP metadata.

Decisions come from this replica's in-memory evaluation index; nothing on the
decision path touches the database. A metered permit (SPEC 7.3) reserves from this
replica's budget lease in memory (the Meter writer records it in the background); only when
the lease cannot cover it does the Meter writer record the reservation (grouped with the
others arriving at the same time, taking a new lease) before the permit is answered.
A request may demand an index at least as fresh as a log position
(``context.consistency.min_position`` or ``Ledger-Min-Position``): the PDP waits briefly,
else denies with reason ``stale_state``.

Every decision with an ``evaluation_id`` (each batch item, each search call) is handed
to the decision log before it is answered (``api/workers/decision_writer.py``: the answer waits
only in sync mode or while the writer is behind). A search call is recorded as a
decision that is true when it found anything; its answer carries the
``context.evaluation_id`` under which it was recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from api import policy
from api.auth import Principal, PrincipalDep, authenticate_request
from api.authzen_parsing import (
    AuthZenBadRequest,
    action_of,
    batch_of,
    context_of,
    evaluation_of,
    min_position_of,
    page_of,
    parse_body,
    resource_of,
    subject_of,
)
from api.consistency import MIN_POSITION_HEADER, parse_min_position
from api.json_body import JsonBodyRoute, max_depth_of
from api.routes.common import ServicesDep
from api.services import Services
from ledger.application.metering import Reserve
from ledger.domain.access_binding import access_request_endpoint
from ledger.domain.errors import ApprovalUnusable, Conflict, InvalidRequest, LedgerError, NotFound
from ledger.domain.metering import reservation_expiry
from projections import search
from projections.decision_log import DecisionRecord
from projections.pdp import Decision, Evaluation, new_evaluation_id

router = APIRouter(tags=["authzen"], route_class=JsonBodyRoute)

DEFAULT_PAGE = 100

#: PDP capabilities (standards.md 2.2, 2.8); egress denials (SPEC 7.2) carry a captive_url.
CAPABILITIES = (
    "urn:openid:authzen:capability:access-request",
    "urn:openid:authzen:capability:access-request:agentic-mission-governance",
    "urn:openid:authzen:capability:access-request:captive-portal-egress",
)


def _bad(error: AuthZenBadRequest | InvalidRequest) -> PlainTextResponse:
    message = error.detail if isinstance(error, InvalidRequest) else str(error)
    return PlainTextResponse(message, status_code=400)


def _json(body: Mapping[str, Any], started: float | None = None) -> Response:
    """Compact JSON (orjson); with ``started``, a ``Server-Timing`` header carrying the time
    spent deciding (body parsed, index consulted, answer built), for operators and
    benchmarks."""
    headers = None
    if started is not None:
        headers = {"Server-Timing": f"decision;dur={(time.perf_counter() - started) * 1000:.3f}"}
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def _fresh(services: Services, request: Request, context: Mapping[str, Any]) -> int | None:
    """The position the caller demands that this replica has not reached in time, if any."""
    demanded = [
        p
        for p in (
            min_position_of(context),
            parse_min_position(request.headers.get(MIN_POSITION_HEADER)),
        )
        if p is not None
    ]
    if not demanded:
        return None
    wanted = max(demanded)
    timeout = services.settings.read_your_writes_timeout_seconds
    if await services.follower.wait_async(wanted, timeout, core=True):
        return None
    return wanted


async def _body(request: Request) -> dict[str, Any]:
    return parse_body(
        request.headers.get("content-type"), await request.body(), max_depth_of(request)
    )


async def _decide(services: Services, item: Evaluation, now: datetime) -> Decision:
    """The PDP's answer; a metered permit once its reservation is taken: from this
    replica's budget lease, in memory (recorded in the background; the PDP draws it itself
    and answers at once), else durably by the Meter writer. Under an approved budget
    increase, the approval's use is spent first. A DPoP proof's signature is checked by the
    proof checker while the PDP decides (its key taken as shown until ``confirm``), before
    anything is reserved: such a permit is drawn from the lease here, once confirmed."""
    proof = services.pdp.read_proof(item, now)
    if proof is None:
        decision = services.pdp.evaluate(item, now)
    else:
        verdict = services.proofs.check(proof)
        decision = services.pdp.evaluate(item.deferring(proof), now)
        decision = services.pdp.confirm(decision, proof, await verdict, now)
    pending = decision.pending
    if pending is None:
        return decision
    expires_at = reservation_expiry(now, services.settings.reservation_ttl_seconds)
    evaluation_id = str(decision.context["evaluation_id"])
    if (
        pending.approval_id is None
        and proof is not None  # without one, the PDP tried the lease already
        and services.meters.draw(
            mission_id=pending.mission_id,
            call=pending.call,
            evaluation_id=evaluation_id,
            mandate_id=pending.mandate_id,
            expires_at=expires_at,
            now=now,
        )
    ):
        return services.pdp.settle(decision, None, expires_at)
    if pending.approval_id is not None:
        spent = await _settled(services, decision)
        if spent is not decision:
            return spent  # no use left: the fallback denial
    refusal: BaseException | None = None
    try:
        outcome = await asyncio.wrap_future(
            services.meters.submit(
                Reserve(
                    mission_id=pending.mission_id,
                    bounds=pending.bounds,
                    call=pending.call,
                    evaluation_id=evaluation_id,
                    mandate_id=pending.mandate_id,
                    expires_at=expires_at,
                    approval_id=pending.approval_id,
                )
            )
        )
    except Exception as error:  # the store failed: the permit fails closed (settle)
        refusal = error
    else:
        refusal = outcome if isinstance(outcome, LedgerError) else None
    return services.pdp.settle(decision, refusal, expires_at)


async def _recorded(
    services: Services,
    principal: Principal,
    now: datetime,
    answered: list[tuple[object, Decision]],
    text: bytes | None = None,
) -> None:
    """Hand the decisions of one answer (with the requests they answered) to the decision
    log; returns once the answer may go out. ``text``: the body received, when the one
    request answered is the whole of it."""
    actor = principal.actor()
    waiter = services.decisions.record(
        [DecisionRecord(now, actor, request, decision, text) for request, decision in answered]
    )
    if waiter is not None:
        await waiter


async def evaluation(request: Request) -> Response:
    """Access Evaluation: one decision.

    The hot path, so a plain Starlette route (added below): no dependency solving, the
    credential checked by a direct call. It still runs behind the app's middleware,
    router and error mapping like every other route."""
    started = time.perf_counter()
    services: Services = request.app.state.services
    principal = await authenticate_request(request, services)
    policy.DECIDE_ACCESS.check(principal)
    try:
        body = await _body(request)
        item = evaluation_of(body)
        behind = await _fresh(services, request, item.context)
    except (AuthZenBadRequest, InvalidRequest) as error:
        return _bad(error)
    now = services.clock.now()
    if behind is not None:
        decision = services.pdp.unreached(services.follower.core_position, behind)
        await _recorded(services, principal, now, [(body, decision)])
        return _json(decision.to_json())
    decision = await _settled(services, await _decide(services, item, now))
    await _recorded(services, principal, now, [(body, decision)], await request.body())
    return _json(decision.to_json(), started)


async def _settled(services: Services, decision: Decision) -> Decision:
    """A permit under an approval answers only once its use is recorded (exactly once
    across replicas); with none left, the decision point's fallback denial."""
    use = decision.use
    if use is None:
        return decision
    try:
        await run_in_threadpool(
            services.ledger.use_approval,
            task_id=use.task_id,
            approval_id=use.approval_id,
            evaluation_id=str(decision.context["evaluation_id"]),
        )
    except (ApprovalUnusable, NotFound, Conflict):
        return services.pdp.spent(decision, recorded=False)
    return services.pdp.spent(decision, recorded=True)


router.add_route("/access/v1/evaluation", evaluation, methods=["POST"], include_in_schema=False)


@router.post("/access/v1/evaluations", response_model=None)
async def evaluations(request: Request, principal: PrincipalDep, services: ServicesDep) -> Response:
    """Access Evaluations: a batch with defaults and an ``evaluations_semantic``."""
    policy.DECIDE_ACCESS.check(principal)
    try:
        body = await _body(request)
        batch = batch_of(body)
        behind = await _fresh(services, request, context_of(body))
    except (AuthZenBadRequest, InvalidRequest) as error:
        return _bad(error)
    now = services.clock.now()

    async def decide(item: Evaluation | AuthZenBadRequest) -> Decision:
        if isinstance(item, AuthZenBadRequest):
            return Decision(
                decision=False,
                context={
                    "evaluation_id": new_evaluation_id(),
                    "reason": "invalid_request",
                    "error": {"status": 400, "message": str(item)},
                },
                position=services.pdp.position,
            )
        if behind is not None:
            return services.pdp.unreached(services.follower.core_position, behind)
        return await _decide(services, item, now)

    answered: list[tuple[object, Decision]] = []
    for item, item_request in zip(batch.items, batch.requests, strict=True):
        decision = await _settled(services, await decide(item))
        answered.append((item_request, decision))
        if batch.semantic == "deny_on_first_deny" and not decision.decision:
            break
        if batch.semantic == "permit_on_first_permit" and decision.decision:
            break
    await _recorded(services, principal, now, answered)
    if batch.single:
        return _json(answered[0][1].to_json())
    return _json({"evaluations": [decision.to_json() for _, decision in answered]})


def _paged(body: Mapping[str, Any], kind: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Cursor paging over a sorted result list; a token is bound to the query it came from."""
    page = page_of(body)
    fingerprint = hashlib.sha256(
        json.dumps(
            {k: body.get(k) for k in ("subject", "action", "resource", "context")},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        + kind.encode()
        + str(page.limit).encode()
    ).hexdigest()[:16]
    offset = 0
    if page.token is not None:
        try:
            decoded = json.loads(
                base64.urlsafe_b64decode(page.token + "=" * (-len(page.token) % 4))
            )
            offset = int(decoded["o"])
            if decoded["q"] != fingerprint or offset < 0:
                raise ValueError(offset)
        except (ValueError, KeyError, TypeError):
            msg = "page.token is not valid for this query (the other parameters must not change)"
            raise AuthZenBadRequest(msg) from None
    if page.token is None and page.limit is None:
        return {"results": results}
    limit = DEFAULT_PAGE if page.limit is None else page.limit
    chunk = results[offset : offset + limit]
    end = offset + len(chunk)
    next_token = ""
    if end < len(results) and limit > 0:
        next_token = (
            base64.urlsafe_b64encode(json.dumps({"o": end, "q": fingerprint}).encode())
            .decode()
            .rstrip("=")
        )
    return {
        "page": {"next_token": next_token, "count": len(chunk), "total": len(results)},
        "results": chunk,
    }


async def _search(
    request: Request,
    principal: Principal,
    kind: str,
    run: Callable[[Mapping[str, Any], datetime], list[dict[str, Any]]],
) -> Response:
    services: Services = request.app.state.services
    now = services.clock.now()
    evaluation_id = new_evaluation_id()
    try:
        body = await _body(request)
        position = services.pdp.position
        results = run(body, now)
        if not services.pdp.fresh():
            # Fails closed like a decision: a stale index may still list revoked authority.
            context = services.pdp.stale_context(evaluation_id)
            decision = Decision(decision=False, context=context, position=position)
            answer: dict[str, Any] = {"results": [], "context": context}
        else:
            decision = Decision(
                decision=bool(results), context={"evaluation_id": evaluation_id}, position=position
            )
            answer = {**_paged(body, kind, results), "context": decision.context}
    except (AuthZenBadRequest, InvalidRequest) as error:
        return _bad(error)
    await _recorded(services, principal, now, [(body, decision)])
    return _json(answer)


@router.post("/access/v1/search/subject", response_model=None)
async def search_subject(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Which agents may perform the action on the resource (``subject.id`` is ignored)."""
    policy.DECIDE_ACCESS.check(principal)

    def run(body: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        subject = subject_of(body, need_id=False)
        action = action_of(body)
        resource = resource_of(body)
        return search.subjects(
            services.index,
            subject_type=subject.type,
            action=action.name,
            uri=resource.id,
            now=now,
        )

    return await _search(request, principal, "subject", run)


@router.post("/access/v1/search/resource", response_model=None)
async def search_resource(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Which resources the agent may perform the action on."""
    policy.DECIDE_ACCESS.check(principal)

    def run(body: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        subject = subject_of(body)
        action = action_of(body)
        resource = resource_of(body, need_id=False)
        if subject.type != "agent":
            return []
        return search.resources(
            services.index,
            subject_id=subject.id,
            instance_id=subject.properties.get("instance_id"),
            action=action.name,
            resource_type=resource.type,
            now=now,
        )

    return await _search(request, principal, "resource", run)


@router.post("/access/v1/search/action", response_model=None)
async def search_action(
    request: Request, principal: PrincipalDep, services: ServicesDep
) -> Response:
    """Which actions the agent may perform on the resource."""
    policy.DECIDE_ACCESS.check(principal)

    def run(body: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
        subject = subject_of(body)
        resource = resource_of(body)
        if subject.type != "agent":
            return []
        return search.actions(
            services.index,
            subject_id=subject.id,
            instance_id=subject.properties.get("instance_id"),
            uri=resource.id,
            now=now,
        )

    return await _search(request, principal, "action", run)


@router.get("/.well-known/authzen-configuration")
async def authzen_configuration(services: ServicesDep) -> JSONResponse:
    """PDP metadata (no credential needed)."""
    issuer = services.settings.public_issuer
    return JSONResponse(
        {
            "policy_decision_point": issuer,
            "access_evaluation_endpoint": f"{issuer}/access/v1/evaluation",
            "access_evaluations_endpoint": f"{issuer}/access/v1/evaluations",
            "search_subject_endpoint": f"{issuer}/access/v1/search/subject",
            "search_resource_endpoint": f"{issuer}/access/v1/search/resource",
            "search_action_endpoint": f"{issuer}/access/v1/search/action",
            "access_request_endpoint": access_request_endpoint(issuer),
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "capabilities": list(CAPABILITIES),
        },
        headers={"Cache-Control": "public, max-age=300"},
    )
