"""The OpenID AuthZEN conformance-suite scenarios, replayed over HTTP.

Every case's transport expectations are checked: methods, content types, malformed and
non-object bodies, missing or mistyped members (400, never 422), credentials (401),
``X-Request-ID`` echo, forward compatibility, batch shapes and semantics, search shapes.
The suite's *decision values* assume its own fixture policy (users alice and bob,
records); Mission Ledger decides from Mandates, so for those cases only the shape of the
answer is checked (a boolean ``decision``; an ``evaluations`` array of decisions, as long
as the request under ``execute_all``; a ``results`` array, with a ``page`` carrying a
string ``next_token`` when paging). Transport is independent of the store, so one embedded
app serves the whole module.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.pdp.conftest import Harness
from tests.vectors import vectors_dir

SCENARIOS = json.loads(
    (vectors_dir() / "oidf-conformance-suite-authzen" / "authzen-pdp-scenarios.json").read_text()
)["cases"]


def _send(harness: Harness, case: dict[str, Any]) -> Any:
    headers: dict[str, str] = {}
    if case["auth"] == "normal":
        headers.update(harness.auth("pep"))
    elif case["auth"] == "invalid_credentials":
        headers["Authorization"] = "Bearer mlk_not.a-real-key"
    if case["content_type"] is not None:
        headers["Content-Type"] = case["content_type"]
    if case["send_x_request_id"]:
        headers["X-Request-ID"] = f"conformance-{case['test_name']}"
    if case["raw_body"] is not None:
        body: bytes = case["raw_body"].encode()
    elif case["request"] is not None:
        body = json.dumps(case["request"]).encode()
    else:
        body = b""
    return harness.client.request(case["method"], case["endpoint"], content=body, headers=headers)


def _check_shape(case: dict[str, Any], answer: Any) -> None:
    kind = case["expected_response_kind"]
    if kind == "decision":
        assert isinstance(answer.get("decision"), bool)
        assert isinstance(answer.get("context", {}), dict)
    elif kind == "evaluations":
        items = answer["evaluations"]
        assert all(isinstance(item.get("decision"), bool) for item in items)
        request = case["request"] or {}
        semantic = (request.get("options") or {}).get("evaluations_semantic", "execute_all")
        if semantic == "execute_all" and request.get("evaluations"):
            assert len(items) == len(request["evaluations"])
        if semantic == "deny_on_first_deny":
            assert all(item["decision"] for item in items[:-1])
        if semantic == "permit_on_first_permit":
            assert not any(item["decision"] for item in items[:-1])
    elif kind == "search":
        assert isinstance(answer["results"], list)
        if "page" in answer:
            assert isinstance(answer["page"]["next_token"], str)


def _without_ids(answer: Any) -> Any:
    """A decision minus its per-evaluation id (unique by design, so never identical)."""
    if isinstance(answer, dict):
        return {k: _without_ids(v) for k, v in answer.items() if k != "evaluation_id"}
    if isinstance(answer, list):
        return [_without_ids(v) for v in answer]
    return answer


@pytest.mark.parametrize("case", SCENARIOS, ids=[c["test_name"] for c in SCENARIOS])
def test_conformance_scenario(shared_harness: Harness, case: dict[str, Any]) -> None:
    harness = shared_harness
    repeats = 5 if case.get("repeat") else 1  # "send the same request several times"
    answers = []
    for _ in range(repeats):
        response = _send(harness, case)
        assert response.status_code in case["expected_status"], (
            response.status_code,
            response.text,
        )
        assert response.status_code != 422
        if case["send_x_request_id"]:
            assert response.headers["x-request-id"] == f"conformance-{case['test_name']}"
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json")
            answer = response.json()
            answers.append(_without_ids(answer))
            if case.get("expected_response_kind"):
                _check_shape(case, answer)
            elif case["endpoint"] == "/access/v1/evaluations":
                # Missing or empty "evaluations": behaves like a single evaluation.
                assert isinstance(answer.get("decision"), bool)
    assert all(a == answers[0] for a in answers)
