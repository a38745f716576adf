"""No input the decision point or the access-request endpoint reads makes it fail: whatever a
PEP forwards in an evaluation's properties and context, or in an access request (the echoed
denial, the justification, the callback), set to an awkward value (of any JSON type,
oversized numbers and strings, control characters, trailing newlines, instants out of
range), the answer is a decision or a clear 4xx, never a server error. (Two such inputs once
were: an amount of 5,000 digits and one ending in a newline.)"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.pdp.access_flow import Flow, request_body
from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_authzen_decisions import entry
from tests.api.pdp.test_authzen_decisions import request as evaluation
from tests.awkward_values import FUZZ, awkward_text, json_values

CONSTRAINTS: dict[str, Any] = {
    "max_amount": {"amount": "500.00", "currency": "USD"},
    "resource_issued_after": "2026-07-01T00:00:00Z",
    "tenant": "acme",
    "recipient_domain": "example.com",
    "data_classification": ["public", "internal"],
    "allowed_tools": ["search"],
    "call_class": "payments",
}
CONTROLS = {"max_budget": {"amount": "1000.00", "currency": "USD"}, "max_calls": 500}

TEXT = awkward_text("1" * 4_301, "1e309", "-0", "NaN")
VALUE = json_values(TEXT)
#: The members the decision point reads (SPEC 7.3 inputs), each absent, a likely text or
#: any JSON value; a currency is often the right one, so that the amount is read further.
CURRENCY = st.one_of(st.just("USD"), TEXT, VALUE)
ACTION = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.one_of(TEXT, VALUE),
        "currency": CURRENCY,
        "tool": st.one_of(TEXT, VALUE),
        "recipient": st.one_of(TEXT, VALUE),
    },
)
RESOURCE = st.fixed_dictionaries(
    {},
    optional={"data_classification": st.one_of(TEXT, VALUE), "issued_at": st.one_of(TEXT, VALUE)},
)
CONTEXT = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.one_of(TEXT, VALUE),
        "currency": CURRENCY,
        "tenant": st.one_of(TEXT, VALUE),
        "approval": VALUE,
    },
)


@pytest.fixture(scope="module", params=["constrained", "metered only"])
def token(store_harness: Harness, request: pytest.FixtureRequest) -> str:
    """A Mandate under every Common Constraint that reads request inputs (the amount is then
    judged by ``max_amount`` first), or under the metered controls alone (the Meter reads it)."""
    constraints = CONSTRAINTS if request.param == "constrained" else {"call_class": "payments"}
    mission = store_harness.mission([entry(["invoices.pay"], **constraints)], controls=CONTROLS)
    return str(store_harness.mandate(mission)["token"])


@settings(FUZZ, max_examples=150)
@given(
    action=ACTION,
    resource=RESOURCE,
    context=CONTEXT,
)
def test_no_evaluation_input_gives_a_server_error(
    store_harness: Harness,
    token: str,
    action: dict[str, Any],
    resource: dict[str, Any],
    context: dict[str, Any],
) -> None:
    body = evaluation(
        token, action_properties=action, resource_properties=resource, context=context
    )
    single = store_harness.client.post(
        "/access/v1/evaluation", json=body, headers=store_harness.auth("pep")
    )
    assert single.status_code in (200, 400), single.text
    batch = store_harness.client.post(
        "/access/v1/evaluations",
        json={"evaluations": [body, body]},
        headers=store_harness.auth("pep"),
    )
    assert batch.status_code in (200, 400), batch.text


@settings(FUZZ, max_examples=100)
@given(amount=st.one_of(TEXT, VALUE))
def test_no_usage_report_gives_a_server_error(
    store_harness: Harness, token: str, amount: Any
) -> None:
    """An ``executed`` report of a metered permit, whatever its amount. (A malformed amount
    once failed the Meter writer's whole group: every report in it answered 503.)"""
    permit = store_harness.evaluate(
        evaluation(token, action_properties={"amount": "1.00", "currency": "USD"})
    )
    report = {
        "evaluation_id": permit["context"]["evaluation_id"],
        "outcome": "executed",
        "amount": amount,
    }
    response = store_harness.client.post(
        "/v1/usage", json=report, headers=store_harness.auth("pep")
    )
    assert response.status_code in (200, 400, 404, 409, 422), response.text


#: Where a value goes in an access request (the echoed denial and the request's own members).
ACCESS_PATHS: list[tuple[str, ...]] = [
    ("denial", "expires_at"),
    ("denial", "reason"),
    ("denial", "evaluation_id"),
    ("denial", "binding_token"),
    ("context", "business_justification"),
    ("action", "properties", "amount"),
    ("callback", "endpoint"),
    ("callback", "state"),
]


@pytest.fixture(scope="module")
def denial(store_harness: Harness) -> dict[str, Any]:
    """An access request that would be accepted as it is (a requestable denial, echoed)."""
    flow = Flow.gated(store_harness)
    denied, decision = flow.evaluate()
    return request_body(denied, decision)


@pytest.mark.parametrize("path", ACCESS_PATHS, ids="/".join)
@settings(FUZZ, max_examples=20)
@given(value=st.one_of(TEXT, VALUE))
def test_no_access_request_input_gives_a_server_error(
    store_harness: Harness, denial: dict[str, Any], path: tuple[str, ...], value: Any
) -> None:
    body = copy.deepcopy(denial)
    node = body
    for step in path[:-1]:
        node = node.setdefault(step, {})
    node[path[-1]] = value
    response = store_harness.client.post(
        "/access/v1/requests", json=body, headers=store_harness.auth("pep")
    )
    assert response.status_code in (200, 202, 400, 403, 404, 409, 422), response.text
