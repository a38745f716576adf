"""Every reader of Mandate validity asks the domain's one rule, so they agree: the ledger's
inspection, the decision point and search (issue 11 item 8).

The check the copies used to disagree on is the start of the validity window: inspection
skipped it once a Mandate had been narrowed (a new token version), the decision point did
not. A replica whose clock is behind the writer's sees exactly that case."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_mandates_http import delegable, narrower
from tests.mandate_builders import proof_of

ERP = "https://erp.example.com"


def _narrowed_mandate(h: Harness) -> tuple[str, str]:
    """The id and the (version 2) token of a narrowed Mandate."""
    mission = h.mission(delegable())
    mandate_id = str(h.mandate(mission)["mandate_id"])
    narrowed = h.client.post(
        f"/v1/mandates/{mandate_id}/narrow",
        json={"authorization_details": narrower(), "reason": "least privilege"},
        headers=h.auth("operator"),
    )
    assert narrowed.status_code == 200, narrowed.text
    return mandate_id, str(narrowed.json()["token"])


def _inspected(h: Harness, mandate_id: str) -> dict[str, Any]:
    response = h.client.get(f"/v1/mandates/{mandate_id}", headers=h.auth("operator"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _decision(h: Harness, mandate_id: str, token: str) -> dict[str, Any]:
    return h.evaluate(
        {
            "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
            "action": {
                "name": "invoices.read",
                "properties": {"amount": "10.00", "currency": "USD"},
            },
            "resource": {"type": "api", "id": ERP + "/invoices/7"},
            "context": {"mandate": mandate_id, "proof": proof_of(token)},
        }
    )


def _found_by_search(h: Harness) -> bool:
    found = h.client.post(
        "/access/v1/search/subject",
        json={
            "subject": {"type": "agent"},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api", "id": ERP + "/invoices/7"},
        },
        headers=h.auth("pep"),
    )
    assert found.status_code == 200, found.text
    return bool(found.json()["results"])


def test_inspection_decision_and_search_agree_on_a_valid_narrowed_mandate(
    harness: Harness,
) -> None:
    mandate_id, token = _narrowed_mandate(harness)
    assert _inspected(harness, mandate_id)["active"] is True
    assert _decision(harness, mandate_id, token)["decision"] is True
    assert _found_by_search(harness) is True


def test_a_narrowed_mandate_is_not_valid_before_its_issuance_for_any_reader(
    harness: Harness,
) -> None:
    mandate_id, token = _narrowed_mandate(harness)
    harness.clock.set(harness.clock.now() - timedelta(seconds=5))  # a replica running behind
    inspected = _inspected(harness, mandate_id)
    assert (inspected["active"], inspected["inactive_reason"]) == (
        False,
        "mandate_not_yet_valid",
    )
    decision = _decision(harness, mandate_id, token)
    assert (decision["decision"], decision["context"]["reason"]) == (False, "credential_invalid")
    assert _found_by_search(harness) is False
