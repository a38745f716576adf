"""Replay (SPEC 7.4): a Mission and its Mandates as they stood at an instant, rebuilt from
the events recorded by then (both backends).

The story: a Mission is approved, narrowed (containment), a Mandate is issued under it, the
Mission is suspended, the Mandate is revoked, ten minutes apart. A replay at each step's
instant shows that step's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from api.replay import replay_mission
from ledger.application import Ledger
from ledger.domain.errors import NotFound
from ledger.domain.states import Operation
from tests.builders import ERP, OPERATOR
from tests.conftest import MutableClock
from tests.mandate_builders import delegable_authority, delegate, issue, mission_with

CRM = "https://crm.example.com"
STEPS = ["approved", "narrowed", "issued", "suspended", "revoked"]


@dataclass(frozen=True)
class Story:
    mission_id: str
    mandate_id: str
    at: dict[str, datetime]


@pytest.fixture
def story(ledger: Ledger, clock: MutableClock) -> Story:
    at: dict[str, datetime] = {}
    mission = mission_with(ledger, delegable_authority())
    at["approved"] = clock.now()
    clock.advance(minutes=10)
    ledger.contain(
        actor=OPERATOR, mission_id=mission.id, contained=[{"resource": CRM}], reason="incident"
    )
    at["narrowed"] = clock.now()
    clock.advance(minutes=10)
    mandate = issue(ledger, ledger.get_mission(mission.id), ttl=3600)
    at["issued"] = clock.now()
    clock.advance(minutes=10)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="pause"
    )
    at["suspended"] = clock.now()
    clock.advance(minutes=10)
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=mandate.id, reason="done")
    at["revoked"] = clock.now()
    clock.advance(minutes=10)
    return Story(mission_id=mission.id, mandate_id=mandate.id, at=at)


def _replay(ledger: Ledger, story: Story, step: str) -> dict[str, Any]:
    return replay_mission(ledger, story.mission_id, story.at[step])


def _resources(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["resource"] for entry in entries]


# step -> (Mission state, Mission version, resources of the Effective Authority Set)
MISSION_AT = {
    "approved": ("active", 1, [ERP, CRM]),
    "narrowed": ("active", 2, [ERP]),
    "issued": ("active", 2, [ERP]),
    "suspended": ("suspended", 3, [ERP]),
    "revoked": ("suspended", 3, [ERP]),
}


@pytest.mark.parametrize("step", STEPS)
def test_the_mission_replays_as_it_stood_at_each_step(
    ledger: Ledger, story: Story, step: str
) -> None:
    mission = _replay(ledger, story, step)["mission"]
    state, version, resources = MISSION_AT[step]
    assert (mission["state"], mission["version"]) == (state, version)
    assert _resources(mission["effective_authorization_details"]) == resources


# step -> [(state, recorded_state, inactive_reason)] of the Mission's Mandates
MANDATES_AT: dict[str, list[tuple[str, str, str | None]]] = {
    "approved": [],
    "narrowed": [],
    "issued": [("active", "active", None)],
    "suspended": [("suspended", "active", "mission_suspended")],
    "revoked": [("revoked", "revoked", "mandate_revoked")],
}


@pytest.mark.parametrize("step", STEPS)
def test_the_mandates_replay_as_they_stood_at_each_step(
    ledger: Ledger, story: Story, step: str
) -> None:
    mandates = _replay(ledger, story, step)["mandates"]
    assert [(m["state"], m["recorded_state"], m["inactive_reason"]) for m in mandates] == (
        MANDATES_AT[step]
    )
    assert all(m["mandate_id"] == story.mandate_id for m in mandates)


def test_a_replayed_mandate_carries_the_authority_it_was_issued_with(
    ledger: Ledger, story: Story
) -> None:
    (mandate,) = _replay(ledger, story, "issued")["mandates"]
    assert _resources(mandate["authorization_details"]) == [ERP]


# step -> the event types a replay at that step lists, in log order
EVENTS_AT = {
    "approved": ["Approved"],
    "narrowed": ["Approved", "CapabilityContained"],
    "issued": ["Approved", "CapabilityContained", "Issued"],
    "suspended": ["Approved", "CapabilityContained", "Issued", "Suspended"],
    "revoked": ["Approved", "CapabilityContained", "Issued", "Suspended", "Revoked"],
}


@pytest.mark.parametrize("step", STEPS)
def test_the_replay_lists_the_events_recorded_by_then_in_log_order(
    ledger: Ledger, story: Story, step: str
) -> None:
    events = _replay(ledger, story, step)["events"]
    assert [e["type"] for e in events] == EVENTS_AT[step]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)


def test_an_instant_between_two_steps_shows_the_earlier_step(ledger: Ledger, story: Story) -> None:
    between = story.at["issued"] + timedelta(minutes=5)
    assert replay_mission(ledger, story.mission_id, between) == _replay(ledger, story, "issued")


def test_before_its_approval_the_mission_did_not_exist(ledger: Ledger, story: Story) -> None:
    before = story.at["approved"] - timedelta(seconds=1)
    with pytest.raises(NotFound):
        replay_mission(ledger, story.mission_id, before)


def test_before_its_issuance_the_mandate_did_not_exist(ledger: Ledger, story: Story) -> None:
    with pytest.raises(NotFound):
        ledger.at(story.at["narrowed"]).get_mandate(story.mandate_id)


def test_the_ledger_at_an_instant_rebuilds_the_aggregate_at_that_version(
    ledger: Ledger, story: Story
) -> None:
    past = ledger.at(story.at["narrowed"]).get_mission(story.mission_id)
    assert past.version == 2
    assert past.__dict__ == ledger.repository.get(story.mission_id, version=2).__dict__


def test_a_version_recorded_by_a_clock_behind_its_predecessor_waits_for_it(
    ledger: Ledger, clock: MutableClock
) -> None:
    """Versions are taken in order: a later version stamped earlier (a writer's clock
    behind) is not shown before the version it follows, so every replayed state is one the
    aggregate really had."""
    mission = mission_with(ledger, delegable_authority())
    clock.advance(minutes=10)
    ledger.contain(actor=OPERATOR, mission_id=mission.id, contained=[{"resource": CRM}], reason="r")
    clock.advance(minutes=-5)  # the next writer's clock is behind
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="r"
    )
    assert ledger.get_mission(mission.id, as_of=clock.now()).version == 1


def test_a_delegated_mandate_replays_with_its_parent_as_it_stood(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = mission_with(ledger, delegable_authority())
    parent = issue(ledger, mission, ttl=3600)
    child = delegate(ledger, parent, ttl=3600)
    before_revocation = clock.now()
    clock.advance(minutes=1)
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=parent.id, reason="r")
    then = {
        m["mandate_id"]: m
        for m in replay_mission(ledger, mission.id, before_revocation)["mandates"]
    }
    now = {m["mandate_id"]: m for m in replay_mission(ledger, mission.id, clock.now())["mandates"]}
    assert then[child.id]["state"] == "active"
    assert then[parent.id]["children"] == [child.id]
    assert now[child.id]["state"] == "cascaded"
