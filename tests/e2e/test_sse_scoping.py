"""Signal scoping over SSE (SPEC 7.3), with an independent client library (requests-sse): a
PEP's stream scoped to one resource receives the SETs of a Mission over it, live and on a
``resync``, and never those of a Mission over another resource."""

from __future__ import annotations

from typing import Any

import httpx
import jwt as pyjwt
import pytest

from tests.e2e.server import PEP_SCOPE, ServerProcess, create_key, proposal_body
from tests.e2e.test_sse_resume import Listener

pytestmark = pytest.mark.slow

SSE = "urn:mission-ledger:delivery:sse"
LIFECYCLE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"
ELSEWHERE = "https://crm.example.com"


class Pep:
    def __init__(self, server: ServerProcess) -> None:
        self.url = server.url
        self.auth = {
            role: {"Authorization": "Bearer " + create_key(server.env, role, f"{role}-scoping")}
            for role in ("agent", "approver", "operator", "pep")
        }

    def stream(self) -> str:
        response = httpx.post(
            self.url + "/ssf/streams",
            json={"delivery": {"method": SSE}, "resources": PEP_SCOPE},
            headers=self.auth["pep"],
        )
        assert response.status_code == 201, response.text
        return str(response.json()["stream_id"])

    def mission(self, resource: str) -> str:
        body: dict[str, Any] = proposal_body("scoping", "agent-scoping")
        body["intent"]["resources"] = [resource]
        body["authorization_details"][0]["resource"] = resource
        proposal = httpx.post(self.url + "/v1/proposals", json=body, headers=self.auth["agent"])
        assert proposal.status_code == 202, proposal.text
        approved = httpx.post(
            f"{self.url}/v1/proposals/{proposal.json()['submission_id']}/approve",
            json={},
            headers=self.auth["approver"],
        )
        assert approved.status_code == 201, approved.text
        return str(approved.json()["id"])

    def revoke(self, mission: str) -> None:
        response = httpx.post(
            f"{self.url}/v1/missions/{mission}/lifecycle",
            json={"operation": "revoke", "reason": "scoping"},
            headers=self.auth["operator"],
        )
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def pep(shared_server: ServerProcess) -> Pep:
    return Pep(shared_server)


def _missions(received: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    """(Mission id, state) of every SET received, in order."""
    out = []
    for _, kind, data in received:
        if kind == "set":
            event = pyjwt.decode(data, options={"verify_signature": False})["events"][LIFECYCLE]
            out.append((event["mission"]["id"], event["state"]))
    return out


def test_a_scoped_sse_stream_never_gets_another_resources_sets(pep: Pep) -> None:
    stream = pep.stream()
    listener = Listener(f"{pep.url}/ssf/streams/{stream}/events", pep.auth["pep"])
    elsewhere = pep.mission(ELSEWHERE)  # raised first: it would arrive first, if carried
    pep.revoke(elsewhere)
    guarded = pep.mission(PEP_SCOPE[0])
    pep.revoke(guarded)
    listener.wait_for(2)
    listener.close()
    assert _missions(listener.received) == [(guarded, "active"), (guarded, "revoked")]


def test_a_resync_replays_only_the_streams_own_sets(pep: Pep) -> None:
    stream = pep.stream()
    pep.revoke(pep.mission(ELSEWHERE))
    guarded = pep.mission(PEP_SCOPE[0])
    listener = Listener(f"{pep.url}/ssf/streams/{stream}/events", pep.auth["pep"], last_id="9999")
    listener.wait_for(2)
    listener.close()
    assert listener.received[0][1] == "resync"
    assert _missions(listener.received) == [(guarded, "active")]
