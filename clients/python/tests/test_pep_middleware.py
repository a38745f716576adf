"""The middleware: a permit reaches the app, a deny is 403 problem+json, a requestable
egress denial is 511 with a captive ``Link``, unprotected routes pass, and the guard
refuses a revoked Mandate before the PDP is asked."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from mission_ledger_pep import AsyncPdpClient, MandateGuard, MissionLedgerMiddleware
from pep_asgi import Recorder, call
from pep_keys import ISSUER, JWKS_URL, Jwks, mandate_token, new_key

KEY = new_key("k1")


class Pdp:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def client(self) -> AsyncPdpClient:
        def handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(json.loads(request.content))
            return httpx.Response(200, json=self.answer)

        return AsyncPdpClient("http://pdp.test", "k", transport=httpx.MockTransport(handler))


def request_for(resource_type: str = "api", mandate: str = "mdt_1") -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": "a1"},
        "action": {"name": "connect"},
        "resource": {"type": resource_type, "id": "https://erp.example.com:443"},
        "context": {"mandate": mandate, "proof": {"jkt": "jkt-1"}},
    }


def test_a_permit_reaches_the_app_with_the_decision() -> None:
    app = Recorder()
    pdp = Pdp({"decision": True, "context": {"evaluation_id": "e1"}})
    middleware = MissionLedgerMiddleware(app, pdp=pdp.client(), mapper=lambda s, h: request_for())
    assert asyncio.run(call(middleware))["status"] == 200
    assert app.calls == 1


def test_a_deny_is_a_403_problem_with_the_reason() -> None:
    app = Recorder()
    pdp = Pdp({"decision": False, "context": {"reason": "mission_inactive"}})
    middleware = MissionLedgerMiddleware(app, pdp=pdp.client(), mapper=lambda s, h: request_for())
    response = asyncio.run(call(middleware))
    assert response["status"] == 403
    assert response["body"]["reason"] == "mission_inactive"
    assert app.calls == 0


def test_a_requestable_egress_denial_is_a_511_with_a_captive_link() -> None:
    captive = "https://ledger.test/v1/egress/denials/d1"
    answer = {
        "decision": False,
        "context": {
            "reason": "out_of_authority",
            "access_request": {"expires_at": "2099-01-01T00:00:00Z", "captive_url": captive},
        },
    }
    app = Recorder()
    middleware = MissionLedgerMiddleware(
        app, pdp=Pdp(answer).client(), mapper=lambda s, h: request_for("egress")
    )
    response = asyncio.run(call(middleware, method="CONNECT"))
    assert response["status"] == 511
    assert response["headers"]["link"] == f'<{captive}>; rel="captive-portal"'
    assert response["body"]["access_request"]["captive_url"] == captive
    assert app.calls == 0


def test_an_unprotected_route_is_not_evaluated() -> None:
    app = Recorder()
    pdp = Pdp({"decision": False})
    middleware = MissionLedgerMiddleware(app, pdp=pdp.client(), mapper=lambda s, h: None)
    assert asyncio.run(call(middleware))["status"] == 200
    assert pdp.requests == []


def test_an_async_mapper_is_awaited() -> None:
    async def mapper(scope: Any, headers: Any) -> dict[str, Any]:
        return request_for()

    pdp = Pdp({"decision": True})
    middleware = MissionLedgerMiddleware(Recorder(), pdp=pdp.client(), mapper=mapper)
    assert asyncio.run(call(middleware))["status"] == 200
    assert pdp.requests[0]["subject"]["id"] == "a1"


def test_the_guard_refuses_a_revoked_mandate_without_asking_the_pdp() -> None:
    guard = MandateGuard(JWKS_URL, issuer=ISSUER, http=Jwks(KEY).client())
    guard.revoke("mdt_1")
    pdp = Pdp({"decision": True})
    app = Recorder()
    token = mandate_token(KEY)
    middleware = MissionLedgerMiddleware(
        app, pdp=pdp.client(), mapper=lambda s, h: request_for(mandate=token), guard=guard
    )
    response = asyncio.run(call(middleware))
    assert (response["status"], response["body"]["reason"]) == (403, "mandate_revoked")
    assert pdp.requests == []
    assert app.calls == 0
