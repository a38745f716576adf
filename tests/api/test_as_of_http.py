"""``as_of`` on the Mission and Mandate resources (SPEC 7.4 "Replay"): ``GET
/v1/missions/{id}?as_of=T`` and ``GET /v1/mandates/{id}?as_of=T`` answer the resource as it
stood at T, exactly the body the live read answered at T; an invalid or future T is 400,
a T before the resource existed is 404, and the roles are those of the live read.

The story is tests/api/as_of_story.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.domain.instants import format_instant
from tests.api.as_of_story import STEPS, Story, get, issue, mission_over_two_resources, tell_story
from tests.api.conftest import Api, assert_problem


@pytest.fixture
def story(api: Api) -> Story:
    return tell_story(api)


# ---------------------------------------------------------------------- the past, exactly


PAST_READS = [("mission", step) for step in STEPS] + [("mandate", step) for step in STEPS[2:]]


@pytest.mark.postgres_smoke
@pytest.mark.parametrize(("resource", "step"), PAST_READS)
def test_a_resource_as_of_an_instant_is_the_live_read_made_then(
    api: Api, story: Story, resource: str, step: str
) -> None:
    if resource == "mission":
        path, live = f"/v1/missions/{story.mission_id}", story.live_mission[step]
    else:
        path, live = f"/v1/mandates/{story.mandate_id}", story.live_mandate[step]
    past = get(api, path, as_of=story.at[step])
    assert past.status_code == 200, past.text
    assert past.json() == live


def test_the_story_steps_are_different_states(story: Story) -> None:
    """Guards the two tests above: the story's steps really are different states."""
    missions = [(m["state"], m["version"]) for m in story.live_mission.values()]
    mandates = [m["state"] for m in story.live_mandate.values()]
    assert missions == [
        ("active", 1),
        ("active", 2),
        ("active", 2),
        ("suspended", 3),
        ("suspended", 3),
    ]
    assert mandates == ["active", "suspended", "revoked"]


def test_as_of_accepts_an_rfc3339_offset(api: Api) -> None:
    mission = api.mission()
    api.clock.advance(hours=1)
    response = get(
        api, f"/v1/missions/{mission['id']}", as_of="2026-11-28T13:30:00+01:00"
    )  # 12:30Z, after the approval at 12:00Z
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1


# ---------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def scene(shared_api: Api) -> dict[str, str]:
    """One Mission and one Mandate in the module's app (its clock never moves: now is T0,
    when both were made)."""
    mission = mission_over_two_resources(shared_api)
    mandate = issue(shared_api, mission["id"])
    return {
        "mission": f"/v1/missions/{mission['id']}",
        "mandate": f"/v1/mandates/{mandate['mandate_id']}",
    }


BAD = ["yesterday", "2026-11-28", "2026-11-28T12:00:00", "", "2026-11-28T12:00:00+25:00"]


@pytest.mark.parametrize("resource", ["mission", "mandate"])
@pytest.mark.parametrize("as_of", BAD)
def test_an_invalid_as_of_is_400(
    shared_api: Api, scene: dict[str, str], resource: str, as_of: str
) -> None:
    body = assert_problem(get(shared_api, scene[resource], as_of=as_of), 400, "invalid_request")
    assert [e["pointer"] for e in body["errors"]] == ["/as_of"]


@pytest.mark.parametrize("resource", ["mission", "mandate"])
def test_an_as_of_in_the_future_is_400(
    shared_api: Api, scene: dict[str, str], resource: str
) -> None:
    later = format_instant(shared_api.clock.now() + timedelta(seconds=1))
    body = assert_problem(get(shared_api, scene[resource], as_of=later), 400, "invalid_request")
    assert "future" in body["errors"][0]["detail"]


@pytest.mark.parametrize("resource", ["mission", "mandate"])
def test_an_as_of_before_the_resource_existed_is_404(
    shared_api: Api, scene: dict[str, str], resource: str
) -> None:
    before = format_instant(shared_api.clock.now() - timedelta(seconds=1))
    assert_problem(get(shared_api, scene[resource], as_of=before), 404, "not_found")


@pytest.mark.parametrize("resource", ["mission", "mandate"])
def test_an_unknown_id_with_as_of_is_the_same_404_as_without(
    shared_api: Api, resource: str
) -> None:
    path = {"mission": "/v1/missions/msn_unknown", "mandate": "/v1/mandates/mdt_unknown"}
    now = format_instant(shared_api.clock.now())
    without = assert_problem(get(shared_api, path[resource]), 404, "not_found")
    with_as_of = assert_problem(get(shared_api, path[resource], as_of=now), 404, "not_found")
    assert with_as_of["detail"] == without["detail"]


# ---------------------------------------------------------------------- roles


@pytest.mark.parametrize("resource", ["mission", "mandate"])
@pytest.mark.parametrize("who", ["auditor", "operator", "agent", "agent2", "pep", "approver"])
def test_as_of_answers_each_role_as_the_live_read_does(
    shared_api: Api, scene: dict[str, str], resource: str, who: str
) -> None:
    now = format_instant(shared_api.clock.now())
    live = get(shared_api, scene[resource], who=who)
    past = get(shared_api, scene[resource], who=who, as_of=now)
    assert past.status_code == live.status_code
    if live.status_code == 200:
        assert past.json() == live.json()
    else:
        assert past.json()["code"] == live.json()["code"]


@pytest.mark.parametrize("resource", ["mission", "mandate"])
def test_as_of_without_a_credential_is_401(
    shared_api: Api, scene: dict[str, str], resource: str
) -> None:
    now = format_instant(shared_api.clock.now())
    response = shared_api.client.get(scene[resource], params={"as_of": now})
    assert_problem(response, 401, "unauthorized")
