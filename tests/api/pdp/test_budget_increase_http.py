"""A ``budget_exceeded`` denial is requestable (SPEC 7.1 ``mission_budget_increase``):
approving it raises the Mission's metered bound by exactly what the denied call needs, once
per use of the approval, recorded on the Meter as ``BoundRaised`` (decision 0019)."""

from __future__ import annotations

from typing import Any

from tests.api.pdp.access_flow import Flow, claims_of
from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_authzen_decisions import entry

BUDGET = {"max_budget": {"amount": "100.00", "currency": "USD"}}


def spent_down(h: Harness) -> Flow:
    """A Mission with 100.00 USD, 90.00 of it reserved: a call of 100 is denied."""
    flow = Flow.of(h, h.mission([entry()], controls=BUDGET))
    _, first = flow.evaluate(amount="90.00")
    assert first["decision"] is True, first
    return flow


def usage(h: Harness, mission: str) -> dict[str, Any]:
    response = h.client.get(f"/v1/missions/{mission}", headers=h.auth("operator"))
    assert response.status_code == 200, response.text
    return dict(response.json()["usage"])


def test_a_budget_exceeded_denial_is_requestable_as_a_budget_increase(harness: Harness) -> None:
    flow = spent_down(harness)
    _, denied = flow.evaluate(amount="100")
    assert denied["context"]["reason"] == "budget_exceeded"
    access = denied["context"]["access_request"]
    assert access["template"] == "mission_budget_increase"
    assert claims_of(access["binding_token"])["reason"] == "budget_exceeded"


def test_an_approved_increase_permits_the_denied_call_once_then_the_bound_holds_again(
    harness: Harness,
) -> None:
    flow = spent_down(harness)
    denied, approval = flow.approval()
    permitted = flow.reevaluate(denied, approval)
    assert permitted["decision"] is True, permitted
    assert permitted["context"]["approval"]["id"] == approval["id"]
    assert "reservation_expires_at" in permitted["context"]
    second = flow.reevaluate(denied, approval)
    assert second["context"]["reason"] == "approval_expired"
    _, again = flow.evaluate(amount="100")
    assert again["context"]["reason"] == "budget_exceeded"


def test_the_missions_usage_shows_the_raise_and_keeps_the_invariant(harness: Harness) -> None:
    flow = spent_down(harness)
    denied, approval = flow.approval()
    assert flow.reevaluate(denied, approval)["decision"] is True
    shown = usage(harness, flow.mission_id)
    assert shown["raised"] == "100.00"
    assert shown["remaining"] == "10.00"  # 100 + 100 raised - 190 outstanding


def test_the_raise_is_a_meter_event_naming_the_approval(harness: Harness) -> None:
    flow = spent_down(harness)
    denied, approval = flow.approval()
    permitted = flow.reevaluate(denied, approval)
    response = harness.client.get(
        f"/v1/missions/{flow.mission_id}/usage/events", headers=harness.auth("auditor")
    )
    assert response.status_code == 200, response.text
    raises = [e["data"] for e in response.json()["data"] if e["type"] == "BoundRaised"]
    assert [(r["approval_id"], r["amount"], r["evaluation_id"]) for r in raises] == [
        (approval["id"], "100", permitted["context"]["evaluation_id"])
    ]
