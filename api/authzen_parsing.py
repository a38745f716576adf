"""Parsing AuthZEN Authorization API 1.0 requests, strictly and fast.

Transport and shape errors are ``AuthZenBadRequest`` (HTTP 400, never 422, with a
plain message: the AuthZEN error body is "an error message string"). Unknown
members are ignored (forward compatibility); ``properties`` must be objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.json_body import DEFAULT_MAX_DEPTH, JsonBodyError, parse_json_fast
from projections.pdp import Action, Evaluation, Resource, Subject

MAX_ID_LENGTH = 4096
MAX_EVALUATIONS = 256
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


class AuthZenBadRequest(Exception):  # named after the HTTP status it becomes
    """A malformed AuthZEN request (HTTP 400)."""


def parse_body(
    content_type: str | None, body: bytes, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        msg = "the request body must be application/json"
        raise AuthZenBadRequest(msg)
    if not body:
        msg = "the request body is empty"
        raise AuthZenBadRequest(msg)
    try:
        value = parse_json_fast(body, max_depth)
    except JsonBodyError as error:
        raise AuthZenBadRequest(str(error)) from None
    if not isinstance(value, dict):
        msg = "the request body must be a JSON object"
        raise AuthZenBadRequest(msg)
    return value


def _properties(value: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    properties = value.get("properties")
    if properties is None:
        return {}
    if not isinstance(properties, dict):
        msg = f"{where}.properties must be an object"
        raise AuthZenBadRequest(msg)
    return properties


def _string(value: Mapping[str, Any], key: str, where: str) -> str:
    item = value.get(key)
    if not isinstance(item, str) or not item:
        msg = f"{where}.{key} is required and must be a non-empty string"
        raise AuthZenBadRequest(msg)
    if len(item) > MAX_ID_LENGTH:
        msg = f"{where}.{key} is too long"
        raise AuthZenBadRequest(msg)
    return item


def _object(body: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        msg = f"{key} is required and must be an object"
        raise AuthZenBadRequest(msg)
    return value


def subject_of(body: Mapping[str, Any], *, need_id: bool = True) -> Subject:
    value = _object(body, "subject")
    return Subject(
        type=_string(value, "type", "subject"),
        id=_string(value, "id", "subject") if need_id else str(value.get("id") or ""),
        properties=_properties(value, "subject"),
    )


def resource_of(body: Mapping[str, Any], *, need_id: bool = True) -> Resource:
    value = _object(body, "resource")
    return Resource(
        type=_string(value, "type", "resource"),
        id=_string(value, "id", "resource") if need_id else str(value.get("id") or ""),
        properties=_properties(value, "resource"),
    )


def action_of(body: Mapping[str, Any]) -> Action:
    value = _object(body, "action")
    return Action(name=_string(value, "name", "action"), properties=_properties(value, "action"))


def context_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    value = body.get("context")
    if value is None:
        return {}
    if not isinstance(value, dict):
        msg = "context must be an object"
        raise AuthZenBadRequest(msg)
    return value


def evaluation_of(body: Mapping[str, Any]) -> Evaluation:
    return Evaluation(
        subject=subject_of(body),
        action=action_of(body),
        resource=resource_of(body),
        context=context_of(body),
    )


@dataclass(frozen=True)
class Batch:
    """An Access Evaluations request: per-item requests (merged with the defaults, or the
    error that makes that item a ``false`` decision) and the semantic. ``requests`` holds
    each item's request as submitted (merged with the defaults), for the decision log."""

    items: list[Evaluation | AuthZenBadRequest]
    semantic: str
    single: bool
    requests: list[object]


def batch_of(body: Mapping[str, Any]) -> Batch:
    options = body.get("options")
    semantic = "execute_all"
    if options is not None:
        if not isinstance(options, dict):
            msg = "options must be an object"
            raise AuthZenBadRequest(msg)
        chosen = options.get("evaluations_semantic", semantic)
        if chosen not in SEMANTICS:
            msg = f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}"
            raise AuthZenBadRequest(msg)
        semantic = str(chosen)
    evaluations = body.get("evaluations")
    if evaluations is None or evaluations == []:
        return Batch(items=[evaluation_of(body)], semantic=semantic, single=True, requests=[body])
    if not isinstance(evaluations, list):
        msg = "evaluations must be an array"
        raise AuthZenBadRequest(msg)
    if len(evaluations) > MAX_EVALUATIONS:
        msg = f"at most {MAX_EVALUATIONS} evaluations per request"
        raise AuthZenBadRequest(msg)
    items: list[Evaluation | AuthZenBadRequest] = []
    requests: list[object] = []
    for index, item in enumerate(evaluations):
        if not isinstance(item, dict):
            items.append(AuthZenBadRequest(f"evaluations[{index}] must be an object"))
            requests.append(item)
            continue
        merged = {
            key: item[key] if key in item else body.get(key)
            for key in ("subject", "action", "resource", "context")
        }
        requests.append({key: value for key, value in merged.items() if value is not None})
        try:
            items.append(evaluation_of(merged))
        except AuthZenBadRequest as error:
            items.append(error)
    return Batch(items=items, semantic=semantic, single=False, requests=requests)


@dataclass(frozen=True)
class Page:
    token: str | None
    limit: int | None


def page_of(body: Mapping[str, Any]) -> Page:
    value = body.get("page")
    if value is None:
        return Page(None, None)
    if not isinstance(value, dict):
        msg = "page must be an object"
        raise AuthZenBadRequest(msg)
    token = value.get("token")
    if token is not None and not isinstance(token, str):
        msg = "page.token must be a string"
        raise AuthZenBadRequest(msg)
    limit = value.get("limit")
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or limit < 0 or limit > 10_000
    ):
        msg = "page.limit must be a non-negative integer"
        raise AuthZenBadRequest(msg)
    return Page(token or None, limit)


def min_position_of(context: Mapping[str, Any]) -> int | None:
    consistency = context.get("consistency")
    if consistency is None:
        return None
    if not isinstance(consistency, dict):
        msg = "context.consistency must be an object"
        raise AuthZenBadRequest(msg)
    value = consistency.get("min_position")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        msg = "context.consistency.min_position must be a non-negative integer"
        raise AuthZenBadRequest(msg)
    return value
