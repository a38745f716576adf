"""Acceptance (issue 12, access requests): the requestable-denial loop over HTTP on two
server processes sharing one PostgreSQL and one public issuer (as behind a load balancer).

A denial carries ``access_request``; the PEP submits it on one replica (202 pending); the
approver lists and approves it on the other; the task's status carries ``result.approval``;
re-evaluation with it permits once; a second use of the single-use approval denies; past
``approved_until`` it denies ``approval_expired`` with ``next_action: request``. The same
loop ends in a denial, a cancellation (then 409 on cancelling again), an expiry, and a
Mission revoked after approval. Twenty concurrent re-evaluations of one single-use
approval, split over the two replicas, permit exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import ServerProcess, create_key, gated_proposal_body, store_env
from tests.mandate_builders import proof_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

AGENT = "agent-ar"
ERP = "https://erp.example.com"
#: The public issuer both replicas serve (tokens name it as iss and aud).
ISSUER = "https://ledger.example.com"


class Replica:
    def __init__(self, url: str, auth: dict[str, dict[str, str]]) -> None:
        self.client = httpx.Client(base_url=url, timeout=20.0)
        self.auth = auth
        self.position = 0

    def call(
        self, method: str, path: str, role: str, body: Any = None, **params: Any
    ) -> httpx.Response:
        headers = {**self.auth[role], "Ledger-Min-Position": str(self.position)}
        response = self.client.request(method, path, json=body, headers=headers, params=params)
        self.position = max(self.position, int(response.headers.get("Ledger-Position", 0)))
        return response

    def post(self, path: str, body: Any, role: str, status: int) -> dict[str, Any]:
        response = self.call("POST", path, role, body)
        assert response.status_code == status, (path, response.text)
        return dict(response.json())


def _started(env: dict[str, str], tmp_path: Path, name: str) -> ServerProcess:
    server = ServerProcess(env, tmp_path / f"{name}.log")
    server.env["MISSION_LEDGER_ISSUER"] = ISSUER
    return server.start()


@pytest.fixture
def pair(postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Two replicas on one store; ``request.param`` extra settings (env) for both."""
    env = {**store_env(database_url=postgres_url), **getattr(request, "param", {})}
    auth = {
        role: {"Authorization": "Bearer " + create_key(env, role, _name(role))}
        for role in ("agent", "approver", "operator", "pep", "auditor")
    }
    servers = [_started(env, tmp_path, "a"), _started(env, tmp_path, "b")]
    replicas = [Replica(s.url, auth) for s in servers]
    yield replicas
    for replica in replicas:
        replica.client.close()
    for server in servers:
        server.stop()


def _name(role: str) -> str:
    return AGENT if role == "agent" else f"{role}-ar"


def _mission(a: Replica) -> str:
    proposal = a.post("/v1/proposals", gated_proposal_body(AGENT), "agent", 202)
    return str(
        a.post(f"/v1/proposals/{proposal['submission_id']}/approve", {}, "approver", 201)["id"]
    )


def _token(a: Replica, mission: str) -> str:
    jkt = base64.urlsafe_b64encode(hashlib.sha256(mission.encode()).digest()).decode().rstrip("=")
    body = {
        "actor": {"client_id": AGENT, "instance_id": "i-1"},
        "cnf": {"jkt": jkt},
        "ttl_seconds": 3600,
    }
    return str(a.post(f"/v1/missions/{mission}/mandates", body, "agent", 201)["token"])


def _evaluation(token: str, invoice: int = 7) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
        "action": {"name": "invoices.pay", "properties": {"amount": "10", "currency": "EUR"}},
        "resource": {"type": "api", "id": f"{ERP}/invoices/{invoice}"},
        "context": {"mandate": token, "proof": proof_of(token)},
    }


def _decide(r: Replica, body: dict[str, Any]) -> dict[str, Any]:
    return r.post("/access/v1/evaluation", body, "pep", 200)


def _request(r: Replica, denied: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any]:
    access = decision["context"]["access_request"]
    body = {
        **{k: denied[k] for k in ("subject", "resource", "action")},
        "context": {**denied["context"], "business_justification": "supplier is waiting"},
        "denial": {
            "evaluation_id": decision["context"]["evaluation_id"],
            "expires_at": access["expires_at"],
            "reason": decision["context"]["reason"],
            "binding_token": access["binding_token"],
        },
    }
    return r.post("/access/v1/requests", body, "pep", 202)["task"]


def _denied_and_requested(
    a: Replica, token: str, invoice: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    denied = _evaluation(token, invoice)
    decision = _decide(a, denied)
    assert decision["decision"] is False
    assert decision["context"]["reason"] == "approval_required"
    task = _request(a, denied, decision)
    assert task["status"] == "pending"
    assert task["status_endpoint"].startswith("https://")
    return denied, task


def _status(r: Replica, task_id: str) -> dict[str, Any]:
    response = r.call("GET", f"/access/v1/requests/{task_id}", "pep")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _reevaluate(r: Replica, denied: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
    return _decide(r, {**denied, "context": {**denied["context"], "approval": approval}})


def _sync(a: Replica, b: Replica) -> None:
    a.position = b.position = max(a.position, b.position)


def test_approval_on_the_other_replica_permits_once_then_expires(pair: list[Replica]) -> None:
    a, b = pair
    mission = _mission(a)
    token = _token(a, mission)
    denied, task = _denied_and_requested(a, token, 7)
    _sync(a, b)
    inbox = b.call("GET", "/v1/access-requests", "approver", status="pending", mission=mission)
    assert inbox.status_code == 200, inbox.text
    assert [item["id"] for item in inbox.json()["data"]] == [task["id"]]
    assert inbox.json()["data"][0]["agent_justification"]["trust"] == "untrusted"
    b.post(f"/v1/access-requests/{task['id']}/approve", {"reason": "ok"}, "approver", 200)
    _sync(a, b)
    status = _status(a, task["id"])
    assert status["task"]["status"] == "approved"
    approval = status["result"]["approval"]
    assert status["result"]["mode"] == "reevaluate"

    first = _reevaluate(a, denied, approval)
    assert first["decision"] is True, first
    second = _reevaluate(b, denied, approval)
    assert (second["decision"], second["context"]["reason"]) == (False, "approval_expired")

    # A short-lived approval with uses to spare: permits, then past approved_until denies.
    denied, task = _denied_and_requested(a, token, 8)
    until = int(time.time()) + 3  # the servers' clock: this machine's
    body = {
        "approved_until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)),
        "max_uses": 5,
    }
    _sync(a, b)
    b.post(f"/v1/access-requests/{task['id']}/approve", body, "approver", 200)
    _sync(a, b)
    approval = _status(a, task["id"])["result"]["approval"]
    assert _reevaluate(a, denied, approval)["decision"] is True
    time.sleep(max(0.0, until - time.time()) + 1.0)
    late = _reevaluate(b, denied, approval)
    assert (late["decision"], late["context"]["reason"]) == (False, "approval_expired")
    assert late["context"]["next_action"] == "request"
    assert "access_request" in late["context"]


def test_a_denied_request_ends_without_an_approval(pair: list[Replica]) -> None:
    a, b = pair
    _, task = _denied_and_requested(a, _token(a, _mission(a)), 7)
    _sync(a, b)
    b.post(f"/v1/access-requests/{task['id']}/deny", {"reason": "no"}, "approver", 200)
    _sync(a, b)
    status = _status(a, task["id"])
    assert status["task"]["status"] == "denied"
    assert "result" not in status


def test_a_cancelled_request_cannot_be_cancelled_again(pair: list[Replica]) -> None:
    a, b = pair
    _, task = _denied_and_requested(a, _token(a, _mission(a)), 7)
    _sync(a, b)
    cancelled = b.post(f"/access/v1/requests/{task['id']}/cancel", {}, "pep", 200)
    assert cancelled["task"]["status"] == "cancelled"
    again = a.call("POST", f"/access/v1/requests/{task['id']}/cancel", "pep", {})
    assert again.status_code == 409
    assert again.json()["type"] == "urn:openid:authzen:access-request:error:invalid_task_state"


@pytest.mark.parametrize(
    "pair", [{"MISSION_LEDGER_ACCESS_REQUEST_TASK_TTL_SECONDS": "2"}], indirect=True
)
def test_a_pending_request_expires_once_across_replicas(pair: list[Replica]) -> None:
    a, b = pair
    _, task = _denied_and_requested(a, _token(a, _mission(a)), 7)
    recorded: list[str] = []
    for _ in range(200):  # until a scheduler has recorded it (the board holds recorded state)
        inbox = b.call("GET", "/v1/access-requests", "approver", status="expired")
        recorded = [item["id"] for item in inbox.json()["data"]]
        if recorded:
            break
        time.sleep(0.1)
    assert recorded == [task["id"]]
    time.sleep(2.5)  # both schedulers (1 s ticks) have since looked at it again
    log = a.call("GET", "/v1/audit/log", "auditor", limit=1000).json()["data"]
    expiries = [
        e for e in log if e["originator_id"] == task["id"] and e["type"].endswith("Expired")
    ]
    assert len(expiries) == 1
    assert _status(a, task["id"])["task"]["status"] == "expired"
    approve = b.call("POST", f"/v1/access-requests/{task['id']}/approve", "approver", {})
    assert approve.status_code == 410
    assert approve.json()["type"] == "urn:openid:authzen:access-request:error:task_expired"


def test_a_mission_revoked_after_approval_voids_the_approval(pair: list[Replica]) -> None:
    a, b = pair
    mission = _mission(a)
    denied, task = _denied_and_requested(a, _token(a, mission), 7)
    _sync(a, b)
    b.post(f"/v1/access-requests/{task['id']}/approve", {"max_uses": 5}, "approver", 200)
    _sync(a, b)
    approval = _status(a, task["id"])["result"]["approval"]
    a.post(
        f"/v1/missions/{mission}/lifecycle", {"operation": "revoke", "reason": "t"}, "operator", 200
    )
    _sync(a, b)
    denied["context"]["consistency"] = {"min_position": a.position}
    for replica in (a, b):
        refused = _reevaluate(replica, denied, approval)
        assert (refused["decision"], refused["context"]["reason"]) == (False, "policy_denied")


def test_twenty_concurrent_reevaluations_of_a_single_use_approval_permit_once(
    pair: list[Replica],
) -> None:
    a, b = pair
    denied, task = _denied_and_requested(a, _token(a, _mission(a)), 7)
    _sync(a, b)
    b.post(f"/v1/access-requests/{task['id']}/approve", {}, "approver", 200)
    _sync(a, b)
    approval = _status(a, task["id"])["result"]["approval"]
    body = {**denied, "context": {**denied["context"], "approval": approval}}
    barrier = threading.Barrier(20)
    decisions: list[bool] = []
    lock = threading.Lock()

    def run(replica: Replica) -> None:
        with httpx.Client(base_url=str(replica.client.base_url), timeout=30.0) as client:
            barrier.wait()
            response = client.post("/access/v1/evaluation", json=body, headers=replica.auth["pep"])
        assert response.status_code == 200, response.text
        with lock:
            decisions.append(bool(response.json()["decision"]))

    threads = [threading.Thread(target=run, args=(pair[i % 2],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decisions) == 20
    assert decisions.count(True) == 1
