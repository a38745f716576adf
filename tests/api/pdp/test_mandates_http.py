"""Execution Mandates through HTTP: issuance, delegation, narrowing, revocation, inspection,
introspection and the instance kill switch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.pdp.conftest import Harness
from tests.mandate_builders import jkt

ERP = "https://erp.example.com"


def delegable() -> list[dict[str, Any]]:
    return [
        {
            "type": "mission_resource_access",
            "resource": ERP,
            "resource_match": "prefix",
            "actions": ["invoices.read", "invoices.write"],
            "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}},
            "delegation": {"max_depth": 2, "allowed_delegates": [{"sub_profile": "ai_agent"}]},
        }
    ]


def narrower(**changes: Any) -> list[dict[str, Any]]:
    entry = delegable()[0] | {"actions": ["invoices.read"]}
    entry.update(changes)
    return [{k: v for k, v in entry.items() if v is not None}]


def introspect(h: Harness, token: str) -> dict[str, Any]:
    response = h.client.post(
        "/v1/mandates/introspect", json={"token": token}, headers=h.auth("pep")
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def delegate(
    h: Harness, parent_id: str, *, details: list[dict[str, Any]] | None = None, **actor: Any
) -> Any:
    body: dict[str, Any] = {
        "actor": {"client_id": "agent-2", "instance_id": "s-1", "sub_profile": "ai_agent"} | actor,
        "cnf": {"jkt": jkt()},
    }
    if details is not None:
        body["authorization_details"] = details
    return h.client.post(
        f"/v1/mandates/{parent_id}/delegations", json=body, headers=h.auth("agent")
    )


@pytest.mark.postgres_smoke
def test_issuance_answers_201_with_a_signed_token(harness: Harness) -> None:
    mission = harness.mission(delegable())
    issued = harness.mandate(mission)
    assert issued["mandate_id"].startswith("mdt_")
    assert issued["token"].count(".") == 2
    assert issued["expires_at"].endswith("Z")
    assert introspect(harness, issued["token"])["active"] is True


def test_issuance_by_another_agent_is_an_unknown_mission(harness: Harness) -> None:
    mission = harness.mission(delegable())
    head = harness.head()
    response = harness.client.post(
        f"/v1/missions/{mission}/mandates",
        json={"actor": {"client_id": "agent-2", "instance_id": "x"}, "cnf": {"jkt": jkt()}},
        headers=harness.auth("agent2"),
    )
    assert response.status_code == 404
    assert harness.head() == head


@pytest.mark.parametrize(
    "details",
    [
        narrower(resource="https://other.example.com"),
        narrower(actions=["invoices.delete"]),
        narrower(constraints=None),
        narrower(constraints={"max_amount": {"amount": "999", "currency": "USD"}}),
    ],
    ids=["resource", "action", "removed-constraint", "looser-constraint"],
)
def test_amplified_issuance_is_400_authority_exceeded_and_writes_nothing(
    harness: Harness, details: list[dict[str, Any]]
) -> None:
    mission = harness.mission(delegable())
    head = harness.head()
    response = harness.client.post(
        f"/v1/missions/{mission}/mandates",
        json={
            "actor": {"client_id": "agent-1", "instance_id": "i-1"},
            "cnf": {"jkt": jkt()},
            "authorization_details": details,
        },
        headers=harness.auth("agent"),
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "authority_exceeded"
    assert response.json()["detail"]
    assert harness.head() == head


def test_ttl_over_a_day_is_400(harness: Harness) -> None:
    mission = harness.mission(delegable())
    response = harness.client.post(
        f"/v1/missions/{mission}/mandates",
        json={
            "actor": {"client_id": "agent-1", "instance_id": "i-1"},
            "cnf": {"jkt": jkt()},
            "ttl_seconds": 86_401,
        },
        headers=harness.auth("agent"),
    )
    assert response.status_code == 400


def test_malformed_key_thumbprint_is_400(harness: Harness) -> None:
    mission = harness.mission(delegable())
    response = harness.client.post(
        f"/v1/missions/{mission}/mandates",
        json={"actor": {"client_id": "agent-1", "instance_id": "i-1"}, "cnf": {"jkt": "short"}},
        headers=harness.auth("agent"),
    )
    assert response.status_code == 400


def test_issuance_under_a_suspended_mission_is_409(harness: Harness) -> None:
    mission = harness.mission(delegable())
    harness.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "suspend", "reason": "hold"},
        headers=harness.auth("operator"),
    )
    head = harness.head()
    response = harness.client.post(
        f"/v1/missions/{mission}/mandates",
        json={"actor": {"client_id": "agent-1", "instance_id": "i-1"}, "cnf": {"jkt": jkt()}},
        headers=harness.auth("agent"),
    )
    assert response.status_code == 409
    assert harness.head() == head


def test_delegation_answers_201_with_the_parent(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    response = delegate(harness, root["mandate_id"], details=narrower())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["parent_mandate_id"] == root["mandate_id"]
    assert introspect(harness, body["token"])["act"]["act"]["sub"] == "agent-1"


def test_delegation_to_a_disallowed_delegate_is_400(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    head = harness.head()
    response = delegate(harness, root["mandate_id"], details=narrower(), sub_profile="human")
    assert response.status_code == 400
    assert "allowed_delegates" in response.json()["detail"]
    assert harness.head() == head


def test_only_the_holder_may_delegate(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    response = harness.client.post(
        f"/v1/mandates/{root['mandate_id']}/delegations",
        json={"actor": {"client_id": "agent-2"}, "cnf": {"jkt": jkt()}},
        headers=harness.auth("agent2"),
    )
    assert response.status_code == 404


def test_narrowing_answers_a_new_token_version(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    response = harness.client.post(
        f"/v1/mandates/{root['mandate_id']}/narrow",
        json={"authorization_details": narrower(), "reason": "least privilege"},
        headers=harness.auth("operator"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    assert response.json()["token"] != root["token"]
    assert introspect(harness, response.json()["token"])["mandate_version"] == 2


@pytest.mark.postgres_smoke
def test_revoking_the_root_makes_every_descendant_inactive(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    child = delegate(
        harness,
        root["mandate_id"],
        details=narrower(
            delegation={"max_depth": 2, "allowed_delegates": [{"sub_profile": "ai_agent"}]}
        ),
    ).json()
    grandchild = harness.client.post(
        f"/v1/mandates/{child['mandate_id']}/delegations",
        json={
            "actor": {"client_id": "agent-3", "sub_profile": "ai_agent"},
            "cnf": {"jkt": jkt()},
            "authorization_details": narrower(),
        },
        headers=harness.auth("agent2"),
    )
    assert grandchild.status_code == 201, grandchild.text
    revoked = harness.client.post(
        f"/v1/mandates/{root['mandate_id']}/revoke",
        json={"reason": "compromised"},
        headers=harness.auth("operator"),
    )
    assert revoked.status_code == 200
    assert revoked.json()["state"] == "revoked"
    for token in (root["token"], child["token"], grandchild.json()["token"]):
        assert introspect(harness, token) == {"active": False}
    inspected = harness.client.get(
        f"/v1/mandates/{child['mandate_id']}", headers=harness.auth("auditor")
    ).json()
    assert inspected["state"] == "cascaded"
    assert inspected["active"] is False


def test_revoking_an_inactive_mandate_is_200_without_an_event(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    path = f"/v1/mandates/{root['mandate_id']}/revoke"
    harness.client.post(path, json={}, headers=harness.auth("operator"))
    head = harness.head()
    again = harness.client.post(path, json={}, headers=harness.auth("operator"))
    assert again.status_code == 200
    assert harness.head() == head


def test_kill_switch_ends_the_instances_mandates_only(harness: Harness) -> None:
    mission = harness.mission(delegable())
    doomed = harness.mandate(mission, instance="i-1")
    spared = harness.mandate(mission, instance="i-2")
    response = harness.client.post(
        "/v1/agents/agent-1/instances/i-1/revoke",
        json={"reason": "compromised host"},
        headers=harness.auth("operator"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["mandates"] == [doomed["mandate_id"]]
    assert introspect(harness, doomed["token"]) == {"active": False}
    assert introspect(harness, spared["token"])["active"] is True


@pytest.mark.parametrize("operation", ["revoke", "complete"])
@pytest.mark.postgres_smoke
def test_mission_end_makes_every_mandate_inactive(harness: Harness, operation: str) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    harness.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": operation, "reason": "done"},
        headers=harness.auth("operator"),
    )
    assert introspect(harness, root["token"]) == {"active": False}
    inspected = harness.client.get(
        f"/v1/mandates/{root['mandate_id']}", headers=harness.auth("operator")
    ).json()
    assert inspected["recorded_state"] == "cascaded"


def test_mission_expiry_makes_every_mandate_inactive(harness: Harness) -> None:
    mission = harness.mission(delegable(), days=1)
    root = harness.mandate(mission, ttl=86_400)
    harness.clock.advance(days=1, seconds=1)
    assert introspect(harness, root["token"]) == {"active": False}


def test_suspension_holds_and_resume_restores_mandates(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    path = f"/v1/missions/{mission}/lifecycle"
    harness.client.post(
        path, json={"operation": "suspend", "reason": "x"}, headers=harness.auth("operator")
    )
    assert introspect(harness, root["token"]) == {"active": False}
    harness.client.post(
        path, json={"operation": "resume", "reason": "x"}, headers=harness.auth("admin")
    )
    assert introspect(harness, root["token"])["active"] is True


def test_expired_mandate_introspects_inactive(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission, ttl=60)
    harness.clock.advance(seconds=61)
    assert introspect(harness, root["token"]) == {"active": False}


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.eyJqdGkiOiJtZHRfeCJ9."],
    ids=["garbage", "three-parts", "alg-none"],
)
def test_unverifiable_tokens_introspect_inactive(harness: Harness, token: str) -> None:
    assert introspect(harness, token) == {"active": False}


def test_inspection_shows_claims_chain_history_and_rendering(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    child = delegate(harness, root["mandate_id"], details=narrower()).json()
    view = harness.client.get(
        f"/v1/mandates/{child['mandate_id']}", headers=harness.auth("agent2")
    ).json()
    assert view["claims"]["jti"] == child["mandate_id"]
    assert [link["mandate_id"] for link in view["delegation_chain"]] == [
        root["mandate_id"],
        child["mandate_id"],
    ]
    assert [e["type"] for e in view["history"]] == ["Delegated"]
    assert any("agent-2" in line for line in view["rendered"])


def test_inspection_by_a_stranger_is_404(harness: Harness) -> None:
    mission = harness.mission(delegable())
    root = harness.mandate(mission)
    response = harness.client.get(
        f"/v1/mandates/{root['mandate_id']}", headers=harness.auth("agent2")
    )
    assert response.status_code == 404


def test_introspection_needs_the_pep_role(harness: Harness) -> None:
    response = harness.client.post(
        "/v1/mandates/introspect", json={"token": "x"}, headers=harness.auth("operator")
    )
    assert response.status_code == 403
