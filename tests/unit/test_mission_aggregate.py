"""Mission aggregate rules, without any store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.domain.authority import parse_containment
from ledger.domain.errors import Conflict, InvalidRequest, StaleVersion
from ledger.domain.missions import Mission, MissionRecord
from ledger.domain.states import OnExpiry, Operation
from tests.builders import ADMIN, APPROVER, OPERATOR, SUBJECT, authority, intent

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def new_mission(*, expires_in: timedelta = timedelta(days=30)) -> Mission:
    record = MissionRecord(
        issuer="https://mas.example.com",
        submission_id="prp_x",
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        approver=APPROVER.to_json(),
        intent=intent(NOW),
        proposed_authority=None,
        authority_set=authority(),
        intent_hash="sha-256:i",
        proposal_hash=None,
        authority_hash="sha-256:a",
        approval_event_id=None,
        policy_version="p1",
        approval_basis={"type": "direct"},
        authority_source={"type": "user_delegated"},
        expires_at=NOW + expires_in,
        predecessor=None,
    )
    return Mission.approve(mission_id="msn_x", record=record, actor=APPROVER, now=NOW)


def test_approval_creates_an_active_mission_at_version_one() -> None:
    mission = new_mission()
    assert mission.state == "active"
    assert mission.version == 1


def test_approval_with_past_expiry_is_refused() -> None:
    with pytest.raises(Conflict):
        new_mission(expires_in=timedelta(seconds=-1))


def test_unknown_state_value_is_never_active() -> None:
    mission = new_mission()
    mission.state = "paused"  # a value no code writes: must fail safe
    assert not mission.is_effectively_active(NOW)
    for operation in Operation:
        with pytest.raises(Conflict):
            mission.apply_operation(operation, actor=ADMIN, now=NOW, reason="x")


def test_expiry_is_effective_before_it_is_recorded() -> None:
    mission = new_mission(expires_in=timedelta(hours=1))
    later = NOW + timedelta(hours=1)
    assert mission.state == "active"
    assert mission.effective_state(later) == "expired"
    assert not mission.is_effectively_active(later)


def test_suspension_deadline_outcome_is_effective_before_it_is_recorded() -> None:
    mission = new_mission()
    mission.apply_operation(
        Operation.SUSPEND,
        actor=OPERATOR,
        now=NOW,
        reason="x",
        suspend_until=NOW + timedelta(minutes=5),
        on_expiry=OnExpiry.REVOKE,
    )
    assert mission.effective_state(NOW + timedelta(minutes=4)) == "suspended"
    assert mission.effective_state(NOW + timedelta(minutes=5)) == "revoked"


def test_clock_applies_due_transitions_in_time_order() -> None:
    mission = new_mission(expires_in=timedelta(hours=2))
    mission.apply_operation(
        Operation.SUSPEND,
        actor=OPERATOR,
        now=NOW,
        reason="x",
        suspend_until=NOW + timedelta(hours=1),
    )
    mission.advance_clock(NOW + timedelta(hours=3))
    kinds = [type(e).__name__ for e in mission.pending_events]
    assert kinds == ["Approved", "Suspended", "Resumed", "Expired"]
    assert mission.state == "expired"


def test_suspend_until_in_the_past_is_invalid() -> None:
    mission = new_mission()
    with pytest.raises(InvalidRequest):
        mission.apply_operation(
            Operation.SUSPEND, actor=OPERATOR, now=NOW, reason="x", suspend_until=NOW
        )


def test_on_expiry_without_suspend_until_is_invalid() -> None:
    mission = new_mission()
    with pytest.raises(InvalidRequest):
        mission.apply_operation(
            Operation.SUSPEND, actor=OPERATOR, now=NOW, reason="x", on_expiry=OnExpiry.REVOKE
        )


def test_suspend_until_with_another_operation_is_invalid() -> None:
    mission = new_mission()
    with pytest.raises(InvalidRequest):
        mission.apply_operation(
            Operation.REVOKE,
            actor=OPERATOR,
            now=NOW,
            reason="x",
            suspend_until=NOW + timedelta(hours=1),
        )


def test_stale_expected_version_is_refused() -> None:
    mission = new_mission()
    with pytest.raises(StaleVersion):
        mission.check_expected_version(2)


def test_containment_is_removal_only_and_bumps_the_version() -> None:
    mission = new_mission()
    changed = mission.contain(
        parse_containment([{"resource": "https://erp.example.com", "actions": ["invoices.read"]}]),
        actor=OPERATOR,
        now=NOW,
        reason="x",
    )
    assert changed
    assert mission.version == 2
    assert not mission.permits_capability("https://erp.example.com", "invoices.read")
    assert mission.permits_capability("https://erp.example.com", "journal-entries.write")


def test_repeating_a_containment_changes_nothing() -> None:
    mission = new_mission()
    items = parse_containment([{"resource": "https://erp.example.com"}])
    assert mission.contain(items, actor=OPERATOR, now=NOW, reason="x")
    assert not mission.contain(items, actor=OPERATOR, now=NOW, reason="x")
    assert mission.effective_authority() == []


def test_superseding_needs_an_active_mission() -> None:
    mission = new_mission()
    mission.apply_operation(Operation.SUSPEND, actor=OPERATOR, now=NOW, reason="x")
    with pytest.raises(Conflict):
        mission.supersede(successor="msn_y", actor=APPROVER, now=NOW)
