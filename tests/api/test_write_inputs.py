"""No input to an agent's writes makes the service fail: any member of a proposal (intent,
Authority Set, constraints, controls, subject) or of a completion event set to an awkward
value (of any JSON type, oversized numbers, trailing newlines, control characters, instants
out of range) is accepted or refused with a clear 4xx, never a server error, on both stores
(PostgreSQL's read models take what SQLite's do). (Amounts of 5,000 digits and instants
ending in a newline once passed validation and failed later.)"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api
from tests.awkward_values import FUZZ, awkward_text, changed, json_values
from tests.discharge_builders import discharge_authority

AWKWARD = st.one_of(
    awkward_text(
        "2027-01-01T00:00:00Z\n",
        "P1D\n",
        "https://erp.example.com\n",
        "invoices.pay\n",
        "\u0000",
        max_size=30,
    ),
    json_values(awkward_text()),
)


#: Where a value goes: a path of member names and list indexes into the proposal body.
PATHS: list[tuple[str | int, ...]] = [
    ("intent", "goal"),
    ("intent", "expires_at"),
    ("intent", "resources", 0),
    ("intent", "max_duration"),
    ("intent", "goal_lang"),
    ("authorization_details", 0, "resource"),
    ("authorization_details", 0, "actions", 0),
    ("authorization_details", 0, "constraints", "max_amount", "amount"),
    ("authorization_details", 0, "constraints", "max_amount", "currency"),
    ("authorization_details", 0, "constraints", "tenant"),
    ("authorization_details", 0, "constraints", "recipient_domain"),
    ("authorization_details", 0, "constraints", "resource_issued_after"),
    ("authorization_details", 0, "constraints", "time_window", "not_after"),
    ("authorization_details", 0, "constraints", "call_class"),
    ("intent", "controls", "max_budget", "amount"),
    ("intent", "controls", "max_budget", "currency"),
    ("intent", "controls", "max_calls"),
    ("subject", "sub"),
    ("client_id",),
]


@pytest.mark.parametrize("path", PATHS, ids=lambda path: "/".join(map(str, path)))
@settings(FUZZ, max_examples=30)
@given(value=AWKWARD)
def test_no_proposal_input_gives_a_server_error(
    store_api: Api, path: tuple[str | int, ...], value: Any
) -> None:
    body = store_api.proposal_body()
    body["authorization_details"][0]["constraints"] = {
        "max_amount": {"amount": "500.00", "currency": "USD"}
    }
    body["intent"]["controls"] = {"max_budget": {"amount": "1000.00", "currency": "USD"}}
    assert (
        store_api.client.post(  # the body as it is: accepted
            "/v1/proposals", json=body, headers=store_api.auth("agent")
        ).status_code
        == 202
    )
    body = changed(body, path, value)
    response = store_api.client.post("/v1/proposals", json=body, headers=store_api.auth("agent"))
    assert response.status_code in (202, 400, 403, 422), response.text


@pytest.fixture(scope="module")
def discharge_mission_id(store_api: Api) -> str:
    return str(store_api.mission(authorization_details=discharge_authority())["id"])


@pytest.mark.parametrize("member", ["event_type", "event_id", "occurred_at", "entry_digest"])
@settings(FUZZ, max_examples=30)
@given(value=AWKWARD)
def test_no_completion_event_input_gives_a_server_error(
    store_api: Api, discharge_mission_id: str, member: str, value: Any
) -> None:
    body = {
        "event_type": "unnamed.event",  # no entry names it: a well-formed report is a 409
        "event_id": "evt-fuzz",
        "occurred_at": "2026-12-01T00:00:00Z",
        member: value,
    }
    response = store_api.client.post(
        f"/v1/missions/{discharge_mission_id}/completion-events",
        json=body,
        headers=store_api.auth("agent"),
    )
    assert response.status_code in (400, 409, 422), response.text
