"""The one JSON parser for request bodies, and the FastAPI route class that uses it.

Every route that reads a JSON body reads it through ``parse_json`` (or ``parse_json_fast``
on the decision path), so every body obeys the same rules, beyond RFC 8259 syntax:

* arrays and objects nest at most ``max_depth`` levels (``Settings.json_max_depth``);
  a deeper document would otherwise exhaust the recursion of the parser or of the code
  that walks the value (canonicalisation, validation, storage);
* every string (member names too) is a sequence of Unicode scalar values: a lone
  surrogate escape such as ``"\\udfff"`` cannot be encoded as UTF-8, so it could be
  neither stored, signed nor echoed;
* ``NaN``, ``Infinity`` and ``-Infinity`` (which JSON does not have), and numbers beyond
  the range of a double, are refused.

A body that breaks a rule raises ``JsonBodyError`` with a message saying which; each route
renders it in its own 400 shape (problem details, AuthZEN's plain text, RFC 8936's
``{"err", "description"}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from email.message import Message
from typing import Any, NoReturn, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

DEFAULT_MAX_DEPTH = 64

NOT_JSON = "the body is not valid JSON"


class JsonBodyError(json.JSONDecodeError):
    """A request body that is not acceptable JSON (HTTP 400).

    A ``JSONDecodeError`` so that FastAPI, reading a declared body model, reports it as
    its ``json_invalid`` validation error (rendered by ``api.errors``) with this message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, "", 0)
        self.message = message

    def __str__(self) -> str:
        return self.message


def too_deep(max_depth: int) -> JsonBodyError:
    return JsonBodyError(f"the body nests arrays and objects deeper than {max_depth} levels")


def not_unicode() -> JsonBodyError:
    return JsonBodyError(
        "the body holds a string that is not valid Unicode (a lone surrogate escape)"
    )


def _non_finite(name: str) -> NoReturn:
    raise JsonBodyError(f"the body holds {name}, which is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonBodyError(f"the body holds a number beyond the range of a double ({text[:32]})")
    return value


def _check(value: Any, max_depth: int) -> None:
    """Walk ``value`` (iteratively): no deeper than ``max_depth``, every string encodable."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise not_unicode() from None
        elif isinstance(item, dict | list):
            depth += 1
            if depth > max_depth:
                raise too_deep(max_depth)
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((member, depth) for member in item.values())
            else:
                stack.extend((member, depth) for member in item)


def parse_json(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """The JSON value of ``raw``, numbers exact (integers of any size stay integers)."""
    try:
        value = json.loads(raw, parse_constant=_non_finite, parse_float=_finite)
    except JsonBodyError:
        raise
    except RecursionError:
        raise too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError):
        raise JsonBodyError(NOT_JSON) from None
    _check(value, max_depth)
    return value


def parse_json_fast(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``parse_json`` for the decision path: orjson, which already refuses lone surrogates,
    ``NaN`` and documents over 1,024 levels deep, so a value it returns is walked only when
    it could nest too deep. (orjson reads integers beyond 64 bits as doubles.) A document
    orjson refuses is judged by ``parse_json``, which says why, or accepts what RFC 8259
    allows and orjson does not."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_json(raw, max_depth)
    if raw.count(b"[") + raw.count(b"{") > max_depth and _deeper(value, max_depth):
        raise too_deep(max_depth)
    return value


def _deeper(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests arrays and objects deeper than ``max_depth`` (its strings are
    not looked at: orjson refused any that is not Unicode). A third of ``_check``'s time
    on a batch of a few hundred usage reports or evaluations."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        for member in item.values() if isinstance(item, dict) else item:
            if isinstance(member, dict | list):
                # (A loop: an extend of a comprehension per container takes twice as long.)
                stack.append((member, depth + 1))  # noqa: PERF401
    return False


def max_depth_of(request: Request) -> int:
    """The configured nesting limit (the default before the app has started)."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return DEFAULT_MAX_DEPTH
    return int(services.settings.json_max_depth)


async def json_of(request: Request) -> Any:
    """The request's body parsed by ``parse_json`` (``JsonBodyError`` if refused)."""
    return parse_json(await request.body(), max_depth_of(request))


T = TypeVar("T")


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would read a body of ``content_type`` as JSON: ``application/json`` or
    ``application/*+json``; none given, no (FastAPI's ``strict_content_type``, on here)."""
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def body_value(request: Request) -> Any:
    """The body of a plain route on the decision path, read as FastAPI reads a route's
    declared body (``JsonBodyRoute``), refused the same way (``RequestValidationError``,
    rendered by ``api.errors`` as 400 ``invalid_request``): JSON parsed by
    ``parse_json_fast``; any other media type, or none, left as bytes (no model takes them).
    Judge it with ``validated``. No dependency solving and no response model: what makes a FastAPI
    route cost several times a decision."""
    raw = await request.body()
    value: Any = raw
    if raw and _is_json(request.headers.get("content-type")):
        try:
            value = parse_json_fast(raw, max_depth_of(request))
        except JsonBodyError as error:
            invalid = {
                "type": "json_invalid",
                "loc": ("body", error.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": error.msg},
            }
            raise RequestValidationError([invalid]) from None
    if not raw or value is None:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    return value


def validated(value: Any, adapter: TypeAdapter[T]) -> T:
    """``value`` (a ``body_value``) as ``adapter`` reads it; its errors as FastAPI's."""
    try:
        return adapter.validate_python(value)
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        ) from None


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = await json_of(self)
        return self._json


class JsonBodyRoute(APIRoute):
    """An ``APIRoute`` whose declared body models are read with ``parse_json``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict
