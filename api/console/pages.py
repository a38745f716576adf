"""The console's pages (SPEC 7.5): sign-in, the approver inbox and decision pages, the
operator's Missions, the auditor's chain status.

Each page declares who may open it with ``signed_in(policy.X)`` (the route class checks the
gate, and the CSRF token of every POST, before the handler runs). Writes call the same
commands as the API routes (``api.routes.proposals.approve`` ...), so the ledger records the
person's principal exactly as for an API write, and the same rules refuse the same things.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from api import policy
from api.access_views import approver_view, rendered_request
from api.auth import Principal, api_key_principal
from api.console import present
from api.console.live import mission_changes
from api.console.sessions import ATTEMPT_LIFETIME, Attempt, Session, new_token
from api.console.web import (
    PREFIX,
    SESSION_SCOPE,
    SESSION_TOKEN_SCOPE,
    ConsoleRoute,
    check_csrf,
    console_of,
    current_session,
    render,
    safe_next,
    see_other,
    services_of,
    signed_in,
)
from api.routes.access_requests import approve_task, deny_task, load_task, mission_of
from api.routes.audit import decision_filter, export_response
from api.routes.common import finish_write
from api.routes.missions import change_lifecycle_of, contain_mission, load_mission
from api.routes.proposals import approve, deny, load_proposal
from api.schemas import AccessApproveIn, ApproveIn, ContainmentIn, DecisionIn, LifecycleIn
from api.services import Services
from api.text_filters import text_filter
from api.whole_numbers import whole_number
from api.workers.checkpoints import read_witness_directory
from ledger.application import IdempotencyRequest, Written
from ledger.application.access import DEFAULT_APPROVAL_LIFETIME
from ledger.domain.access_requests import PENDING as TASK_PENDING
from ledger.domain.access_requests import AccessRequest
from ledger.domain.errors import Forbidden, InvalidRequest, NotAuthenticated
from ledger.domain.instants import format_instant
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.domain.states import LEGAL_OPERATIONS, MissionState, Operation, ProposalStatus
from ledger.persistence.chain import Anchor, ChainReport, verify_chain_against
from ledger.persistence.checkpoints import CheckpointStore
from projections.aggregate_tables import decode_cursor, encode_cursor

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

INBOX_PAGE = 25
MISSIONS_PAGE = 50
MANDATES_SHOWN = 200
SSE_SEND_TIMEOUT = 10

#: What a decision form decides on (a proposal, an access request), the body it reads
#: and what its write answers with.
DecidedOn = TypeVar("DecidedOn")
FormBody = TypeVar("FormBody")
Saved = TypeVar("Saved", Mission, Proposal, AccessRequest)


def _form(request: Request) -> FormData:
    """The form the route class already read (to check its CSRF token)."""
    form = getattr(request, "_form", None)
    assert isinstance(form, FormData), "the console route class reads every POST's form"
    return form


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _session(request: Request) -> Session:
    """The signed-in person's session (the route class of a ``signed_in`` page found it)."""
    session = request.scope[SESSION_SCOPE]
    assert isinstance(session, Session)
    return session


def _to(path: str) -> Callable[[object], str]:
    """On to ``path`` whatever was written."""
    return lambda _: path


def _home(principal: Principal) -> str:
    if policy.INBOX.allows(principal):
        return f"{PREFIX}/inbox"
    if policy.LIST_MISSIONS.allows(principal):
        return f"{PREFIX}/missions"
    return f"{PREFIX}/audit/chain"


# ---------------------------------------------------------------------- sign-in


@router.get("/", response_model=None)
async def start(request: Request) -> Response:
    session = await current_session(request, touch=False)
    if session is None:
        return see_other(f"{PREFIX}/signin")
    return see_other(_home(session.principal))


async def _begin(request: Request, response: Response, next_path: str) -> Attempt:
    console = console_of(request)
    token, attempt = await run_in_threadpool(
        lambda: console.sessions.begin(
            now=services_of(request).clock.now(), next_path=safe_next(next_path)
        )
    )
    console.cookies.set(
        response, console.cookies.attempt, token, int(ATTEMPT_LIFETIME.total_seconds())
    )
    return attempt


async def _attempt(request: Request) -> tuple[str, Attempt] | None:
    console = console_of(request)
    token = request.cookies.get(console.cookies.attempt)
    if not token:
        return None
    now = services_of(request).clock.now()
    attempt = await run_in_threadpool(lambda: console.sessions.attempt(token, now=now))
    return None if attempt is None else (token, attempt)


async def _signin_page(
    request: Request, *, next_path: str, status_code: int = 200, message: str | None = None
) -> HTMLResponse:
    console = console_of(request)
    response = HTMLResponse("")
    attempt = await _begin(request, response, next_path)
    page = render(
        request,
        "signin.html",
        status_code=status_code,
        oidc=console.oidc is not None,
        key_signin=console.key_signin,
        attempt_csrf=attempt.csrf,
        next=attempt.next_path,
        message=message,
        signed_out=request.query_params.get("signed_out") == "1",
    )
    page.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
    return page


@router.get("/signin", response_model=None)
async def signin(
    request: Request, next: Annotated[str | None, Query(max_length=512)] = None
) -> Response:
    session = await current_session(request, touch=False)
    if session is not None:
        return see_other(safe_next(next) if next else _home(session.principal))
    return await _signin_page(request, next_path=next or f"{PREFIX}/")


@router.get("/signin/oidc", response_model=None)
async def signin_oidc(
    request: Request, next: Annotated[str | None, Query(max_length=512)] = None
) -> Response:
    """Off to the OpenID Provider (a link, not a form: the CSP's form-action stays 'self')."""
    console = console_of(request)
    if console.oidc is None:
        raise InvalidRequest("this console has no OpenID sign-in configured")
    response = see_other("/")
    attempt = await _begin(request, response, next or f"{PREFIX}/")
    url = await console.oidc.authorization_url(
        state=attempt.state, nonce=attempt.nonce, verifier=attempt.verifier
    )
    response.headers["location"] = url
    return response


async def _open_session(
    request: Request,
    principal: Principal,
    *,
    next_path: str,
    method: str,
    key_id: str | None = None,
    display_name: str | None = None,
) -> Response:
    """A new session for ``principal`` (people only), and its cookie."""
    if not policy.may_sign_in_to_console(principal.roles):
        raise Forbidden(
            "only people sign in to the console (roles approver, operator, auditor, admin); "
            "agent and PEP credentials cannot"
        )
    console = console_of(request)
    previous = request.cookies.get(console.cookies.session)
    if previous:  # signing in again (perhaps as someone else) ends the session before
        await run_in_threadpool(console.sessions.end, previous)
    now = services_of(request).clock.now()
    token = await run_in_threadpool(
        lambda: console.sessions.open(
            principal, now=now, method=method, key_id=key_id, display_name=display_name
        )
    )
    response = see_other(next_path if next_path != f"{PREFIX}/" else _home(principal))
    console.cookies.set(response, console.cookies.session, token)
    console.cookies.clear(response, console.cookies.attempt)
    return response


@router.get("/auth/callback", response_model=None)
async def oidc_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    console = console_of(request)
    found = await _attempt(request)
    if console.oidc is None or found is None or state is None:
        return await _signin_page(
            request,
            next_path=f"{PREFIX}/",
            status_code=400,
            message="That sign-in link has expired or was not started here. Try again.",
        )
    token, attempt = found
    await run_in_threadpool(console.sessions.finish, token)  # used once, whatever happens
    if not hmac.compare_digest(state.encode(), attempt.state.encode()):
        return await _signin_page(
            request, next_path=attempt.next_path, status_code=400, message="Sign-in failed."
        )
    if error is not None or code is None:
        return await _signin_page(
            request,
            next_path=attempt.next_path,
            status_code=401,
            message=f"The identity provider did not sign you in ({error or 'no code'}).",
        )
    try:
        person = await console.oidc.sign_in(
            code=code,
            verifier=attempt.verifier,
            nonce=attempt.nonce,
            now=services_of(request).clock.now(),
        )
    except NotAuthenticated as failure:
        return await _signin_page(
            request, next_path=attempt.next_path, status_code=401, message=failure.detail
        )
    principal = Principal(
        kind="oauth",
        name=person.subject,
        roles=person.roles,
        client_id=None,  # a person is never an agent's client
        issuer=person.issuer,
        acr=person.acr,
    )
    return await _open_session(
        request,
        principal,
        next_path=attempt.next_path,
        method="oidc",
        display_name=person.name,
    )


@router.post("/signin/key", response_model=None)
async def signin_key(request: Request) -> Response:
    """An API key for a server-side session (the key itself is not kept anywhere)."""
    console = console_of(request)
    if not console.key_signin:
        raise Forbidden("sign-in with an API key is turned off here")
    found = await _attempt(request)
    if found is None:
        raise Forbidden("the sign-in form has expired or was not opened here: reload the page")
    token, attempt = found
    await check_csrf(request, attempt.csrf)
    await run_in_threadpool(console.sessions.finish, token)
    key = (await request.form()).get("api_key")
    if not isinstance(key, str) or not key.strip():
        return await _signin_page(
            request, next_path=attempt.next_path, status_code=400, message="Enter an API key."
        )
    try:
        principal, entry = await api_key_principal(key.strip(), services_of(request))
    except NotAuthenticated:
        return await _signin_page(
            request,
            next_path=attempt.next_path,
            status_code=401,
            message="That API key is unknown or revoked.",
        )
    return await _open_session(
        request, principal, next_path=attempt.next_path, method="api_key", key_id=entry.key_id
    )


@router.post("/signout", response_model=None, dependencies=[signed_in()])
async def signout(request: Request) -> Response:
    console = console_of(request)
    token = request.scope.get(SESSION_TOKEN_SCOPE)
    if isinstance(token, str):
        await run_in_threadpool(console.sessions.end, token)
    response = see_other(f"{PREFIX}/signin?signed_out=1")
    console.cookies.clear(response, console.cookies.session)
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


# ---------------------------------------------------------------------- approver


@router.get("/inbox", response_model=None, dependencies=[signed_in(policy.INBOX)])
async def inbox(
    request: Request, cursor: Annotated[str | None, Query(max_length=128)] = None
) -> Response:
    """Pending proposals and access requests, oldest first, one page from the read models."""
    services = services_of(request)
    rows, next_cursor = await run_in_threadpool(
        pending_page, services, decode_cursor(cursor), INBOX_PAGE
    )
    now = services.clock.now()
    return render(
        request,
        "inbox.html",
        items=[
            _inbox_item(item, now) if isinstance(item, Proposal) else _task_item(item, now)
            for item in rows
        ],
        next_cursor=next_cursor,
        first_page=cursor is None,
        done=request.query_params.get("done"),
    )


def pending_page(
    services: Services, after: int, limit: int
) -> tuple[list[Proposal | AccessRequest], str | None]:
    """One inbox page: pending proposals and access requests created after log position
    ``after``, merged in log order (both boards are read by their ``(status,
    created_position)`` index, ``limit + 1`` rows each; nothing is scanned)."""
    db = services.ledger.database
    merged: list[tuple[int, Proposal | AccessRequest]] = [
        *services.proposals.positioned(
            db, filters={"status": ProposalStatus.PENDING.value}, after=after, limit=limit + 1
        ),
        *services.access_requests.positioned(
            db, filters={"status": TASK_PENDING}, after=after, limit=limit + 1
        ),
    ]
    merged.sort(key=lambda row: row[0])
    more = len(merged) > limit
    merged = merged[:limit]
    return [item for _, item in merged], encode_cursor(merged[-1][0]) if more else None


def _inbox_item(proposal: Proposal, now: Any) -> dict[str, Any]:
    return {
        "kind": "proposal",
        "href": f"{PREFIX}/proposals/{proposal.id}",
        "id": proposal.id,
        "client_id": proposal.client_id,
        "subject": proposal.subject,
        "goal": str(proposal.intent.get("goal", "")),
        "submitted_at": proposal.created_on,
        "expires_at": proposal.expires_at,
        "countdown": present.countdown(now, proposal.expires_at),
        "status": proposal.effective_status(now),
        "entries": present.entry_views(proposal.proposed_authority),
    }


def _task_item(task: AccessRequest, now: Any) -> dict[str, Any]:
    return {
        "kind": "access_request",
        "mission_id": task.mission_id,
        "href": f"{PREFIX}/access-requests/{task.id}",
        "id": task.id,
        "client_id": task.client_id,
        "subject": task.mission_subject,
        "goal": task.justification or "",
        "submitted_at": task.created_on,
        "expires_at": task.expires_at,
        "countdown": present.countdown(now, task.expires_at),
        "status": task.effective_status(now),
        "denied": rendered_request(task),
    }


async def _proposal(request: Request, proposal_id: str) -> tuple[Session, Proposal]:
    session = _session(request)
    proposal = await load_proposal(services_of(request), session.principal, proposal_id)
    return session, proposal


def _decision_context(
    services: Services, proposal: Proposal, form: FormData | None
) -> dict[str, Any]:
    now = services.clock.now()
    requested = present.parse_requested_expiry(proposal.intent)
    return {
        "p": proposal,
        "status": proposal.effective_status(now),
        "countdown": present.countdown(now, proposal.expires_at),
        "submitted_by": present.actor_text(proposal.submitted_by),
        "prose": present.agent_prose(proposal.intent),
        "entries": present.entry_views(proposal.proposed_authority),
        "terms": present.terms(requested, proposal.intent),
        "requested_expiry": format_instant(requested),
        "expiry_value": (
            _expiry_field(form, requested) if form is not None else present.expiry_input(requested)
        ),
        "expiry_max": present.expiry_input(requested),
        "approval_id": (_text(form, "approval_event_id") if form else None) or new_token(),
        "form": form,
    }


def _expiry_field(form: FormData, requested: Any) -> str:
    return _text(form, "expires_at") or present.expiry_input(requested)


@router.get("/proposals/{proposal_id}", response_model=None, dependencies=[signed_in(policy.INBOX)])
async def proposal_page(request: Request, proposal_id: str) -> Response:
    _, proposal = await _proposal(request, proposal_id)
    return render(
        request, "proposal.html", **_decision_context(services_of(request), proposal, None)
    )


def _approval(proposal: Proposal, form: FormData) -> ApproveIn:
    if not proposal.proposed_authority:
        raise InvalidRequest.at(
            "/authorization_details",
            "this proposal carries no authority: write the Authority Set through the API",
        )
    granted = present.narrowed_authority(proposal.proposed_authority, form)
    requested = present.parse_requested_expiry(proposal.intent)
    return ApproveIn(
        authorization_details=granted,
        expires_at=present.chosen_expiry(form, requested),
        approval_event_id=_text(form, "approval_event_id"),
    )


@router.post(
    "/proposals/{proposal_id}/review",
    response_model=None,
    dependencies=[signed_in(policy.INBOX)],
)
async def review(request: Request, proposal_id: str) -> Response:
    """The approval before it is given: asked for and granted side by side (no write)."""
    _, proposal = await _proposal(request, proposal_id)
    form = _form(request)
    body = _approval(proposal, form)
    assert body.authorization_details is not None
    context = _decision_context(services_of(request), proposal, form)
    return render(
        request,
        "review.html",
        granted=present.entry_views(body.authorization_details),
        changes=present.changes(proposal.proposed_authority or [], body.authorization_details),
        chosen_expiry=body.expires_at,
        ticked={
            (i, a)
            for i, raw in enumerate(proposal.proposed_authority or [])
            for a in raw.get("actions", [])
            if a in form.getlist(f"e{i}.action")
        },
        amounts={i: _text(form, f"e{i}.max_amount") for i in range(len(context["entries"]))},
        **context,
    )


@router.post(
    "/proposals/{proposal_id}/approve",
    response_model=None,
    dependencies=[signed_in(policy.DECIDE_PROPOSAL)],
)
async def approve_page(request: Request, proposal_id: str) -> Response:
    then = _to_approved_mission
    return await _form_decision(request, _proposal, proposal_id, _approval, approve, then)


def _to_approved_mission(mission: Mission) -> str:
    return f"{PREFIX}/missions/{mission.id}?approved=1"


async def _form_decision(
    request: Request,
    load: Callable[[Request, str], Awaitable[tuple[Session, DecidedOn]]],
    subject_id: str,
    read: Callable[[DecidedOn, FormData], FormBody],
    write: Callable[[Services, Principal, str, FormBody], Awaitable[Written[Saved]]],
    then: Callable[[Saved], str],
) -> Response:
    """A decision form (its route class has checked the page's rule and the CSRF token):
    what it decides on, loaded first (404 for what the person may not see); the form read
    into the API's body; the API's command written as the person; then on to
    ``then(written value)``. A refusal (a bad field, the ledger's rule) is the API's error,
    shown by the route class."""
    session, subject = await load(request, subject_id)
    body = read(subject, _form(request))
    written = await write(services_of(request), session.principal, subject_id, body)
    return await _written(request, written, then)


async def _written(
    request: Request, written: Written[Saved], then: Callable[[Saved], str]
) -> Response:
    """After a write: on to ``then(written value)`` once this replica's pages include it."""
    response = see_other(then(written.value))
    await finish_write(services_of(request), response, written, status_code=303)
    response.status_code = 303  # a replayed form too (its first answer was an API status)
    return response


def _denial(_: object, form: FormData) -> DecisionIn:
    reason = _text(form, "reason")
    if reason is None:
        raise InvalidRequest.at("/reason", "say why you deny the request")
    return DecisionIn(reason=reason)


@router.post(
    "/proposals/{proposal_id}/deny",
    response_model=None,
    dependencies=[signed_in(policy.DECIDE_PROPOSAL)],
)
async def deny_page(request: Request, proposal_id: str) -> Response:
    then = _to(f"{PREFIX}/inbox?done=denied")
    return await _form_decision(request, _proposal, proposal_id, _denial, deny, then)


# ---------------------------------------------------------------------- access requests


async def _access_request(request: Request, task_id: str) -> tuple[Session, AccessRequest]:
    session = _session(request)
    task = await load_task(services_of(request), session.principal, task_id)
    return session, task


async def _task_context(request: Request, session: Session, task: AccessRequest) -> dict[str, Any]:
    services = services_of(request)
    now = services.clock.now()
    mission = await mission_of(services, task)
    view = approver_view(task, mission, now)
    default_until = now + DEFAULT_APPROVAL_LIFETIME
    if mission is not None:
        default_until = min(default_until, mission.expires_at)
    latest = mission.expires_at if mission is not None else default_until
    return {
        "t": task,
        "view": view,
        "status": view["status"],
        "countdown": present.countdown(now, task.expires_at),
        "requester": present.actor_text(task.requester),
        "decided_by": present.actor_text(task.decided_by),
        "denied": view["rendered_request"],
        "mission": mission,
        "mission_state": None if mission is None else mission.effective_state(now),
        "authority": [] if mission is None else present.entry_views(mission.effective_authority()),
        "action_properties": sorted((task.denied["action"].get("properties") or {}).items()),
        "prose": [("Business justification", [task.justification])] if task.justification else [],
        "until_value": present.expiry_input(default_until),
        "until_max": present.expiry_input(latest),
        "may_decide": policy.DECIDE_ACCESS_REQUEST.allows(session.principal),
        "nonce": new_token(),
        "done": request.query_params.get("done"),
    }


@router.get(
    "/access-requests/{task_id}",
    response_model=None,
    dependencies=[signed_in(policy.LIST_ACCESS_REQUESTS)],
)
async def access_request_page(request: Request, task_id: str) -> Response:
    """One access request: what was denied next to the Mission's current authority, the
    agent's justification (untrusted), and the approve and deny forms. This is the
    ``user-portal-url`` of an egress denial (SPEC 7.2)."""
    session, task = await _access_request(request, task_id)
    return render(request, "access_request.html", **await _task_context(request, session, task))


def _form_idempotency(request: Request, session: Session) -> IdempotencyRequest | None:
    """The form's nonce as an Idempotency-Key (a second submission of the same form answers
    with the first outcome and writes nothing), scoped to the person like an API key's."""
    form = _form(request)
    nonce = _text(form, "nonce")
    if nonce is None:
        return None
    fields = sorted((k, v) for k, v in form.multi_items() if k != "csrf" and isinstance(v, str))
    digest = hashlib.sha256((request.url.path + "\n" + json.dumps(fields)).encode()).hexdigest()
    return IdempotencyRequest(
        scope=session.principal.scope,
        key=f"console:{nonce}",
        request_hash=digest,
        status_code=200,
    )


@router.post(
    "/access-requests/{task_id}/approve",
    response_model=None,
    dependencies=[signed_in(policy.DECIDE_ACCESS_REQUEST)],
)
async def approve_access_page(request: Request, task_id: str) -> Response:
    """Approve exactly the denied request, until ``approved_until`` (UTC) for ``max_uses``
    permits; the approver rules are the API's (the ledger refuses, naming the rule)."""
    write = partial(approve_task, idempotency=_form_idempotency(request, _session(request)))
    then = _to(f"{PREFIX}/access-requests/{task_id}?done=approved")
    return await _form_decision(request, _access_request, task_id, _access_approval, write, then)


def _access_approval(_: AccessRequest, form: FormData) -> AccessApproveIn:
    until = _text(form, "approved_until")
    uses = _text(form, "max_uses")
    max_uses = None if uses is None else whole_number(uses, max_digits=9)
    if uses is not None and max_uses is None:
        raise InvalidRequest.at("/max_uses", "must be a whole number")
    return AccessApproveIn(
        reason=_text(form, "reason"),
        approved_until=None if until is None else present.form_instant(until, "/approved_until"),
        max_uses=max_uses,
    )


@router.post(
    "/access-requests/{task_id}/deny",
    response_model=None,
    dependencies=[signed_in(policy.DECIDE_ACCESS_REQUEST)],
)
async def deny_access_page(request: Request, task_id: str) -> Response:
    write = partial(deny_task, idempotency=_form_idempotency(request, _session(request)))
    then = _to(f"{PREFIX}/access-requests/{task_id}?done=denied")
    return await _form_decision(request, _access_request, task_id, _denial, write, then)


# ---------------------------------------------------------------------- operator


@router.get("/missions", response_model=None, dependencies=[signed_in(policy.LIST_MISSIONS)])
async def missions(
    request: Request,
    state: Annotated[str | None, Query(max_length=32)] = None,
    agent: Annotated[str | None, text_filter(128)] = None,
    subject: Annotated[str | None, text_filter(256)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    state = state or None
    if state is not None and state not in {s.value for s in MissionState}:
        raise InvalidRequest.at("/state", f"must be one of {[s.value for s in MissionState]}")
    filters = {
        "state": state,
        "client_id": (agent or "").strip() or None,
        "subject_sub": (subject or "").strip() or None,
    }
    return await _missions_page(
        request,
        "missions.html",
        filters,
        cursor,
        states=[s.value for s in MissionState],
        state=state or "",
        agent=filters["client_id"] or "",
        subject=filters["subject_sub"] or "",
    )


async def _missions_page(
    request: Request,
    template: str,
    filters: dict[str, str | None],
    cursor: str | None,
    **context: Any,
) -> Response:
    """One page of Missions from the mission board, in approval order."""
    services = services_of(request)
    items, next_cursor = await run_in_threadpool(
        services.missions.page,
        services.ledger.database,
        filters=filters,
        cursor=cursor,
        limit=MISSIONS_PAGE,
    )
    now = services.clock.now()
    return render(
        request,
        template,
        items=[(m, m.effective_state(now)) for m in items],
        next_cursor=next_cursor,
        first_page=cursor is None,
        **context,
    )


@router.get("/approved", response_model=None, dependencies=[signed_in(policy.INBOX)])
async def approved_missions(
    request: Request, cursor: Annotated[str | None, Query(max_length=128)] = None
) -> Response:
    """The Missions this person approved (SPEC 7.5), in approval order, from the read model
    (``mission_board.approver_key``)."""
    session = _session(request)
    filters: dict[str, str | None] = {"approver_key": policy.approver_key_of(session.principal)}
    return await _missions_page(request, "approved.html", filters, cursor)


async def _mission(request: Request, mission_id: str) -> tuple[Session, Mission]:
    session = _session(request)
    mission = await load_mission(
        services_of(request), session.principal, mission_id, policy.may_see_mission_in_console
    )
    return session, mission


async def _mission_context(request: Request, session: Session, mission: Mission) -> dict[str, Any]:
    services = services_of(request)
    now = services.clock.now()
    state = mission.effective_state(now)
    principal = session.principal
    history = (
        await run_in_threadpool(services.ledger.history, mission.id)
        if policy.READ_MISSION_EVENTS.allows(principal)
        else None
    )
    mandates = await run_in_threadpool(
        services.mandates.page,
        services.ledger.database,
        filters={"mission_id": mission.id},
        cursor=None,
        limit=MANDATES_SHOWN,
    )
    usage = await run_in_threadpool(services.ledger.mission_usage, mission)
    operations = [
        op.value
        for op, (allowed_from, _) in LEGAL_OPERATIONS.items()
        if state in allowed_from and policy.lifecycle_gate(op).allows(principal)
    ]
    return {
        "m": mission,
        "state": state,
        "countdown": present.countdown(now, mission.expires_at),
        "approver": present.actor_text(mission.approver),
        "prose": present.agent_prose(mission.intent),
        "effective": present.entry_views(mission.effective_authority()),
        "granted": present.entry_views(mission.authority_set),
        "proposed": present.entry_views(mission.proposed_authority),
        "narrowed": mission.proposed_authority != mission.authority_set,
        "terms": present.terms(mission.expires_at, mission.intent),
        "usage": present.usage_facts(usage),
        "contained": mission.contained,
        "mandates": present.mandate_tree(mandates[0], now),
        "more_mandates": mandates[1] is not None,
        "timeline": None if history is None else present.timeline(history),
        "operations": operations,
        "may_contain": policy.CONTAIN_MISSION.allows(principal) and state in _CONTAINABLE,
        "may_export": policy.EXPORT_EVIDENCE.allows(principal),
        "nonce": new_token(),
        "approved": request.query_params.get("approved") == "1",
    }


_CONTAINABLE = frozenset({MissionState.ACTIVE.value, MissionState.SUSPENDED.value})


@router.get(
    "/missions/{mission_id}",
    response_model=None,
    dependencies=[signed_in(policy.CONSOLE_MISSION)],
)
async def mission_page(request: Request, mission_id: str) -> Response:
    session, mission = await _mission(request, mission_id)
    return render(request, "mission.html", **await _mission_context(request, session, mission))


@router.get(
    "/missions/{mission_id}/panel",
    response_model=None,
    dependencies=[signed_in(policy.CONSOLE_MISSION, passive=True)],
)
async def mission_panel(request: Request, mission_id: str) -> Response:
    """The live part of the Mission page (fetched again on every change)."""
    session, mission = await _mission(request, mission_id)
    return render(
        request, "mission_panel.html", **await _mission_context(request, session, mission)
    )


@router.get(
    "/missions/{mission_id}/live",
    response_model=None,
    dependencies=[signed_in(policy.CONSOLE_MISSION, passive=True)],
)
async def mission_live(
    request: Request,
    mission_id: str,
    version: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """Server-Sent Events for one Mission page: ``changed`` when it changes (only for a
    Mission this person may see; the stream ends when the session does)."""
    session, mission = await _mission(request, mission_id)
    services = services_of(request)
    token = request.scope.get(SESSION_TOKEN_SCOPE)
    console = console_of(request)

    async def changed_since_page() -> bool:
        current = await run_in_threadpool(services.ledger.get_mission, mission.id)
        return current.version != version

    async def still_signed_in() -> bool:
        if not isinstance(token, str):
            return False
        now = services.clock.now()
        live = await run_in_threadpool(lambda: console.sessions.find(token, now=now))
        return (
            live is not None
            and live.id == session.id
            and (session.key_id is None or services.keys.current(session.key_id) is not None)
        )

    return EventSourceResponse(
        services.requests.stream(
            mission_changes(
                services.console_watch,
                mission.id,
                changed_since_page=changed_since_page,
                signed_in=still_signed_in,
                recheck_seconds=services.settings.sse_credential_recheck_seconds,
            )
        ),
        ping=services.settings.sse_heartbeat_seconds,
        send_timeout=SSE_SEND_TIMEOUT,
        headers={"X-Accel-Buffering": "no"},
    )


@dataclass(frozen=True)
class Guard:
    """What every change of a Mission carries: the reason, the form's nonce (a second
    submission changes nothing) and the version the person saw (409 if it moved on)."""

    reason: str
    nonce: str | None
    expected_version: int | None

    @classmethod
    def of(cls, form: FormData) -> Guard:
        version = _text(form, "expected_version")
        return cls(
            reason=_text(form, "reason") or "",
            nonce=_text(form, "nonce"),
            expected_version=None if version is None else whole_number(version),
        )


async def _confirmed(
    request: Request,
    mission: Mission,
    *,
    operation: str,
    fields: dict[str, str],
    guard: Guard,
    contained: dict[str, Any] | None,
    write: Callable[[], Awaitable[Written[Mission]]],
) -> Response:
    """The confirmation page (nothing written), or with ``confirmed=yes`` the change."""
    if _form(request).get("confirmed") != "yes":
        return render(
            request,
            "confirm.html",
            m=mission,
            operation=operation,
            action=request.url.path,
            fields={
                **fields,
                "reason": guard.reason,
                "nonce": guard.nonce or new_token(),
                "expected_version": str(guard.expected_version or mission.version),
            },
            contained=contained,
        )
    return await _written(request, await write(), _to(f"{PREFIX}/missions/{mission.id}"))


@router.post(
    "/missions/{mission_id}/lifecycle",
    response_model=None,
    dependencies=[signed_in(policy.CHANGE_LIFECYCLE)],
)
async def lifecycle(request: Request, mission_id: str) -> Response:
    """Suspend, resume (admin), revoke or complete: first a confirmation page, then (with
    ``confirmed``) the change."""
    session, mission = await _mission(request, mission_id)
    form = _form(request)
    operation = _text(form, "operation") or ""
    if operation not in {o.value for o in Operation}:
        raise InvalidRequest.at("/operation", "choose suspend, resume, revoke or complete")
    policy.lifecycle_gate(Operation(operation)).check(session.principal)
    guard = Guard.of(form)
    body = LifecycleIn(
        operation=operation,  # type: ignore[arg-type]
        reason=guard.reason,
        nonce=guard.nonce,
        expected_version=guard.expected_version,
    )
    return await _confirmed(
        request,
        mission,
        operation=operation,
        fields={"operation": operation},
        guard=guard,
        contained=None,
        write=lambda: change_lifecycle_of(
            services_of(request), session.principal, mission.id, body
        ),
    )


@router.post(
    "/missions/{mission_id}/containment",
    response_model=None,
    dependencies=[signed_in(policy.CONTAIN_MISSION)],
)
async def containment(request: Request, mission_id: str) -> Response:
    """Remove actions on one resource (and below) from the Mission: confirm, then apply."""
    session, mission = await _mission(request, mission_id)
    form = _form(request)
    resource = _text(form, "resource") or ""
    actions = [a for a in form.getlist("action") if isinstance(a, str) and a]
    item: dict[str, Any] = {"resource": resource}
    if actions:
        item["actions"] = actions
    guard = Guard.of(form)
    body = ContainmentIn(
        contained=[item],
        reason=guard.reason,
        nonce=guard.nonce,
        expected_version=guard.expected_version,
    )
    return await _confirmed(
        request,
        mission,
        operation="contain",
        fields={"resource": resource},
        guard=guard,
        contained=item,
        write=lambda: contain_mission(services_of(request), session.principal, mission.id, body),
    )


# ---------------------------------------------------------------------- auditor


CHECKPOINTS_SHOWN = 10
DECISIONS_PAGE = 50


@router.get("/audit/chain", response_model=None, dependencies=[signed_in(policy.CHAIN_STATUS)])
async def chain(
    request: Request, verify: Annotated[str | None, Query(max_length=8)] = None
) -> Response:
    """The hash chain and its signed checkpoints: the head, the newest events and
    checkpoints, the witnesses; on request a full verification of the chain and of every
    checkpoint against it (what ``mission-ledger audit verify --checkpoints`` does)."""
    services = services_of(request)
    head = await run_in_threadpool(services.ledger.head_position)
    recent = await run_in_threadpool(services.ledger.audit_log, max(0, head - 20), 20)
    store = CheckpointStore(services.ledger.database, services.ledger.event_log)
    checkpoints = await run_in_threadpool(store.newest, CHECKPOINTS_SHOWN)
    total = await run_in_threadpool(store.count)
    checkpointer = services.checkpoints
    directory = None if checkpointer is None else checkpointer.directory
    report = None
    if verify == "1":
        report = await run_in_threadpool(_verify_with_checkpoints, services, store, directory)
    settings = services.settings
    return render(
        request,
        "chain.html",
        head=head,
        recent=[
            {
                "position": e.position,
                "type": type(e.event).__qualname__,
                "originator": e.event.originator_id,
                "at": format_instant(e.event.timestamp),
                "actor": present.actor_text(getattr(e.event, "actor", None)),
                "hash": None if e.chain_hash is None else e.chain_hash.hex(),
            }
            for e in reversed(recent)
        ],
        checkpoints=[
            {
                "position": c.position,
                "events": c.checkpoint.events,
                "hash": c.checkpoint.chain_hash.hex(),
                "issued_at": format_instant(c.checkpoint.issued_at),
                "kid": c.kid,
            }
            for c in checkpoints
        ],
        checkpoint_count=total,
        behind=head - checkpoints[0].position if checkpoints else head,
        interval=settings.checkpoint_interval_seconds,
        witness_dir=None if directory is None else str(directory),
        witness_url=settings.checkpoint_witness_url is not None,
        counters=None if checkpointer is None else checkpointer.counters(),
        report=report,
    )


@dataclass(frozen=True)
class Verification:
    chain: ChainReport
    #: Checkpoints compared with the chain: the store's, and the witness directory's files.
    stored: int
    witnessed: int
    #: (where, position, problem) for each checkpoint the chain no longer matches.
    failures: list[tuple[str, int | None, str]]


def _verify_with_checkpoints(
    services: Services, store: CheckpointStore, directory: Path | None
) -> Verification:
    """The whole chain, and every checkpoint (the store's and, when the service writes a
    witness directory, its files) checked against it."""
    stored = store.between(0, 2**62)
    anchors = [
        Anchor(
            position=c.position,
            chain_hash=c.checkpoint.chain_hash,
            events=c.checkpoint.events,
            source=f"stored checkpoint {c.position}",
        )
        for c in stored
    ]
    witnessed = []
    if directory is not None and directory.is_dir():
        witnessed = read_witness_directory(directory, services.keyring.public_jwks)
        anchors += [w.anchor for w in witnessed if w.anchor is not None]
    report, anchor_failures = verify_chain_against(services.ledger.event_log.chain_rows(), anchors)
    failures: list[tuple[str, int | None, str]] = [
        (w.path.name, None, w.problem) for w in witnessed if w.problem is not None
    ]
    failures += [(f.anchor.source, f.anchor.position, f.problem) for f in anchor_failures]
    return Verification(report, len(stored), len(witnessed), failures)


@router.get(
    "/audit/decisions", response_model=None, dependencies=[signed_in(policy.READ_DECISION_LOG)]
)
async def decisions(
    request: Request,
    mission: Annotated[str | None, text_filter(128)] = None,
    mandate: Annotated[str | None, text_filter(128)] = None,
    agent: Annotated[str | None, text_filter(128)] = None,
    decision: Annotated[str | None, Query(max_length=8)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=32)] = None,
    cursor: Annotated[str | None, Query(max_length=8192)] = None,
) -> Response:
    """Decision log search (``GET /v1/audit/decisions``'s filters and cursor), read-only."""
    services = services_of(request)
    fields = {
        "mission": (mission or "").strip(),
        "mandate": (mandate or "").strip(),
        "agent": (agent or "").strip(),
        "decision": (decision or "").strip(),
        "from": (start or "").strip(),
        "to": (end or "").strip(),
    }
    where = decision_filter(
        fields["mission"] or None,
        fields["mandate"] or None,
        fields["agent"] or None,
        fields["decision"] or None,
        present.form_instant(fields["from"], "/from") if fields["from"] else None,
        present.form_instant(fields["to"], "/to") if fields["to"] else None,
    )
    records, next_cursor = await run_in_threadpool(
        services.decision_log.page, where, cursor=cursor or None, limit=DECISIONS_PAGE
    )
    return render(
        request,
        "decisions.html",
        fields=fields,
        records=[present.decision_row(r) for r in records],
        next_query=None
        if next_cursor is None
        else urlencode({**{k: v for k, v in fields.items() if v}, "cursor": next_cursor}),
        searched=any(fields.values()) or cursor is not None,
        first_page=cursor is None,
        first_query=urlencode({k: v for k, v in fields.items() if v}),
    )


@router.get("/audit/export", response_model=None, dependencies=[signed_in(policy.EXPORT_EVIDENCE)])
async def export_page(
    request: Request, mission: Annotated[str | None, text_filter(128)] = None
) -> Response:
    """The evidence export form: one Mission, or a time range."""
    return render(request, "export.html", mission=(mission or "").strip())


@router.get(
    "/audit/export/bundle",
    response_model=None,
    dependencies=[signed_in(policy.EXPORT_EVIDENCE)],
)
async def export_bundle(
    request: Request,
    mission: Annotated[str | None, text_filter(128)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=32)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=32)] = None,
) -> Response:
    """The evidence bundle (``GET /v1/audit/export``), downloaded: a signed tar."""
    mission = (mission or "").strip() or None
    start = (start or "").strip() or None
    end = (end or "").strip() or None
    return await export_response(
        services_of(request),
        mission,
        None if start is None else present.form_instant(start, "/from"),
        None if end is None else present.form_instant(end, "/to"),
    )
