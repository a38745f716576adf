"""The one table from errors to HTTP: RFC 9457 problem details.

Every deliberate failure is a ``LedgerError``; this module maps its class to a
status code and renders ``application/problem+json`` with a stable ``type`` URN
(``urn:mission-ledger:problem:<code>``), the same ``code`` as an extension member
for clients that prefer a plain string, and field errors as JSON Pointers.
Framework errors (bad JSON, schema violations, unknown routes, wrong methods) go
through the same renderer, so every 4xx has the same shape. Nothing here decides
*whether* something fails; it only says how a failure looks on the wire.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.domain.errors import (
    AuthorityExceeded,
    Conflict,
    FieldError,
    Forbidden,
    Gone,
    InvalidRequest,
    LedgerError,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
    Unavailable,
)

log = logging.getLogger("mission_ledger.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:mission-ledger:problem:"

# Most specific class first; the first match wins.
STATUS: list[tuple[type[LedgerError], int]] = [
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (AuthorityExceeded, 400),
    (InvalidRequest, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Gone, 410),
    (TooManyRequests, 429),
    (Unavailable, 503),
]

WWW_AUTHENTICATE = 'Bearer realm="mission-ledger"'


def status_of(error: LedgerError) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


def problem_json(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: tuple[FieldError, ...] = (),
    extensions: Mapping[str, Any] | None = None,
    problem_type: str | None = None,
) -> dict[str, Any]:
    """The members of a problem+json body (RFC 9457)."""
    body: dict[str, Any] = {
        "type": problem_type or TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors:
        body["errors"] = [e.to_json() for e in errors]
    for key, value in (extensions or {}).items():
        body.setdefault(key, value)
    return body


def problem_body(error: LedgerError) -> dict[str, Any]:
    """The problem+json members of ``error`` (an item of a multi-part answer)."""
    return problem_json(
        status_of(error),
        error.code,
        error.title,
        error.detail,
        errors=error.errors,
        extensions={k: v for k, v in error.extensions.items() if k != "error"},
        problem_type=error.problem_type,
    )


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: tuple[FieldError, ...] = (),
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    problem_type: str | None = None,
) -> JSONResponse:
    body = problem_json(
        status,
        code,
        title,
        detail,
        errors=errors,
        extensions=extensions,
        problem_type=problem_type,
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def ledger_error_response(
    error: LedgerError, extra: Mapping[str, Any] | None = None
) -> JSONResponse:
    status = status_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, NotAuthenticated):
        challenge = WWW_AUTHENTICATE
        if error.extensions.get("error"):
            challenge += f', error="{error.extensions["error"]}"'
        headers["WWW-Authenticate"] = challenge
    if isinstance(error, TooManyRequests) and "retry_after" in error.extensions:
        headers["Retry-After"] = str(error.extensions["retry_after"])
    extensions = {k: v for k, v in error.extensions.items() if k != "error"}
    extensions.update(extra or {})
    return problem(
        status,
        error.code,
        error.title,
        error.detail,
        errors=error.errors,
        extensions=extensions,
        headers=headers,
        problem_type=error.problem_type,
    )


#: RFC 8935/8936 ``err`` codes (IANA "Security Event Token Error Codes") by status.
SET_ERR_CODES = {401: "authentication_failed", 403: "access_denied"}


def set_transfer_error_response(error: LedgerError) -> JSONResponse:
    """An error of a SET transfer endpoint (RFC 8936 poll): the same problem details as
    everywhere, with RFC 8936's ``err`` and ``description`` members besides, so one body
    serves both a problem+json client and an SSF receiver library."""
    err = SET_ERR_CODES.get(status_of(error), "invalid_request")
    response = ledger_error_response(error, {"err": err, "description": error.detail})
    response.headers["Cache-Control"] = "no-store"
    return response


def _pointer(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts) if parts else ""


def validation_errors(exc: RequestValidationError) -> tuple[FieldError, ...]:
    found: list[FieldError] = []
    for item in exc.errors():
        loc = tuple(item.get("loc", ()))
        kind = item.get("type", "")
        if kind == "json_invalid":
            # Raised by ``api.json_body``, whose message says what is wrong with the body.
            reason = str(item.get("ctx", {}).get("error") or "the body is not valid JSON")
            return (FieldError("", reason),)
        message = str(item.get("msg", "invalid"))
        if kind == "missing":
            message = "is required"
        elif kind == "extra_forbidden":
            message = "is not a recognised member"
        found.append(FieldError(_pointer(loc), message))
    return tuple(found[:20])


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """A 405's ``Allow``: every method of the routes serving ``path`` (the router names only
    the first route matching it, and several routes may share a path). Where a literal path
    and a template both match (``/v1/mandates/introspect``, ``/v1/mandates/{mandate_id}``),
    the resource is the literal one, as the OpenAPI document describes it."""
    matching: dict[int, set[str]] = {}
    for route in iter_route_contexts(app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(path):
            parameters = str(route.path).count("{")
            matching.setdefault(parameters, set()).update(route.methods or ())
    return sorted(matching[min(matching)]) if matching else []


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem details."""

    @app.exception_handler(LedgerError)
    async def _ledger(_: Request, exc: LedgerError) -> JSONResponse:
        return ledger_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        detail = "; ".join(f"{e.pointer or '/'}: {e.message}" for e in errors) or "invalid request"
        return problem(400, "invalid_request", "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            400: ("invalid_request", "Invalid request"),
            404: ("not_found", "Not found"),
            405: ("method_not_allowed", "Method not allowed"),
            413: ("payload_too_large", "Payload too large"),
            415: ("unsupported_media_type", "Unsupported media type"),
        }
        code, title = codes.get(exc.status_code, ("http_error", "HTTP error"))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem(exc.status_code, code, title, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # noqa: ARG001
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred")
