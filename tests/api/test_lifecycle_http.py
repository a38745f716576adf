"""The Mission lifecycle through HTTP (SPEC 6.4 and the legal-operation table): every
(state, operation) pair reachable over HTTP. A legal change answers 200 with the new
Mission and one more event; a same-state request answers 200 with the unchanged Mission
and no event; anything else on a terminal Mission, and ``resume`` on a Mission that is not
suspended, is 409 ``conflict`` and writes nothing. ``resume`` is the elevated operation
(admin); ``expected_version`` pins the version (409 ``stale_version``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from ledger.domain.instants import format_instant, parse_instant
from tests.api.conftest import Api, assert_problem, entry, pointers

STATES = ["active", "suspended", "revoked", "completed", "expired", "superseded"]
OPERATIONS = ["revoke", "suspend", "resume", "complete"]

# (state, operation) -> resulting state, "same" (200, no event) or "conflict" (409)
TABLE: dict[tuple[str, str], str] = {
    ("active", "revoke"): "revoked",
    ("active", "suspend"): "suspended",
    ("active", "resume"): "conflict",
    ("active", "complete"): "completed",
    ("suspended", "revoke"): "revoked",
    ("suspended", "suspend"): "same",
    ("suspended", "resume"): "active",
    ("suspended", "complete"): "completed",
    ("revoked", "revoke"): "same",
    ("completed", "complete"): "same",
}


def expected(state: str, operation: str) -> str:
    return TABLE.get((state, operation), "conflict")


def mission_in(api: Api, state: str) -> dict[str, Any]:
    """A Mission driven into ``state`` through HTTP (and the clock, for ``expired``)."""
    mission = api.mission(days=1 if state == "expired" else 30)
    mission_id = mission["id"]
    if state in {"suspended", "revoked", "completed"}:
        operation = {"suspended": "suspend", "revoked": "revoke", "completed": "complete"}[state]
        assert api.lifecycle(mission_id, operation).status_code == 200
    elif state == "expired":
        api.clock.set(parse_instant(mission["expires_at"]) + timedelta(seconds=1))
        # Record the expiry now (the scheduler would, a moment later), so that nothing
        # but the request under test can move the ledger.
        api.services.ledger.record_due_transitions(mission_id)
        assert api.services.follower.wait(api.head(), 2.0)
    elif state == "superseded":
        successor = api.client.post(
            f"/v1/missions/{mission_id}/expansion",
            json={"intent": api.intent(), "authorization_details": [entry()]},
            headers=api.auth("agent"),
        )
        assert successor.status_code == 202, successor.text
        assert api.approve(successor.json()["submission_id"]).status_code == 201
    current = api.get_mission(mission_id)
    assert current["state"] == state
    return current


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("state", STATES)
def test_the_legal_operation_table_holds_over_http(api: Api, state: str, operation: str) -> None:
    before = mission_in(api, state)
    head = api.head()
    who = "admin" if operation == "resume" else "operator"
    response = api.lifecycle(before["id"], operation, who=who)
    outcome = expected(state, operation)
    if outcome == "conflict":
        body = assert_problem(response, 409, "conflict")
        assert body["detail"]
        assert api.head() == head
        assert api.get_mission(before["id"]) == before
    elif outcome == "same":
        assert response.status_code == 200, response.text
        assert response.json() == before
        assert api.head() == head
        assert int(response.headers["Ledger-Position"]) <= head
    else:
        assert response.status_code == 200, response.text
        after = response.json()
        assert after["state"] == outcome
        assert after["version"] == before["version"] + 1
        assert api.head() > head
        assert int(response.headers["Ledger-Position"]) == api.head()
        assert api.get_mission(before["id"]) == after


def test_a_lifecycle_answer_is_the_mission_resource(api: Api) -> None:
    mission = api.mission()
    response = api.lifecycle(mission["id"], "suspend")
    assert response.json() == api.get_mission(mission["id"])


def test_a_lifecycle_change_records_its_reason(api: Api) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "revoke", reason="credential leak")
    assert api.events(mission["id"])[-1]["data"]["reason"] == "credential leak"


def test_a_suspension_deadline_is_recorded(api: Api) -> None:
    mission = api.mission()
    until = format_instant(api.clock.now() + timedelta(hours=2))
    response = api.lifecycle(mission["id"], "suspend", suspend_until=until, on_expiry="revoke")
    assert response.status_code == 200, response.text
    assert response.json()["suspend_until"] == until
    assert response.json()["on_expiry"] == "revoke"


def test_suspend_until_with_another_operation_is_400(api: Api) -> None:
    mission = api.mission()
    head = api.head()
    until = format_instant(api.clock.now() + timedelta(hours=2))
    response = api.lifecycle(mission["id"], "revoke", suspend_until=until)
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == ["/suspend_until"]
    assert api.head() == head


def test_resume_by_an_operator_is_403(api: Api) -> None:
    mission = mission_in(api, "suspended")
    head = api.head()
    assert_problem(api.lifecycle(mission["id"], "resume"), 403, "forbidden")
    assert api.head() == head
    assert api.get_mission(mission["id"])["state"] == "suspended"


@pytest.mark.postgres_smoke
def test_a_stale_expected_version_is_409_stale_version(api: Api) -> None:
    mission = api.mission()
    assert api.lifecycle(mission["id"], "suspend").status_code == 200
    head = api.head()
    response = api.lifecycle(mission["id"], "revoke", expected_version=1)
    body = assert_problem(response, 409, "stale_version")
    assert body["current_version"] == 2
    assert api.head() == head
    assert api.get_mission(mission["id"])["state"] == "suspended"


def test_an_expected_version_beyond_the_i_json_range_is_400_even_with_a_nonce(api: Api) -> None:
    """(It was a 500: the nonce's request digest could not canonicalise the number.)"""
    mission = api.mission()
    head = api.head()
    response = api.lifecycle(mission["id"], "suspend", nonce="n-1", expected_version=2**60)
    body = assert_problem(response, 400, "invalid_request")
    assert body["errors"][0]["pointer"] == "/expected_version"
    assert api.head() == head


def test_a_current_expected_version_is_accepted(api: Api) -> None:
    mission = api.mission()
    response = api.lifecycle(mission["id"], "suspend", expected_version=1)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2


def test_a_lifecycle_change_on_an_unknown_mission_is_404(api: Api) -> None:
    head = api.head()
    assert_problem(api.lifecycle("msn_unknown", "revoke"), 404, "not_found")
    assert api.head() == head


@pytest.mark.postgres_smoke
def test_a_replayed_nonce_changes_nothing(api: Api) -> None:
    mission = api.mission()
    first = api.lifecycle(mission["id"], "suspend", nonce="n-1")
    assert api.lifecycle(mission["id"], "resume", who="admin").status_code == 200
    head = api.head()
    again = api.lifecycle(mission["id"], "suspend", nonce="n-1")
    assert again.status_code == 200
    assert again.json()["state"] == "active"
    assert first.json()["state"] == "suspended"
    assert api.head() == head


@pytest.mark.postgres_smoke
def test_a_nonce_reused_for_another_request_is_409(api: Api) -> None:
    mission = api.mission()
    assert api.lifecycle(mission["id"], "suspend", nonce="n-1").status_code == 200
    head = api.head()
    response = api.lifecycle(mission["id"], "revoke", nonce="n-1")
    assert_problem(response, 409, "conflict")
    assert api.head() == head


@pytest.mark.postgres_smoke
def test_a_mission_past_its_expiry_is_terminal_before_the_expiry_is_recorded(api: Api) -> None:
    mission = api.mission(days=1)
    api.clock.set(parse_instant(mission["expires_at"]) + timedelta(seconds=1))
    assert api.get_mission(mission["id"])["state"] == "expired"
    assert_problem(api.lifecycle(mission["id"], "suspend"), 409, "conflict")
    assert api.get_mission(mission["id"])["state"] == "expired"


@pytest.mark.postgres_smoke
def test_a_suspension_deadline_with_on_expiry_revoke_ends_the_mission(api: Api) -> None:
    mission = api.mission()
    until = api.clock.now() + timedelta(hours=2)
    api.lifecycle(mission["id"], "suspend", suspend_until=format_instant(until), on_expiry="revoke")
    api.clock.set(until + timedelta(seconds=1))
    assert api.get_mission(mission["id"])["state"] == "revoked"
    response = api.lifecycle(mission["id"], "resume", who="admin")
    assert_problem(response, 409, "conflict")
    assert api.get_mission(mission["id"])["state"] == "revoked"


@pytest.mark.postgres_smoke
def test_a_suspension_deadline_resumes_the_mission_by_default(api: Api) -> None:
    mission = api.mission()
    until = api.clock.now() + timedelta(hours=2)
    api.lifecycle(mission["id"], "suspend", suspend_until=format_instant(until))
    api.clock.set(until + timedelta(seconds=1))
    assert api.get_mission(mission["id"])["state"] == "active"


@pytest.mark.postgres_smoke
def test_concurrent_changes_pinned_to_one_version_let_exactly_one_win(api: Api) -> None:
    mission = api.mission()
    operations = ["suspend", "revoke", "complete"] * 2

    def send(operation: str) -> Any:
        return api.lifecycle(mission["id"], operation, expected_version=1)

    with ThreadPoolExecutor(max_workers=len(operations)) as pool:
        responses = list(pool.map(send, operations))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (len(operations) - 1), [r.text for r in responses]
    assert all(r.json()["code"] == "stale_version" for r in responses if r.status_code == 409)
    assert api.get_mission(mission["id"])["version"] == 2
