"""Missions through HTTP (SPEC 3 "Proposals and Missions"): containment (removal only),
expansion (a successor proposal; approving it supersedes the predecessor), the event
history and the board (filters and cursor paging); ``as_of`` is in test_as_of_http.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem, entry, pointers
from tests.builders import ERP

LEDGER = "https://ledger.example.com"


def _contain(api: Api, mission_id: str, contained: list[dict[str, Any]], **extra: Any) -> Any:
    return api.client.post(
        f"/v1/missions/{mission_id}/containment",
        json={"contained": contained, "reason": "incident 42", **extra},
        headers=api.auth("operator"),
    )


def _expand(api: Api, mission_id: str, who: str = "agent", **extra: Any) -> Any:
    body = {
        "intent": api.intent(resources=[ERP, LEDGER]),
        "authorization_details": [entry(), entry(LEDGER, ["entries.read"])],
        **extra,
    }
    return api.client.post(f"/v1/missions/{mission_id}/expansion", json=body, headers=api.auth(who))


def _list(api: Api, who: str = "operator", **params: Any) -> Any:
    return api.client.get("/v1/missions", params=params, headers=api.auth(who))


# ---------------------------------------------------------------------- containment


def test_containment_removes_an_action_and_bumps_the_version(api: Api) -> None:
    mission = api.mission()
    response = _contain(
        api, mission["id"], [{"resource": ERP, "actions": ["journal-entries.write"]}]
    )
    assert response.status_code == 200, response.text
    contained = response.json()
    assert contained["version"] == mission["version"] + 1
    assert contained["state"] == "active"
    assert contained["effective_authorization_details"] == [entry(actions=["invoices.read"])]
    assert contained["authorization_details"] == mission["authorization_details"]
    assert contained["authority_hash"] == mission["authority_hash"]
    assert contained["contained"] == [{"resource": ERP, "actions": ["journal-entries.write"]}]
    assert int(response.headers["Ledger-Position"]) == api.head()


def test_containment_of_a_whole_resource_empties_the_effective_authority(api: Api) -> None:
    mission = api.mission()
    response = _contain(api, mission["id"], [{"resource": ERP}])
    assert response.status_code == 200, response.text
    assert response.json()["effective_authorization_details"] == []


def test_containment_already_in_place_changes_nothing(api: Api) -> None:
    mission = api.mission()
    item = [{"resource": ERP, "actions": ["journal-entries.write"]}]
    first = _contain(api, mission["id"], item)
    head = api.head()
    again = _contain(api, mission["id"], item)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert api.head() == head


def test_containment_of_capability_outside_the_authority_is_400(api: Api) -> None:
    mission = api.mission()
    head = api.head()
    response = _contain(api, mission["id"], [{"resource": LEDGER}])
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/contained/0"]
    assert api.head() == head


def test_containments_accumulate_and_only_remove(api: Api) -> None:
    mission = api.mission()
    _contain(api, mission["id"], [{"resource": ERP, "actions": ["journal-entries.write"]}])
    effective = api.get_mission(mission["id"])["effective_authorization_details"]
    _contain(api, mission["id"], [{"resource": ERP, "actions": ["invoices.read"]}])
    narrower = api.get_mission(mission["id"])["effective_authorization_details"]
    assert effective == [entry(actions=["invoices.read"])]
    assert narrower == []


def test_containment_of_a_terminal_mission_is_409(api: Api) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "revoke")
    head = api.head()
    response = _contain(api, mission["id"], [{"resource": ERP}])
    assert_problem(response, 409, "conflict")
    assert api.head() == head


def test_containment_honours_expected_version(api: Api) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "suspend")
    head = api.head()
    response = _contain(api, mission["id"], [{"resource": ERP}], expected_version=1)
    assert_problem(response, 409, "stale_version")
    assert api.head() == head


# ---------------------------------------------------------------------- expansion


def test_expansion_answers_202_with_a_proposal_linked_to_its_predecessor(api: Api) -> None:
    mission = api.mission()
    response = _expand(api, mission["id"])
    assert response.status_code == 202, response.text
    proposal = response.json()
    assert proposal["status"] == "pending"
    assert proposal["predecessor"] == mission["id"]
    assert proposal["client_id"] == mission["client_id"]
    assert int(response.headers["Ledger-Position"]) == api.head()
    assert api.get_mission(mission["id"])["state"] == "active"


def test_approving_an_expansion_supersedes_the_predecessor(api: Api) -> None:
    mission = api.mission()
    proposal = _expand(api, mission["id"]).json()
    successor = api.approve(proposal["submission_id"])
    assert successor.status_code == 201, successor.text
    assert successor.json()["state"] == "active"
    assert successor.json()["predecessor"] == mission["id"]
    predecessor = api.get_mission(mission["id"])
    assert predecessor["state"] == "superseded"
    assert predecessor["successor"] == successor.json()["id"]
    assert predecessor["version"] == mission["version"] + 1


def test_an_expansion_of_a_mission_no_longer_active_cannot_be_approved(api: Api) -> None:
    mission = api.mission()
    proposal = _expand(api, mission["id"]).json()
    api.lifecycle(mission["id"], "suspend")
    head = api.head()
    response = api.approve(proposal["submission_id"])
    assert_problem(response, 409, "conflict")
    assert api.head() == head


def test_only_one_expansion_can_supersede_a_mission(api: Api) -> None:
    mission = api.mission()
    first = _expand(api, mission["id"]).json()
    second = _expand(api, mission["id"]).json()
    assert api.approve(first["submission_id"]).status_code == 201
    head = api.head()
    assert_problem(api.approve(second["submission_id"]), 409, "conflict")
    assert api.head() == head


def test_expanding_a_suspended_mission_is_409(api: Api) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "suspend")
    head = api.head()
    assert_problem(_expand(api, mission["id"]), 409, "conflict")
    assert api.head() == head


def test_another_agent_cannot_expand_a_mission(api: Api) -> None:
    mission = api.mission()
    head = api.head()
    assert_problem(_expand(api, mission["id"], who="agent2"), 404, "not_found")
    assert api.head() == head


# ---------------------------------------------------------------------- history


@pytest.mark.parametrize("who", ["auditor", "operator"])
def test_the_event_history_is_ordered_and_hash_chained(api: Api, who: str) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "suspend")
    _contain(api, mission["id"], [{"resource": ERP, "actions": ["journal-entries.write"]}])
    api.lifecycle(mission["id"], "revoke")
    response = api.client.get(f"/v1/missions/{mission['id']}/events", headers=api.auth(who))
    assert response.status_code == 200, response.text
    events = response.json()["data"]
    assert [e["version"] for e in events] == [1, 2, 3, 4]
    assert events[0]["type"] == "Approved"
    assert events[-1]["type"] == "Revoked"
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert all(isinstance(e["chain_hash"], str) and len(e["chain_hash"]) == 64 for e in events)
    assert len({e["chain_hash"] for e in events}) == len(events)
    assert events[-1]["position"] <= api.head()


def test_the_history_of_an_unknown_mission_is_404(api: Api) -> None:
    response = api.client.get("/v1/missions/msn_unknown/events", headers=api.auth("auditor"))
    assert_problem(response, 404, "not_found")


# ---------------------------------------------------------------------- the board


def test_the_board_filters_by_state(api: Api) -> None:
    first = api.mission()
    second = api.mission()
    api.lifecycle(second["id"], "suspend")
    suspended = _list(api, state="suspended").json()["data"]
    assert [m["id"] for m in suspended] == [second["id"]]
    active = _list(api, state="active").json()["data"]
    assert [m["id"] for m in active] == [first["id"]]


def test_the_board_filters_by_subject(api: Api) -> None:
    alice = api.mission()
    bob = api.mission(subject={"iss": "https://idp.example.com", "sub": "bob"})
    assert [m["id"] for m in _list(api, subject="bob").json()["data"]] == [bob["id"]]
    assert [m["id"] for m in _list(api, subject="alice").json()["data"]] == [alice["id"]]


def test_the_board_filters_by_client_id(api: Api) -> None:
    api.mission()
    other = api.mission(who="agent2")
    listed = _list(api, who="auditor", client_id="agent-2").json()["data"]
    assert [m["id"] for m in listed] == [other["id"]]


@pytest.mark.postgres_smoke
def test_the_board_combines_filters(api: Api) -> None:
    api.mission()
    target = api.mission(who="agent2")
    api.mission(who="agent2")
    api.lifecycle(target["id"], "complete")
    listed = _list(api, client_id="agent-2", state="completed").json()["data"]
    assert [m["id"] for m in listed] == [target["id"]]


def test_an_unknown_state_filter_is_400(api: Api) -> None:
    assert_problem(_list(api, state="paused"), 400, "invalid_request")


@pytest.mark.postgres_smoke
def test_cursor_paging_walks_every_mission_exactly_once(api: Api) -> None:
    created = [api.mission()["id"] for _ in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = _list(api, **params)
        assert page.status_code == 200, page.text
        data = page.json()
        assert len(data["data"]) <= 3
        seen.extend(m["id"] for m in data["data"])
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert len(seen) == len(set(seen))
    assert seen == created


def test_cursor_paging_keeps_the_filter(api: Api) -> None:
    wanted = []
    for index in range(6):
        mission = api.mission(who="agent2" if index % 2 else "agent")
        if index % 2:
            wanted.append(mission["id"])
    seen: list[str] = []
    params: dict[str, Any] = {"client_id": "agent-2", "limit": 2}
    while True:
        page = _list(api, **params).json()
        seen.extend(m["id"] for m in page["data"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == wanted


def test_a_garbage_cursor_is_400(api: Api) -> None:
    api.mission()
    assert_problem(_list(api, cursor="not-a-cursor!"), 400, "invalid_request")


@pytest.mark.parametrize("limit", ["0", "201", "ten"])
def test_an_out_of_range_limit_is_400_not_422(api: Api, limit: str) -> None:
    assert_problem(_list(api, limit=limit), 400, "invalid_request")
