"""Completion events over HTTP (SPEC 7.3 "Discharge"): who may report one, the 200 Mission
answer with ``Ledger-Position``, idempotency on ``event_id``, and refusals that write
nothing."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import Response

from ledger.domain.instants import format_instant
from tests.api.conftest import Api, assert_problem, pointers
from tests.builders import ERP
from tests.discharge_builders import (
    CLOSED,
    JOURNAL,
    LEDGER,
    RECONCILED,
    digest_of,
    discharge_authority,
)


def discharge_mission(api: Api) -> dict[str, Any]:
    return api.mission(authorization_details=discharge_authority())


def report(api: Api, mission_id: str, who: str = "agent", **body: Any) -> Response:
    payload = {
        "event_type": RECONCILED,
        "event_id": "evt-1",
        "occurred_at": format_instant(api.clock.now()),
        **body,
    }
    return api.client.post(
        f"/v1/missions/{mission_id}/completion-events", json=payload, headers=api.auth(who)
    )


@pytest.mark.parametrize("who", ["agent", "operator", "admin"])
def test_the_missions_agent_and_operators_may_report(api: Api, who: str) -> None:
    mission = discharge_mission(api)
    response = report(api, mission["id"], who=who)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("who", ["approver", "auditor", "pep"])
def test_other_roles_may_not_report(api: Api, who: str) -> None:
    mission = discharge_mission(api)
    head = api.head()
    assert_problem(report(api, mission["id"], who=who), 403, "forbidden")
    assert api.head() == head


def test_another_agent_sees_no_such_mission(api: Api) -> None:
    mission = discharge_mission(api)
    head = api.head()
    assert_problem(report(api, mission["id"], who="agent2"), 404, "not_found")
    assert api.head() == head


def test_the_answer_is_the_mission_without_the_discharged_entry(api: Api) -> None:
    mission = discharge_mission(api)
    response = report(api, mission["id"])
    body = response.json()
    assert body == api.get_mission(mission["id"])
    assert body["version"] == 2
    assert body["state"] == "active"
    assert [e["resource"] for e in body["effective_authorization_details"]] == [JOURNAL, LEDGER]
    assert body["discharged"][0]["event_type"] == RECONCILED
    assert body["discharged"][0]["event_id"] == "evt-1"
    assert body["authorization_details"] == discharge_authority()


@pytest.mark.postgres_smoke
def test_the_answer_carries_the_ledger_position_of_the_discharge(api: Api) -> None:
    mission = discharge_mission(api)
    response = report(api, mission["id"])
    assert int(response.headers["Ledger-Position"]) == api.events(mission["id"])[-1]["position"]
    assert api.events(mission["id"])[-1]["type"] == "EntryDischarged"


@pytest.mark.postgres_smoke
def test_a_repeated_event_id_answers_the_unchanged_mission(api: Api) -> None:
    mission = discharge_mission(api)
    first = report(api, mission["id"])
    head = api.head()
    again = report(api, mission["id"], who="operator")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["Ledger-Position"] == first.headers["Ledger-Position"]
    assert api.head() == head


def test_an_entry_digest_selects_one_of_the_entries_naming_the_event(api: Api) -> None:
    mission = discharge_mission(api)
    digest = digest_of(api.services.ledger.issuer, 2)
    body = report(api, mission["id"], event_type=CLOSED, entry_digest=digest).json()
    assert [e["resource"] for e in body["effective_authorization_details"]] == [
        discharge_authority()[0]["resource"],
        JOURNAL,
    ]


def test_an_event_type_no_entry_names_is_409_and_writes_nothing(api: Api) -> None:
    mission = discharge_mission(api)
    head = api.head()
    response = report(api, mission["id"], event_type="https://events.example.com/unrelated")
    assert_problem(response, 409, "no_matching_condition")
    assert api.head() == head


def test_a_terminal_mission_is_409_conflict(api: Api) -> None:
    mission = discharge_mission(api)
    assert api.lifecycle(mission["id"], "revoke").status_code == 200
    head = api.head()
    assert_problem(report(api, mission["id"]), 409, "conflict")
    assert api.head() == head


@pytest.mark.parametrize(
    ("member", "value"),
    [("event_type", ""), ("event_id", 7), ("occurred_at", "yesterday"), ("entry_digest", "md5:x")],
)
def test_a_malformed_report_is_400_naming_the_member(api: Api, member: str, value: Any) -> None:
    mission = discharge_mission(api)
    head = api.head()
    response = report(api, mission["id"], **{member: value})
    assert_problem(response, 400, "invalid_request")
    assert f"/{member}" in pointers(response)
    assert api.head() == head


def test_an_entry_without_terminal_when_is_never_discharged(api: Api) -> None:
    mission = api.mission(
        authorization_details=[
            {"type": "mission_resource_access", "resource": ERP, "actions": ["invoices.read"]}
        ]
    )
    assert_problem(report(api, mission["id"]), 409, "no_matching_condition")
