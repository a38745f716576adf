"""The console's plumbing: templates, headers, cookies, and the route class that signs a
person in (from the session cookie), checks the route's gates (``api.policy``) and the CSRF
token of every POST before its handler runs, and turns every refusal into an HTML page.

Every console response carries a Content-Security-Policy with no ``'unsafe-inline'`` or
``'unsafe-eval'`` and nothing from another origin, ``frame-ancestors 'none'`` with
``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin`` and, except the static assets,
``Cache-Control: no-store``.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import policy
from api.console.oidc import OidcClient
from api.console.sessions import Session, SessionStore
from api.errors import status_of, validation_errors
from api.policy import Gate
from api.services import Services, get_services
from ledger.domain.errors import Forbidden, LedgerError, NotAuthenticated
from ledger.domain.instants import format_instant, parse_instant
from ledger.domain.streams import is_loopback
from ledger.persistence.database import Database
from ledger.settings import Settings

HERE = Path(__file__).parent
PREFIX = "/console"
STATIC_PREFIX = PREFIX + "/static"
SESSION_SCOPE = "mission_ledger.console_session"
SESSION_TOKEN_SCOPE = "mission_ledger.console_token"  # noqa: S105 - a scope key

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    # Same-origin: forms carry their Origin (checked below), and no other site ever sees a
    # console address (the OpenID callback's code included).
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
]


class ConsoleHeaders:
    """ASGI middleware: the console's security headers on every answer under ``/console``
    (pages, redirects, errors, static assets)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC_PREFIX + "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in HEADERS} | {b"cache-control"}
                headers = [h for h in message.get("headers", []) if h[0] not in names]
                headers.extend(HEADERS)
                headers.append((b"cache-control", b"no-cache" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback(parts.hostname)


@dataclass(frozen=True)
class Cookies:
    """``HttpOnly``, ``SameSite=Lax``, ``Secure`` unless the issuer is loopback http (then
    without the ``__Host-`` prefix, which needs ``Secure``)."""

    secure: bool

    @property
    def session(self) -> str:
        return "__Host-ml_console" if self.secure else "ml_console"

    @property
    def attempt(self) -> str:
        return "__Host-ml_signin" if self.secure else "ml_signin"

    def set(self, response: Response, name: str, value: str, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


# ---------------------------------------------------------------------- templates

_REVEAL = re.compile(
    r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]"
)


def untrusted(value: object) -> Markup:
    """Agent-written text, escaped, with invisible and direction-changing characters shown
    as visible codes (they could make the text read differently from what it is)."""
    text = str(value)
    parts: list[str] = []
    last = 0
    for match in _REVEAL.finditer(text):
        parts.append(str(escape(text[last : match.start()])))
        char = match.group()
        name = unicodedata.name(char, "CONTROL")
        parts.append(f'<span class="reveal" title="{escape(name)}">[U+{ord(char):04X}]</span>')
        last = match.end()
    parts.append(str(escape(text[last:])))
    return Markup("".join(parts))  # noqa: S704 - every piece of text above is escaped


def instant(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else format_instant(value)


def when(value: datetime | str | None) -> str:
    """An instant for people: to the minute, in UTC."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = parse_instant(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["untrusted"] = untrusted
    env.filters["instant"] = instant
    env.filters["when"] = when
    env.globals["static"] = lambda name: f"{STATIC_PREFIX}/{name}"
    return env


@dataclass
class Console:
    """Everything the console keeps per process (``app.state.console``)."""

    oidc: OidcClient | None
    templates: Environment
    cookies: Cookies
    key_signin: bool
    origin: str
    idle: timedelta
    lifetime: timedelta
    #: The sessions, in the store's database (``attach``, when the service starts).
    store: SessionStore | None = None

    @property
    def sessions(self) -> SessionStore:
        assert self.store is not None, "the console is attached when the service starts"
        return self.store

    def attach(self, db: Database) -> None:
        self.store = SessionStore(db, idle=self.idle, lifetime=self.lifetime)

    @classmethod
    def create(cls, settings: Settings) -> Console:
        issuer = urlsplit(settings.public_issuer)
        return cls(
            idle=timedelta(minutes=settings.console_idle_minutes),
            lifetime=timedelta(hours=settings.console_session_hours),
            oidc=OidcClient(settings) if settings.console_oidc_issuer else None,
            templates=templates(),
            cookies=Cookies(secure=not loopback_http(settings.public_issuer)),
            key_signin=settings.console_key_signin,
            origin=f"{issuer.scheme}://{issuer.netloc}",
        )


def console_of(request: Request) -> Console:
    console = request.app.state.console
    assert isinstance(console, Console)
    return console


def services_of(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page: ``template`` with ``context``, the person's session and its CSRF token."""
    session = request.scope.get(SESSION_SCOPE)
    signed = session if isinstance(session, Session) else None
    nav = []
    if signed is not None:
        nav = [
            (f"{PREFIX}/{where}", label)
            for where, label, gate in (
                ("inbox", "Inbox", policy.INBOX),
                ("approved", "Approved by me", policy.INBOX),
                ("missions", "Missions", policy.LIST_MISSIONS),
                ("audit/chain", "Chain", policy.CHAIN_STATUS),
                ("audit/decisions", "Decisions", policy.READ_DECISION_LOG),
                ("audit/export", "Export", policy.EXPORT_EVIDENCE),
            )
            if gate.allows(signed.principal)
        ]
    html = (
        console_of(request)
        .templates.get_template(template)
        .render(
            session=signed,
            csrf="" if signed is None else signed.csrf,
            path=request.url.path,
            nav=nav,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path of this site, never another origin."""
    if not value or not value.startswith(PREFIX + "/") or value.startswith("//"):
        return PREFIX + "/"
    if "\\" in value or any(ord(c) < 0x20 for c in value):
        return PREFIX + "/"
    return value


# ---------------------------------------------------------------------- gates


class SignInRequired(Exception):
    """No live session: the person is sent to the sign-in page."""


class _SignedIn:
    """The dependency form of a console gate (the route class checks it first)."""

    def __init__(self, gate: Gate | None, *, passive: bool) -> None:
        self.gate = gate
        self.passive = passive

    async def __call__(self, request: Request) -> Session:
        session = request.scope.get(SESSION_SCOPE)
        if not isinstance(session, Session):
            raise SignInRequired
        if self.gate is not None:
            self.gate.check(session.principal)
        return session


def signed_in(gate: Gate | None = None, *, passive: bool = False) -> Any:
    """The route dependency of a console page: a signed-in person holding one of ``gate``'s
    roles (any person without a gate). ``passive``: requests the page makes by itself (live
    updates) do not count as activity for the idle timeout."""
    return Depends(_SignedIn(gate, passive=passive))


def gates_of(route: APIRoute) -> list[_SignedIn]:
    return [
        d.dependency
        for d in route.dependencies
        if isinstance(d, DependsParam) and isinstance(d.dependency, _SignedIn)
    ]


async def current_session(request: Request, *, touch: bool) -> Session | None:
    """The live session of the request's cookie (idle, expired, or opened with an API key
    since revoked: None, and it ends)."""
    console = console_of(request)
    services = await get_services(request)
    token = request.cookies.get(console.cookies.session)
    if not token:
        return None
    now = services.clock.now()
    session = await run_in_threadpool(console.sessions.find, token, now=now, touch=touch)
    if session is None:
        return None
    if session.key_id is not None:
        entry = services.keys.current(session.key_id)
        if entry is None or entry.name != session.principal.name:
            await run_in_threadpool(console.sessions.end, token)
            return None
    request.scope[SESSION_TOKEN_SCOPE] = token
    return session


async def check_csrf(request: Request, expected: str) -> None:
    """403 unless the form carries ``expected`` (and the request is not cross-origin)."""
    console = console_of(request)
    origin = request.headers.get("origin")
    if origin is not None and origin != console.origin:
        raise Forbidden("this form was sent from another site")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("this form was sent from another site")
    form = await request.form()
    presented = form.get("csrf")
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), expected.encode()
    ):
        raise Forbidden("the form's security token is missing or wrong: reload the page")


def error_page(request: Request, error: LedgerError) -> HTMLResponse:
    status = status_of(error)
    return render(
        request,
        "error.html",
        status_code=status,
        status=status,
        title=error.title,
        detail=error.detail,
        problems=[f"{e.pointer or '/'}: {e.message}" for e in error.errors],
        sign_in=isinstance(error, NotAuthenticated),
    )


def invalid_form(request: Request, error: ValidationError) -> HTMLResponse:
    problems = validation_errors(RequestValidationError(error.errors()))
    return render(
        request,
        "error.html",
        status_code=400,
        status=400,
        title="Invalid request",
        detail="Some of the values you entered cannot be used.",
        problems=[f"{p.pointer or '/'}: {p.message}" for p in problems],
        sign_in=False,
    )


class ConsoleRoute(APIRoute):
    """Signs the person in, checks the route's gates and every POST's CSRF token before the
    handler runs; refusals are pages (403, 404, ...), a missing session a redirect to the
    sign-in page. Routes without a ``signed_in`` gate are the public sign-in pages, which
    check their own token (the sign-in attempt's)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        gates = gates_of(self)
        passive = any(g.passive for g in gates)

        async def console(request: Request) -> Response:
            try:
                if gates:
                    session = await current_session(request, touch=not passive)
                    if session is None:
                        raise SignInRequired
                    request.scope[SESSION_SCOPE] = session
                    for gate in gates:
                        if gate.gate is not None:
                            gate.gate.check(session.principal)
                    if request.method == "POST":
                        await check_csrf(request, session.csrf)
                return await handler(request)
            except SignInRequired:
                if passive:  # a page's own request (live updates): no redirect to follow
                    return HTMLResponse(
                        "signed out", status_code=401, headers={"HX-Redirect": f"{PREFIX}/signin"}
                    )
                wanted = request.url.path if request.method == "GET" else PREFIX + "/"
                return see_other(f"{PREFIX}/signin?next={quote(wanted, safe='/')}")
            except LedgerError as error:
                return error_page(request, error)
            except ValidationError as error:
                return invalid_form(request, error)

        return console
