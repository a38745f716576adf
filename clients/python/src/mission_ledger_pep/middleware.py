"""``MissionLedgerMiddleware``: plain ASGI (works under Starlette, FastAPI or anything ASGI).

For each HTTP request the ``mapper(scope, headers)`` (sync or async) returns the AuthZEN
request, or None for a route that is not protected. A protected request reaches the app
only after a permit; everything else is answered here and the app is never called:

* a ``MandateGuard`` (optional) refuses a revoked, expired, foreign or unbound Mandate
  (``context.mandate`` compact token, proven key at ``context.proof.jkt``) before any round
  trip: 403;
* a deny (including the fail-closed ``pdp_unavailable``, and a mapper that raises) is 403
  ``application/problem+json`` carrying the reason and, when requestable, the
  ``access_request`` the agent can use;
* a requestable denial of an ``egress`` resource whose decision carries
  ``context.access_request.captive_url`` is 511 with ``Link: <captive_url>;
  rel="captive-portal"`` (RFC 6585, RFC 8908).

The permit decision is left in ``scope["mission_ledger.decision"]`` for the app.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from mission_ledger_pep.decision import Decision
from mission_ledger_pep.mandates import MandateGuard, MandateRefused
from mission_ledger_pep.pdp import AsyncPdpClient

log = logging.getLogger("mission_ledger_pep.middleware")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Mapper = Callable[
    [Scope, Mapping[str, str]], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"
]
PROBLEM = "urn:mission-ledger:problem:"


def headers_of(scope: Scope) -> dict[str, str]:
    """The request headers, lower-cased names (repeated headers joined with a comma)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def problem(status: int, reason: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": PROBLEM + reason,
        "title": "Forbidden" if status == 403 else "Network Authentication Required",
        "status": status,
        "detail": detail,
        "reason": reason,
        **extra,
    }


class MissionLedgerMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        pdp: AsyncPdpClient,
        mapper: Mapper,
        guard: MandateGuard | None = None,
    ) -> None:
        self.app = app
        self.pdp = pdp
        self.mapper = mapper
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            mapped = self.mapper(scope, headers_of(scope))
            request = await mapped if inspect.isawaitable(mapped) else mapped
        except Exception:  # fail closed: a broken mapper protects everything
            log.exception("the request mapper failed")
            await _respond(send, 403, problem(403, "mapper_failed", "request mapping failed"))
            return
        if request is None:
            await self.app(scope, receive, send)
            return
        refusal = self._guard(request)
        if refusal is not None:
            await _respond(send, 403, problem(403, refusal.reason, str(refusal)))
            return
        decision = await self.pdp.evaluate(request)
        if decision.allowed:
            scope["mission_ledger.decision"] = decision
            await self.app(scope, receive, send)
            return
        await _deny(send, request, decision)

    def _guard(self, request: Mapping[str, Any]) -> MandateRefused | None:
        if self.guard is None:
            return None
        context = request.get("context") or {}
        token = context.get("mandate")
        if not isinstance(token, str) or token.count(".") != 2:
            return None  # a bare Mandate id: only the PDP can judge it
        proof = context.get("proof") or {}
        jkt = proof.get("jkt") if isinstance(proof, dict) else None
        try:
            self.guard.check(token, jkt if isinstance(jkt, str) else None)
        except MandateRefused as refused:
            return refused
        return None


async def _deny(send: Send, request: Mapping[str, Any], decision: Decision) -> None:
    reason = decision.reason or "denied"
    extra: dict[str, Any] = {}
    access_request = decision.access_request
    if access_request is not None:
        extra["access_request"] = dict(access_request)
    if "evaluation_id" in decision.context:
        extra["evaluation_id"] = decision.context["evaluation_id"]
    captive = access_request.get("captive_url") if access_request else None
    resource = request.get("resource") or {}
    if isinstance(captive, str) and resource.get("type") == "egress":
        body = problem(511, reason, "the destination needs approval", **extra)
        link = f'<{captive}>; rel="captive-portal"'
        await _respond(send, 511, body, [(b"link", link.encode("latin-1"))])
        return
    await _respond(send, 403, problem(403, reason, "Mission Ledger denied the request", **extra))


async def _respond(
    send: Send,
    status: int,
    body: Mapping[str, Any],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
