"""The PEP toolkit's access-request helpers against the real service (issue 15, using the
access-request feature of issue 12): a requestable denial becomes an access request through
``PdpClient.request_access``, a person approves it over the API, ``wait_for_task`` sees the
approval and ``reevaluate`` permits exactly once (a single-use approval)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from mission_ledger_pep import PdpClient

from tests.e2e.server import PDP_TIMEOUT, gated_proposal_body, post_json, running_service
from tests.mandate_builders import proof_of

pytestmark = [pytest.mark.slow]

AGENT = "agent-tk"
ERP = "https://erp.example.com"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with running_service(tmp_path, AGENT, "tk") as running:
        yield running


def _gated_mandate(url: str, keys: dict[str, str]) -> str:
    """A Mission whose one action needs a person's approval each time, and a Mandate on it."""
    proposal = post_json(
        url,
        keys["agent"],
        "/v1/proposals",
        gated_proposal_body(AGENT),
        202,
    )
    mission = post_json(
        url, keys["approver"], f"/v1/proposals/{proposal['submission_id']}/approve", {}, 201
    )["id"]
    jkt = base64.urlsafe_b64encode(hashlib.sha256(mission.encode()).digest()).decode().rstrip("=")
    return str(
        post_json(
            url,
            keys["agent"],
            f"/v1/missions/{mission}/mandates",
            {
                "actor": {"client_id": AGENT, "instance_id": "i-1"},
                "cnf": {"jkt": jkt},
                "ttl_seconds": 3600,
            },
            201,
        )["token"]
    )


def test_a_requestable_denial_becomes_a_permit_through_the_toolkits_access_request_helpers(
    service: tuple[str, dict[str, str]],
) -> None:
    url, keys = service
    token = _gated_mandate(url, keys)
    request = {
        "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
        "action": {"name": "invoices.pay", "properties": {"amount": "10", "currency": "EUR"}},
        "resource": {"type": "api", "id": f"{ERP}/invoices/7"},
        "context": {"mandate": token, "proof": proof_of(token)},
    }
    with PdpClient(url, api_key=keys["pep"], timeout=PDP_TIMEOUT) as pdp:
        denied = pdp.evaluate(request)
        assert (denied.allowed, denied.reason) == (False, "approval_required")
        assert "access_request" in denied.context

        submitted = pdp.request_access(denied, justification="supplier is waiting")
        assert submitted["task"]["status"] == "pending"
        task_id = submitted["task"]["id"]
        post_json(
            url,
            keys["approver"],
            f"/v1/access-requests/{task_id}/approve",
            {"max_uses": 1, "reason": "month-end run"},
            200,
        )

        approved = pdp.wait_for_task(submitted, initial=0.05, cap=0.5, max_wait=20.0)
        assert approved["task"]["status"] == "approved"
        first = pdp.reevaluate(request, approved)
        second = pdp.reevaluate(request, approved)

    assert first.allowed is True
    assert second.allowed is False
