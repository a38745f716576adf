"""No input to a governance write makes the service fail: any member of a lifecycle change,
a containment, an expansion, a Mandate's issue, delegation, narrowing or revocation, an
instance revocation, or a proposal's approval, denial or cancellation, set to an awkward
value, is accepted or refused with a clear 4xx, never a server error, on both stores.
(Reasons are free text: one holding NUL must still reach PostgreSQL's read models.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.conftest import ERP, Api, entry
from tests.awkward_values import FUZZ, assert_answered, awkward_text, changed, json_values
from tests.mandate_builders import delegable_authority, jkt

AWKWARD = st.one_of(
    awkward_text(
        "\u0000",
        "suspend\n",
        "2027-01-01T00:00:00Z\n",
        "0001-01-01T00:00:00+01:00",
        "agent-1\n",
        "invoices.read\n",
        max_size=30,
    ),
    json_values(awkward_text()),
)


def _mission(api: Api) -> str:
    return str(api.mission()["id"])


def _mandate(api: Api) -> str:
    mission = _mission(api)
    response = api.client.post(
        f"/v1/missions/{mission}/mandates", json=_issue_body(), headers=api.auth("agent")
    )
    assert response.status_code == 201, response.text
    return str(response.json()["mandate_id"])


def _delegable_mandate(api: Api) -> str:
    """A Mandate (of all its Mission's authority) that may be delegated."""
    mission = api.mission(
        intent=api.intent(resources=[ERP, "https://crm.example.com"]),
        authorization_details=delegable_authority(),
    )["id"]
    body = {k: v for k, v in _issue_body().items() if k != "authorization_details"}
    response = api.client.post(
        f"/v1/missions/{mission}/mandates", json=body, headers=api.auth("agent")
    )
    assert response.status_code == 201, response.text
    return str(response.json()["mandate_id"])


def _proposal(api: Api) -> str:
    return str(api.submit()["submission_id"])


def _issue_body() -> dict[str, Any]:
    return {
        "actor": {"client_id": "agent-1", "instance_id": "i-1"},
        "cnf": {"jkt": jkt()},
        "ttl_seconds": 3600,
        "authorization_details": [entry(ERP, ["invoices.read"])],
    }


Target = Callable[[Api], str]
#: name: (who writes, the thing written to, its URL, a body that is taken, member paths).
WRITES: dict[str, tuple[str, Target, str, Callable[[], dict[str, Any]], list[tuple[Any, ...]]]] = {
    "lifecycle": (
        "admin",
        _mission,
        "/v1/missions/{id}/lifecycle",
        # (a nonce: every member then goes into the request's digest too)
        lambda: {"operation": "suspend", "reason": "property test", "nonce": "n-1"},
        [
            ("operation",),
            ("reason",),
            ("nonce",),
            ("expected_version",),
            ("suspend_until",),
            ("on_expiry",),
        ],
    ),
    "containment": (
        "admin",
        _mission,
        "/v1/missions/{id}/containment",
        lambda: {
            "contained": [{"resource": ERP, "actions": ["invoices.read"]}],
            "reason": "x",
            "nonce": "n-1",
        },
        [
            ("contained",),
            ("contained", 0, "resource"),
            ("contained", 0, "actions", 0),
            ("reason",),
            ("expected_version",),
        ],
    ),
    "issue": (
        "agent",
        _mission,
        "/v1/missions/{id}/mandates",
        _issue_body,
        [
            ("actor", "client_id"),
            ("actor", "instance_id"),
            ("actor", "sub_profile"),
            ("cnf", "jkt"),
            ("ttl_seconds",),
            ("authorization_details", 0, "resource"),
            ("authorization_details", 0, "actions", 0),
        ],
    ),
    "delegate": (
        "agent",
        _delegable_mandate,
        "/v1/mandates/{id}/delegations",
        lambda: {k: v for k, v in _issue_body().items() if k != "authorization_details"},
        [("actor", "instance_id"), ("cnf", "jkt"), ("ttl_seconds",), ("authorization_details",)],
    ),
    "narrow": (
        "agent",
        _mandate,
        "/v1/mandates/{id}/narrow",
        lambda: {"authorization_details": [entry(ERP, ["invoices.read"])], "reason": "x"},
        [
            ("reason",),
            ("authorization_details", 0, "resource"),
            ("authorization_details", 0, "actions", 0),
        ],
    ),
    "revoke": (
        "admin",
        _mandate,
        "/v1/mandates/{id}/revoke",
        lambda: {"reason": "x"},
        [("reason",)],
    ),
    "approve": (
        "approver",
        _proposal,
        "/v1/proposals/{id}/approve",
        lambda: {"approval_event_id": "evt-1"},
        [("expires_at",), ("approval_event_id",), ("authorization_details",)],
    ),
    "deny": (
        "approver",
        _proposal,
        "/v1/proposals/{id}/deny",
        lambda: {"reason": "x"},
        [("reason",)],
    ),
    "cancel": (
        "agent",
        _proposal,
        "/v1/proposals/{id}/cancel",
        lambda: {"reason": "x"},
        [("reason",), ("comment",)],
    ),
}
CASES = [(name, path) for name, (_, _, _, _, paths) in WRITES.items() for path in paths]


@pytest.mark.parametrize("name", list(WRITES))
def test_the_base_bodies_are_taken(store_api: Api, name: str) -> None:
    """(So each example below changes one member of a write that would otherwise be done.)"""
    who, target, url, body, _ = WRITES[name]
    response = store_api.client.post(
        url.format(id=target(store_api)), json=body(), headers=store_api.auth(who)
    )
    assert response.status_code < 300, response.text


@pytest.mark.parametrize(
    ("name", "path"), CASES, ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else v
)
@settings(FUZZ, max_examples=15)
@given(value=AWKWARD)
def test_no_governance_write_input_gives_a_server_error(
    store_api: Api, name: str, path: tuple[Any, ...], value: Any
) -> None:
    who, target, url, body, _ = WRITES[name]
    response = store_api.client.post(
        url.format(id=target(store_api)),
        json=changed(body(), path, value),
        headers=store_api.auth(who),
    )
    assert_answered(response, name, path, value)
    assert store_api.client.get("/readyz").status_code == 200  # the read models took it
