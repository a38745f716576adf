"""Helpers for the access-request tests: a requestable denial, its access request, the
approval, and the re-evaluation that presents it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from httpx import Response

from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_authzen_decisions import ERP, entry
from tests.mandate_builders import proof_of

ARAP_ERROR = "urn:openid:authzen:access-request:error:"


def evaluation(
    token: str,
    *,
    action: str = "invoices.pay",
    resource: str = ERP + "/invoices/7",
    client_id: str = "agent-1",
    amount: str = "100",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": client_id, "properties": {"instance_id": "i-1"}},
        "action": {"name": action, "properties": {"amount": amount, "currency": "USD"}},
        "resource": {"type": "api", "id": resource},
        "context": {"mandate": token, "proof": proof_of(token), **(context or {})},
    }


def issuer(h: Harness) -> str:
    return str(h.client.app.state.services.settings.public_issuer)  # type: ignore[attr-defined]


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def request_body(denied: dict[str, Any], decision: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An access request echoing the denied evaluation and its denial."""
    access = decision["context"]["access_request"]
    body = {
        "subject": denied["subject"],
        "resource": denied["resource"],
        "action": denied["action"],
        "context": {**denied["context"], "business_justification": "month-end close"},
        "denial": {
            "evaluation_id": decision["context"]["evaluation_id"],
            "expires_at": access["expires_at"],
            "reason": decision["context"]["reason"],
            "binding_token": access["binding_token"],
        },
    }
    body.update(extra)
    return body


def assert_arap_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["type"] == ARAP_ERROR + code, body
    return body


@dataclass
class Flow:
    """One gated Mission with a Mandate, and the steps of the access-request loop."""

    h: Harness
    token: str
    mission_id: str

    @classmethod
    def gated(cls, h: Harness, **constraints: Any) -> Flow:
        constraints = constraints or {"requires_action_approval": True}
        mission_id = h.mission([entry(**constraints)])
        return cls.of(h, mission_id)

    @classmethod
    def of(cls, h: Harness, mission_id: str) -> Flow:
        """A day-long Mandate on ``mission_id`` (outliving any approval the tests grant)."""
        return cls(
            h=h, token=str(h.mandate(mission_id, ttl=86_400)["token"]), mission_id=mission_id
        )

    def evaluate(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        body = evaluation(self.token, **kwargs)
        return body, self.h.evaluate(body)

    def submit(self, body: dict[str, Any], who: str = "pep", **headers: str) -> Response:
        return self.h.client.post(
            "/access/v1/requests", json=body, headers={**self.h.auth(who), **headers}
        )

    def requested(self, who: str = "pep") -> tuple[dict[str, Any], dict[str, Any]]:
        """A denial and its pending task: (the denied evaluation body, the 202 body)."""
        denied, decision = self.evaluate()
        response = self.submit(request_body(denied, decision), who)
        assert response.status_code == 202, response.text
        return denied, dict(response.json())

    def approve(self, task_id: str, who: str = "approver", **body: Any) -> Response:
        return self.h.client.post(
            f"/v1/access-requests/{task_id}/approve", json=body, headers=self.h.auth(who)
        )

    def approval(self, **approve: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """An approved task: (the denied evaluation body, the task's ``result.approval``)."""
        denied, task = self.requested()
        approved = self.approve(task["task"]["id"], **approve)
        assert approved.status_code == 200, approved.text
        status = self.status(task["task"]["id"])
        return denied, dict(status["result"]["approval"])

    def status(self, task_id: str, who: str = "pep") -> dict[str, Any]:
        response = self.h.client.get(f"/access/v1/requests/{task_id}", headers=self.h.auth(who))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def reevaluate(self, denied: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
        body = {**denied, "context": {**denied["context"], "approval": approval}}
        return self.h.evaluate(body)
