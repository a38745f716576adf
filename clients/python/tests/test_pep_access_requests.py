"""ARAP client side (SPEC 7.1, standards.md 2.4-2.6) and usage reports (SPEC 7.3), against
httpx.MockTransport: the server endpoints are not in this release yet."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mission_ledger_pep import AccessRequestError, Decision, PdpClient
from mission_ledger_pep.protocol import Backoff

REQUEST = {
    "subject": {"type": "agent", "id": "a1"},
    "action": {"name": "invoices.pay"},
    "resource": {"type": "api", "id": "https://erp.example.com/invoices/7"},
    "context": {"mandate": "mdt_1"},
}
DENIAL = {
    "decision": False,
    "context": {
        "reason": "approval_required",
        "evaluation_id": "ev1",
        "evaluated_at": "2026-01-01T00:00:00Z",
        "access_request": {
            "endpoint": "https://ledger.test/access/v1/requests",
            "template": "mission_gate",
            "expires_at": "2026-01-01T00:10:00Z",
            "binding_token": "b.t.s",
        },
    },
}
PENDING = {
    "task": {
        "id": "tsk_1",
        "status": "pending",
        "status_endpoint": "https://ledger.test/access/v1/requests/tsk_1",
    }
}
APPROVED = {
    "task": {**PENDING["task"], "status": "approved"},
    "result": {"mode": "reevaluate", "approval": {"id": "apv_1", "state": "s.t.a"}},
}


class Server:
    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def client(self) -> PdpClient:
        def handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return self.answers.pop(0)

        return PdpClient(
            "https://ledger.test",
            "k",
            transport=httpx.MockTransport(handler),
            sleep=self.sleeps.append,
        )


def denied() -> Decision:
    return Decision.from_json(DENIAL, REQUEST)


def test_request_access_echoes_the_denial_and_the_justification() -> None:
    server = Server(httpx.Response(202, json=PENDING))
    answer = server.client().request_access(denied(), justification="month end")
    assert answer["task"]["id"] == "tsk_1"
    sent = json.loads(server.requests[0].content)
    assert str(server.requests[0].url) == "https://ledger.test/access/v1/requests"
    assert sent["denial"]["binding_token"] == "b.t.s"
    assert sent["denial"]["evaluation_id"] == "ev1"
    assert sent["context"]["business_justification"] == "month end"
    assert sent["action"] == REQUEST["action"]


def test_request_access_refuses_a_decision_that_is_not_requestable() -> None:
    with pytest.raises(ValueError, match="not a requestable denial"):
        Server().client().request_access(
            Decision(allowed=False, reason="mission_inactive", request=REQUEST)
        )


def test_an_arap_error_is_raised_with_its_type() -> None:
    problem = {"type": "urn:openid:authzen:access-request:error:expired_denial"}
    server = Server(httpx.Response(410, json=problem))
    with pytest.raises(AccessRequestError) as raised:
        server.client().request_access(denied())
    assert raised.value.type.endswith("expired_denial")


def test_wait_for_task_polls_with_backoff_and_honours_retry_after() -> None:
    server = Server(
        httpx.Response(429, headers={"Retry-After": "7"}),
        httpx.Response(200, json=PENDING),
        httpx.Response(200, json=APPROVED),
    )
    answer = server.client().wait_for_task(PENDING, initial=2.0, cap=60.0)
    assert answer["task"]["status"] == "approved"
    assert 1.0 <= server.sleeps[0] <= 2.0
    assert server.sleeps[1] == 7.0


def test_backoff_is_capped_at_one_minute() -> None:
    backoff = Backoff(2.0, 60.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert max(delays) <= 60.0
    assert delays[-1] >= 30.0


@pytest.mark.parametrize("retry_after", ["\u00b2", "\u0661", "1" * 5_000, "-1", "soon"])
def test_a_retry_after_that_is_not_delay_seconds_leaves_the_backoff_to_decide(
    retry_after: str,
) -> None:
    delay = Backoff(2.0, 60.0).next_delay(retry_after)
    assert 1.0 <= delay <= 2.0


def test_reevaluate_presents_the_unchanged_approval() -> None:
    server = Server(httpx.Response(200, json={"decision": True}))
    decision = server.client().reevaluate(REQUEST, APPROVED)
    assert decision.allowed
    sent = json.loads(server.requests[0].content)
    assert sent["context"]["approval"] == APPROVED["result"]["approval"]
    assert sent["context"]["mandate"] == "mdt_1"


@pytest.mark.parametrize(
    "answer",
    [
        PENDING,
        {**APPROVED, "result": {"mode": "something-new", "approval": {"id": "apv_1"}}},
        {**APPROVED, "task": {**PENDING["task"], "status": "denied"}},
    ],
)
def test_reevaluate_without_an_approval_denies_without_asking(answer: dict[str, Any]) -> None:
    server = Server()
    assert not server.client().reevaluate(REQUEST, answer).allowed
    assert server.requests == []


def test_report_usage_posts_the_outcome() -> None:
    server = Server(httpx.Response(200, json={}))
    server.client().report_usage("ev1", "executed", amount="12.50")
    assert str(server.requests[0].url) == "https://ledger.test/v1/usage"
    assert json.loads(server.requests[0].content) == {
        "evaluation_id": "ev1",
        "outcome": "executed",
        "amount": "12.50",
    }


def test_min_position_is_passed_through() -> None:
    server = Server(httpx.Response(200, json={"decision": True}))
    server.client().evaluate(REQUEST, min_position=42)
    assert server.requests[0].headers["Ledger-Min-Position"] == "42"
