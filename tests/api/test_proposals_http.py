"""Proposals through HTTP (SPEC 3 "Proposals and Missions", SPEC 6.3): submission, the
approval inbox, approval (with narrowing and an earlier expiry), denial, cancellation, and
what an agent may see of another agent's work."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ledger.domain.instants import format_instant, parse_instant
from tests.api.conftest import Api, assert_problem, entry, pointers
from tests.builders import ERP


def _proposal(api: Api, submission_id: str, who: str = "approver") -> Any:
    return api.client.get(f"/v1/proposals/{submission_id}", headers=api.auth(who))


# ---------------------------------------------------------------------- submission


def test_submission_answers_202_pending_with_an_expiry_and_a_ledger_position(api: Api) -> None:
    response = api.client.post("/v1/proposals", json=api.proposal_body(), headers=api.auth("agent"))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["submission_id"].startswith("prp_")
    assert body["status"] == "pending"
    assert parse_instant(body["expires_at"]) > api.clock.now()
    assert int(response.headers["Ledger-Position"]) == api.head()


def test_a_submitted_proposal_is_in_the_approval_inbox(api: Api) -> None:
    submitted = api.submit()
    inbox = api.client.get("/v1/proposals?status=pending", headers=api.auth("approver"))
    assert inbox.status_code == 200
    [item] = inbox.json()["data"]
    assert item["submission_id"] == submitted["submission_id"]
    assert item["client_id"] == "agent-1"
    assert item["rendered_authority"]
    assert inbox.json()["next_cursor"] is None


def test_the_inbox_filters_by_status(api: Api) -> None:
    pending = api.submit()
    approved = api.mission()
    listed = api.client.get("/v1/proposals?status=approved", headers=api.auth("approver"))
    assert [p["submission_id"] for p in listed.json()["data"]] == [approved["submission_id"]]
    listed = api.client.get("/v1/proposals?status=pending", headers=api.auth("approver"))
    assert [p["submission_id"] for p in listed.json()["data"]] == [pending["submission_id"]]


@pytest.mark.postgres_smoke
def test_the_approval_inbox_pages_with_a_cursor(api: Api) -> None:
    created = [api.submit()["submission_id"] for _ in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = api.client.get("/v1/proposals", params=params, headers=api.auth("approver"))
        assert page.status_code == 200, page.text
        seen.extend(p["submission_id"] for p in page.json()["data"])
        if page.json()["next_cursor"] is None:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert seen == created


def test_an_unknown_status_filter_is_400(api: Api) -> None:
    response = api.client.get("/v1/proposals?status=bogus", headers=api.auth("approver"))
    assert_problem(response, 400, "invalid_request")


def test_an_agent_cannot_submit_for_another_client_id(api: Api) -> None:
    head = api.head()
    response = api.client.post(
        "/v1/proposals", json=api.proposal_body(client="agent2"), headers=api.auth("agent")
    )
    assert_problem(response, 403, "forbidden")
    assert api.head() == head


def test_proposed_authority_outside_the_intent_resources_is_400(api: Api) -> None:
    head = api.head()
    body = api.proposal_body(authorization_details=[entry("https://other.example.com")])
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/authorization_details/0/resource"]
    assert api.head() == head


def test_an_intent_that_has_already_expired_is_400(api: Api) -> None:
    head = api.head()
    body = api.proposal_body()
    body["intent"]["expires_at"] = format_instant(api.clock.now() - timedelta(seconds=1))
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/intent/expires_at"]
    assert api.head() == head


# ---------------------------------------------------------------------- approval


@pytest.mark.postgres_smoke
def test_approval_answers_201_with_an_active_mission_at_version_1(api: Api) -> None:
    proposal = api.submit()
    response = api.approve(proposal["submission_id"])
    assert response.status_code == 201, response.text
    mission = response.json()
    assert mission["id"].startswith("msn_")
    assert mission["state"] == "active"
    assert mission["version"] == 1
    assert mission["authorization_details"] == [entry()]
    assert mission["effective_authorization_details"] == [entry()]
    assert mission["authority_hash"].startswith("sha-256:")
    assert mission["intent_hash"].startswith("sha-256:")
    assert mission["subject"] == {"iss": "https://idp.example.com", "sub": "alice"}
    assert mission["client_id"] == "agent-1"
    assert mission["submission_id"] == proposal["submission_id"]
    assert mission["expires_at"] == api.proposal_body()["intent"]["expires_at"]
    assert int(response.headers["Ledger-Position"]) == api.head()


def test_approval_marks_the_proposal_approved_with_its_mission(api: Api) -> None:
    proposal = api.submit()
    mission = api.approve(proposal["submission_id"]).json()
    seen = _proposal(api, proposal["submission_id"]).json()
    assert seen["status"] == "approved"
    assert seen["mission_id"] == mission["id"]
    assert seen["intent_hash"] == mission["intent_hash"]


def test_the_mission_record_equals_the_approval_answer(api: Api) -> None:
    mission = api.mission()
    assert api.get_mission(mission["id"]) == mission


def test_an_approver_may_narrow_the_authority(api: Api) -> None:
    proposal = api.submit()
    narrower = [entry(actions=["invoices.read"])]
    response = api.approve(proposal["submission_id"], {"authorization_details": narrower})
    assert response.status_code == 201, response.text
    mission = response.json()
    assert mission["authorization_details"] == narrower
    assert mission["effective_authorization_details"] == narrower
    unnarrowed = api.mission()
    assert mission["authority_hash"] != unnarrowed["authority_hash"]


@pytest.mark.parametrize(
    "wider",
    [
        [entry(actions=["invoices.read", "journal-entries.write", "invoices.delete"])],
        [entry(actions=["invoices.*"])],
        [entry(), entry(resource="https://erp.example.com/other", actions=["invoices.read"])],
        [entry(resource_match="prefix")],
    ],
    ids=["extra-action", "action-family", "extra-entry", "prefix-match"],
)
def test_an_approver_cannot_widen_the_authority(api: Api, wider: list[dict[str, Any]]) -> None:
    proposal = api.submit()
    head = api.head()
    response = api.approve(proposal["submission_id"], {"authorization_details": wider})
    assert_problem(response, 400, "authority_exceeded")
    assert api.head() == head
    assert _proposal(api, proposal["submission_id"]).json()["status"] == "pending"


def test_an_approver_may_narrow_a_prefix_to_one_resource_below_it(api: Api) -> None:
    proposal = api.submit(authorization_details=[entry(resource_match="prefix")])
    below = [entry(f"{ERP}/invoices", actions=["invoices.read"])]
    response = api.approve(proposal["submission_id"], {"authorization_details": below})
    assert response.status_code == 201, response.text
    assert response.json()["authorization_details"] == below


def test_an_approver_supplying_authority_outside_the_intent_is_400(api: Api) -> None:
    body = api.proposal_body()
    del body["authorization_details"]
    submitted = api.client.post("/v1/proposals", json=body, headers=api.auth("agent")).json()
    head = api.head()
    response = api.approve(
        submitted["submission_id"],
        {"authorization_details": [entry("https://other.example.com")]},
    )
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/authorization_details/0/resource"]
    assert api.head() == head


def test_an_approver_cannot_drop_a_proposed_constraint(api: Api) -> None:
    limited = [entry(constraints={"max_amount": {"amount": "500.00", "currency": "USD"}})]
    proposal = api.submit(authorization_details=limited)
    head = api.head()
    response = api.approve(proposal["submission_id"], {"authorization_details": [entry()]})
    assert_problem(response, 400, "authority_exceeded")
    assert api.head() == head


def test_an_approver_may_tighten_a_proposed_constraint(api: Api) -> None:
    limited = [entry(constraints={"max_amount": {"amount": "500.00", "currency": "USD"}})]
    proposal = api.submit(authorization_details=limited)
    tighter = [entry(constraints={"max_amount": {"amount": "100", "currency": "USD"}})]
    response = api.approve(proposal["submission_id"], {"authorization_details": tighter})
    assert response.status_code == 201, response.text
    assert response.json()["authorization_details"] == tighter


def test_an_approver_may_shorten_the_expiry(api: Api) -> None:
    proposal = api.submit()
    earlier = format_instant(api.clock.now() + timedelta(days=3))
    response = api.approve(proposal["submission_id"], {"expires_at": earlier})
    assert response.status_code == 201, response.text
    assert response.json()["expires_at"] == earlier


def test_an_approver_cannot_extend_the_expiry(api: Api) -> None:
    proposal = api.submit()
    head = api.head()
    later = format_instant(api.clock.now() + timedelta(days=31))
    response = api.approve(proposal["submission_id"], {"expires_at": later})
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/expires_at"]
    assert api.head() == head
    assert _proposal(api, proposal["submission_id"]).json()["status"] == "pending"


def test_an_expiry_in_the_past_is_refused(api: Api) -> None:
    proposal = api.submit()
    head = api.head()
    past = format_instant(api.clock.now() - timedelta(minutes=1))
    response = api.approve(proposal["submission_id"], {"expires_at": past})
    assert_problem(response, 400, "invalid_request")
    assert api.head() == head


def test_a_proposal_without_authority_needs_the_approver_to_supply_it(api: Api) -> None:
    body = api.proposal_body()
    del body["authorization_details"]
    submitted = api.client.post("/v1/proposals", json=body, headers=api.auth("agent")).json()
    head = api.head()
    refused = api.approve(submitted["submission_id"])
    assert_problem(refused, 400, "invalid_request")
    assert pointers(refused) == ["/authorization_details"]
    assert api.head() == head
    approved = api.approve(submitted["submission_id"], {"authorization_details": [entry()]})
    assert approved.status_code == 201, approved.text


def test_approving_twice_is_409_conflict(api: Api) -> None:
    proposal = api.submit()
    assert api.approve(proposal["submission_id"]).status_code == 201
    head = api.head()
    assert_problem(api.approve(proposal["submission_id"]), 409, "conflict")
    assert api.head() == head


def test_replaying_an_approval_event_id_answers_the_same_mission(api: Api) -> None:
    proposal = api.submit()
    first = api.approve(proposal["submission_id"], {"approval_event_id": "evt-1"})
    assert first.status_code == 201
    head = api.head()
    again = api.approve(proposal["submission_id"], {"approval_event_id": "evt-1"})
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert api.head() == head


def test_an_expired_proposal_cannot_be_approved(api: Api) -> None:
    proposal = api.submit()
    api.clock.set(parse_instant(proposal["expires_at"]) + timedelta(seconds=1))
    assert _proposal(api, proposal["submission_id"]).json()["status"] == "expired"
    response = api.approve(proposal["submission_id"])
    body = assert_problem(response, 409, "conflict")
    assert body["status"] == 409


def test_approving_an_unknown_proposal_is_404(api: Api) -> None:
    head = api.head()
    response = api.approve("prp_unknown")
    assert_problem(response, 404, "not_found")
    assert api.head() == head


# ---------------------------------------------------------------------- deny and cancel


def test_denial_records_the_reason(api: Api) -> None:
    proposal = api.submit()
    response = api.client.post(
        f"/v1/proposals/{proposal['submission_id']}/deny",
        json={"reason": "out of scope"},
        headers=api.auth("approver"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "denied"
    assert response.json()["reason"] == "out of scope"
    assert int(response.headers["Ledger-Position"]) == api.head()


def test_a_denied_proposal_cannot_be_approved(api: Api) -> None:
    proposal = api.submit()
    api.client.post(
        f"/v1/proposals/{proposal['submission_id']}/deny",
        json={"reason": "no"},
        headers=api.auth("approver"),
    )
    head = api.head()
    assert_problem(api.approve(proposal["submission_id"]), 409, "conflict")
    assert api.head() == head


def test_denying_a_denied_proposal_again_changes_nothing(api: Api) -> None:
    proposal = api.submit()
    path = f"/v1/proposals/{proposal['submission_id']}/deny"
    first = api.client.post(path, json={"reason": "no"}, headers=api.auth("approver"))
    head = api.head()
    again = api.client.post(path, json={"reason": "no"}, headers=api.auth("approver"))
    assert again.status_code == 200
    assert again.json() == first.json()
    assert api.head() == head


def test_the_agent_cancels_its_own_proposal_with_a_reason(api: Api) -> None:
    proposal = api.submit()
    response = api.client.post(
        f"/v1/proposals/{proposal['submission_id']}/cancel",
        json={"reason": "no longer needed"},
        headers=api.auth("agent"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["reason"] == "no longer needed"
    assert int(response.headers["Ledger-Position"]) == api.head()


def test_cancelling_an_approved_proposal_is_409_conflict(api: Api) -> None:
    mission = api.mission()
    head = api.head()
    response = api.client.post(
        f"/v1/proposals/{mission['submission_id']}/cancel",
        json={"reason": "too late"},
        headers=api.auth("agent"),
    )
    assert_problem(response, 409, "conflict")
    assert api.head() == head


def test_another_agent_cannot_cancel_a_proposal(api: Api) -> None:
    proposal = api.submit()
    head = api.head()
    response = api.client.post(
        f"/v1/proposals/{proposal['submission_id']}/cancel",
        json={"reason": "mine now"},
        headers=api.auth("agent2"),
    )
    assert_problem(response, 404, "not_found")
    assert api.head() == head


# ---------------------------------------------------------------------- visibility


def _without_id(body: dict[str, Any], identifier: str) -> dict[str, Any]:
    return {k: v.replace(identifier, "<id>") if isinstance(v, str) else v for k, v in body.items()}


def test_an_agent_sees_its_own_proposal(api: Api) -> None:
    proposal = api.submit()
    response = _proposal(api, proposal["submission_id"], who="agent")
    assert response.status_code == 200
    assert response.json()["submission_id"] == proposal["submission_id"]


def test_another_agents_proposal_is_a_404_identical_to_an_unknown_id(api: Api) -> None:
    proposal = api.submit()
    other = _proposal(api, proposal["submission_id"], who="agent2")
    unknown_id = "prp_" + "A" * (len(proposal["submission_id"]) - 4)
    unknown = _proposal(api, unknown_id, who="agent2")
    assert other.status_code == unknown.status_code == 404
    assert other.headers["content-type"] == unknown.headers["content-type"]
    assert _without_id(other.json(), proposal["submission_id"]) == _without_id(
        unknown.json(), unknown_id
    )


def test_another_agents_mission_is_a_404_identical_to_an_unknown_id(api: Api) -> None:
    mission = api.mission()
    other = api.client.get(f"/v1/missions/{mission['id']}", headers=api.auth("agent2"))
    unknown_id = "msn_" + "A" * (len(mission["id"]) - 4)
    unknown = api.client.get(f"/v1/missions/{unknown_id}", headers=api.auth("agent2"))
    assert other.status_code == unknown.status_code == 404
    assert other.headers["content-type"] == unknown.headers["content-type"]
    assert _without_id(other.json(), mission["id"]) == _without_id(unknown.json(), unknown_id)


def test_an_agent_lists_only_its_own_proposals(api: Api) -> None:
    mine = api.submit()
    api.submit(who="agent2")
    listed = api.client.get("/v1/proposals", headers=api.auth("agent"))
    assert listed.status_code == 200
    assert [p["submission_id"] for p in listed.json()["data"]] == [mine["submission_id"]]


def test_the_approver_lists_every_agents_proposals(api: Api) -> None:
    first = api.submit()
    second = api.submit(who="agent2")
    listed = api.client.get("/v1/proposals", headers=api.auth("approver"))
    ids = {p["submission_id"] for p in listed.json()["data"]}
    assert ids == {first["submission_id"], second["submission_id"]}


def test_an_agent_sees_its_own_mission(api: Api) -> None:
    mission = api.mission()
    assert api.get_mission(mission["id"], who="agent")["id"] == mission["id"]


def test_the_proposal_resource_renders_its_authority_in_plain_language(api: Api) -> None:
    proposal = api.submit()
    seen = _proposal(api, proposal["submission_id"]).json()
    assert isinstance(seen["rendered_authority"], str | list)
    assert ERP in str(seen["rendered_authority"])
