"""Acceptance (issue 11, discharge): a completion event ends exactly the entry named; its
Mandates deny on the next decision on both replicas (the other one given the write's
``Ledger-Position`` as ``min_position``); the SETs it causes arrive with one ``txn``.

Two server processes on one PostgreSQL; a poll stream on the first carries the SETs.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from ledger.domain.streams import LIFECYCLE_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from tests.discharge_builders import INVOICES, JOURNAL, RECONCILED, discharge_authority
from tests.e2e.conftest import launch
from tests.e2e.server import PEP_SCOPE, ServerProcess, create_key, store_env
from tests.mandate_builders import proof_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

AGENT = "agent-d"


def _jkt(seed: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")


class Replica:
    def __init__(self, url: str, auth: dict[str, dict[str, str]]) -> None:
        self.client = httpx.Client(base_url=url, timeout=10.0)
        self.auth = auth
        #: The ``Ledger-Position`` of the newest write answered here.
        self.position = 0

    def post(self, path: str, body: Any, role: str, status: int = 200) -> httpx.Response:
        response = self.client.post(path, json=body, headers=self.auth[role])
        assert response.status_code == status, (path, response.text)
        self.position = max(self.position, int(response.headers.get("Ledger-Position", 0)))
        return response

    def decide(
        self, token: str, action: str, resource: str, min_position: int | None = None
    ) -> bool:
        context: dict[str, Any] = {"mandate": token, "proof": proof_of(token)}
        if min_position is not None:
            context["consistency"] = {"min_position": min_position}
        body = {
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            "action": {"name": action},
            "resource": {"type": "api", "id": resource},
            "context": context,
        }
        return bool(self.post("/access/v1/evaluation", body, "pep").json()["decision"])


def _mission(a: Replica) -> str:
    body = {
        "intent": {
            "goal": "close the period",
            "resources": ["https://erp.example.com"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": discharge_authority(),
        "subject": {"iss": "https://idp.example.com", "sub": "alice"},
        "client_id": AGENT,
    }
    proposal = a.post("/v1/proposals", body, "agent", 202).json()
    return str(
        a.post(f"/v1/proposals/{proposal['submission_id']}/approve", {}, "approver", 201).json()[
            "id"
        ]
    )


def _mandate(a: Replica, mission: str, seed: str, details: Any = None) -> str:
    body: dict[str, Any] = {
        "actor": {"client_id": AGENT, "instance_id": "i-1"},
        "cnf": {"jkt": _jkt(seed)},
    }
    if details is not None:
        body["authorization_details"] = details
    return str(a.post(f"/v1/missions/{mission}/mandates", body, "agent", 201).json()["token"])


def _drain(a: Replica, stream_id: str, count: int) -> list[dict[str, Any]]:
    """Poll until ``count`` SETs have arrived (acknowledging them)."""
    claims: list[dict[str, Any]] = []
    for _ in range(200):
        answer = a.post(f"/ssf/poll/{stream_id}", {"returnImmediately": True}, "pep").json()
        claims += [
            pyjwt.decode(s, options={"verify_signature": False}) for s in answer["sets"].values()
        ]
        if answer["sets"]:
            a.post(f"/ssf/poll/{stream_id}", {"maxEvents": 0, "ack": list(answer["sets"])}, "pep")
        if len(claims) >= count:
            return claims
        time.sleep(0.05)
    raise AssertionError(f"{len(claims)} of {count} SETs arrived")


def test_a_completion_event_ends_exactly_its_entry_on_both_replicas(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    auth = {
        role: {
            "Authorization": "Bearer "
            + create_key(env, role, AGENT if role == "agent" else f"{role}-d")
        }
        for role in ("agent", "approver", "pep")
    }
    a = Replica(launch(servers, env, tmp_path, "a").url, auth)
    b = Replica(launch(servers, env, tmp_path, "b").url, auth)
    try:
        _discharge_on_two_replicas(a, b)
    finally:
        a.client.close()
        b.client.close()


def _discharge_on_two_replicas(a: Replica, b: Replica) -> None:
    body = {"delivery": {"method": "urn:ietf:rfc:8936"}, "resources": PEP_SCOPE}
    stream = a.post("/ssf/streams", body, "pep", 201)
    stream_id = stream.json()["stream_id"]
    mission = _mission(a)
    whole = _mandate(a, mission, "whole")  # every entry: narrows
    invoices_only = _mandate(a, mission, "invoices", [discharge_authority()[0]])  # ends
    assert a.decide(whole, "invoices.read", INVOICES)
    # The other replica, once it holds the Mandates issued on the first.
    assert b.decide(invoices_only, "invoices.read", INVOICES, min_position=a.position)
    _drain(a, stream_id, 1)  # the activation

    reported = a.post(
        f"/v1/missions/{mission}/completion-events",
        {"event_type": RECONCILED, "event_id": "evt-1", "occurred_at": "2026-12-01T00:00:00Z"},
        "agent",
    )
    position = int(reported.headers["Ledger-Position"])

    for token in (whole, invoices_only):
        assert not a.decide(token, "invoices.read", INVOICES)
        assert not b.decide(token, "invoices.read", INVOICES, min_position=position)
    # Exactly that entry: the rest of the narrowed Mandate still permits, on both replicas.
    assert a.decide(whole, "journal-entries.write", JOURNAL)
    assert b.decide(whole, "journal-entries.write", JOURNAL, min_position=position)

    caused = _drain(a, stream_id, 3)
    kinds = sorted(next(iter(c["events"])) for c in caused)
    assert kinds == sorted([LIFECYCLE_CHANGE, TOKEN_CLAIMS_CHANGE, SESSION_REVOKED])
    assert len({c["txn"] for c in caused}) == 1
    lifecycle = next(
        c["events"][LIFECYCLE_CHANGE] for c in caused if LIFECYCLE_CHANGE in c["events"]
    )
    assert lifecycle["authority_changed"] is True
