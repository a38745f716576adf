"""The wire side of the PDP clients, shared by the sync and async flavours: URLs, headers,
bodies and how answers are read (every doubtful answer reads as a deny)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from mission_ledger_pep.decision import Decision

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
SEARCH = "/access/v1/search/"
ACCESS_REQUESTS = "/access/v1/requests"
USAGE = "/v1/usage"
#: ARAP task states that end a task; anything else (unknown included) is not approved.
TERMINAL = frozenset({"approved", "denied", "expired", "cancelled", "failed", "partial"})
REQUEST_REJECTED = "pdp_request_rejected"


class AccessRequestError(Exception):
    """The access-request service refused a call (``status`` and problem ``type``)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.type = str(problem.get("type", ""))
        self.problem = dict(problem)
        super().__init__(f"{status} {self.type or problem.get('title', '')}".strip())


def headers(api_key: str | None, min_position: int | None = None) -> dict[str, str]:
    out = {"Accept": "application/json"}
    if api_key:
        out["Authorization"] = f"Bearer {api_key}"
    if min_position is not None:
        out["Ledger-Min-Position"] = str(int(min_position))
    return out


def _body(response: httpx.Response) -> object:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def decision_of(response: httpx.Response, request: Mapping[str, Any] | None) -> Decision:
    """A 200 decision, else the fail-closed deny."""
    if response.status_code >= 500:
        return Decision.unavailable(f"the PDP answered {response.status_code}")
    if response.status_code != 200:
        detail = f"the PDP refused the request with {response.status_code}"
        context = {"reason": REQUEST_REJECTED, "detail": detail}
        return Decision(allowed=False, reason=REQUEST_REJECTED, context=context)
    return Decision.from_json(_body(response), request)


def decisions_of(
    response: httpx.Response, count: int, semantic: object = "execute_all"
) -> list[Decision]:
    """The batch answer in request order, one Decision per answered item; a broken answer
    denies every item. An answer is broken unless it has one item per request
    (``execute_all``, the default) or, under a short-circuit ``evaluations_semantic``, stops
    exactly at the first deny (``deny_on_first_deny``) or permit (``permit_on_first_permit``)
    or runs to the end without one: a cut-short answer is never read as the whole."""
    body = _body(response) if response.status_code == 200 else None
    if not isinstance(body, dict):
        return [decision_of(response, None)] * max(count, 1)
    items = body.get("evaluations")
    if items is None and count == 0:
        return [Decision.from_json(body)]
    broken = [Decision.unavailable("the batch answer is not a list of decisions")] * max(count, 1)
    if not isinstance(items, list) or len(items) > count:
        return broken
    decisions = [Decision.from_json(item) for item in items]
    if not _complete(decisions, count, semantic):
        return broken
    return decisions


def _complete(decisions: list[Decision], count: int, semantic: object) -> bool:
    """Whether ``decisions`` is a whole answer to ``count`` items under ``semantic``."""
    stop = {"deny_on_first_deny": False, "permit_on_first_permit": True}.get(str(semantic))
    if stop is None:
        return len(decisions) == count
    outcomes = [d.allowed for d in decisions]
    if stop in outcomes:
        return outcomes.index(stop) == len(outcomes) - 1  # it stopped there, not later
    return len(decisions) == count


def search_of(response: httpx.Response) -> dict[str, Any]:
    """A search answer; any failure is an empty result (nothing is found, nothing allowed)."""
    body = _body(response) if response.status_code == 200 else None
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return {"results": [], "error": f"the PDP answered {response.status_code}"}
    return body


def with_approval(request: Mapping[str, Any], approval: Mapping[str, Any]) -> dict[str, Any]:
    """The same request again with the unchanged ``approval`` at ``context.approval``."""
    context = dict(request.get("context") or {})
    context["approval"] = dict(approval)
    return {**request, "context": context}


@dataclass(frozen=True)
class AccessRequestCall:
    url: str
    body: dict[str, Any]


def access_request_call(
    base_url: str,
    decision: Decision,
    *,
    justification: str | None,
    requested_until: str | None,
    request: Mapping[str, Any] | None,
) -> AccessRequestCall:
    """``POST {access_request_endpoint}`` for a requestable denial (standards.md 2.4)."""
    template = decision.access_request
    if template is None:
        msg = "the decision is not a requestable denial (no context.access_request)"
        raise ValueError(msg)
    original = request if request is not None else decision.request
    if original is None:
        msg = "the denied request is unknown: pass request= or a Decision from evaluate()"
        raise ValueError(msg)
    denial: dict[str, Any] = {
        key: value
        for key, value in (
            ("evaluation_id", decision.context.get("evaluation_id")),
            ("evaluated_at", decision.context.get("evaluated_at")),
            ("reason", decision.reason),
            ("expires_at", template.get("expires_at")),
            ("binding_token", template.get("binding_token")),
            ("template", template.get("template")),
        )
        if value is not None
    }
    context = dict(original.get("context") or {})
    if justification is not None:
        context["business_justification"] = justification
    body: dict[str, Any] = {
        "subject": original["subject"],
        "resource": original["resource"],
        "action": original["action"],
        "context": context,
        "denial": denial,
    }
    if requested_until is not None:
        body["requested_access"] = {"requested_until": requested_until}
    endpoint = template.get("endpoint")
    url = endpoint if isinstance(endpoint, str) else base_url + ACCESS_REQUESTS
    return AccessRequestCall(url, body)


def task_of(response: httpx.Response) -> dict[str, Any]:
    """``{task, result?}`` of a create or status answer; raises on an ARAP error."""
    body = _body(response)
    if response.status_code not in (200, 201, 202) or not isinstance(body, dict):
        problem = body if isinstance(body, dict) else {"title": response.text[:200]}
        raise AccessRequestError(response.status_code, problem)
    if not isinstance(body.get("task"), dict):
        raise AccessRequestError(response.status_code, {"title": "the answer has no task"})
    return body


def is_terminal(answer: Mapping[str, Any]) -> bool:
    return str(answer["task"].get("status")) in TERMINAL


def approval_of(answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The approval of an approved task in ``reevaluate`` mode; anything else is None."""
    if answer["task"].get("status") != "approved":
        return None
    result = answer.get("result")
    if not isinstance(result, dict) or result.get("mode") != "reevaluate":
        return None
    approval = result.get("approval")
    if not isinstance(approval, dict) or "id" not in approval:
        return None
    return approval


@dataclass
class Backoff:
    """Polling delays per standards.md 2.5: exponential from a few seconds, capped at one
    minute, with full jitter; ``Retry-After`` wins when the server sends one."""

    initial: float = 2.0
    cap: float = 60.0
    attempt: int = 0

    def next_delay(self, retry_after: str | None = None) -> float:
        seconds = None if retry_after is None else retry_after.strip()
        # Delay-seconds (RFC 9110 10.2.3): ASCII digits (str.isdigit also takes "²", which
        # float() refuses), and a sane number of them; else the backoff decides.
        if seconds and seconds.isascii() and seconds.isdigit() and len(seconds) <= 6:
            self.attempt += 1
            return float(seconds)
        ceiling = min(self.cap, self.initial * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


def usage_body(evaluation_id: str, outcome: str, amount: str | None) -> dict[str, Any]:
    if outcome not in ("executed", "aborted"):
        msg = "outcome must be 'executed' or 'aborted'"
        raise ValueError(msg)
    body: dict[str, Any] = {"evaluation_id": evaluation_id, "outcome": outcome}
    if amount is not None:
        body["amount"] = amount
    return body
