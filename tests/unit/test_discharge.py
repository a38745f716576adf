"""Entry discharge (M1) on the Mission aggregate, without any store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ledger.domain.errors import Conflict, NoMatchingCondition
from ledger.domain.missions import Mission, MissionRecord
from ledger.domain.states import Operation
from tests.builders import AGENT, APPROVER, OPERATOR, SUBJECT, intent
from tests.discharge_builders import (
    CLOSED,
    INVOICES,
    JOURNAL,
    LEDGER,
    RECONCILED,
    digest_of,
    discharge_authority,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ISSUER = "https://mas.example.com"


def new_mission() -> Mission:
    record = MissionRecord(
        issuer=ISSUER,
        submission_id="prp_x",
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        approver=APPROVER.to_json(),
        intent=intent(NOW),
        proposed_authority=None,
        authority_set=discharge_authority(),
        intent_hash="sha-256:i",
        proposal_hash=None,
        authority_hash="sha-256:a",
        approval_event_id=None,
        policy_version="p1",
        approval_basis={"type": "direct"},
        authority_source={"type": "user_delegated"},
        expires_at=NOW + timedelta(days=30),
        predecessor=None,
    )
    return Mission.approve(mission_id="msn_x", record=record, actor=APPROVER, now=NOW)


def report(
    mission: Mission, event_type: str, event_id: str = "evt-1", entry_digest: str | None = None
) -> bool:
    return mission.discharge(
        event_type=event_type,
        entry_digest=entry_digest,
        event_id=event_id,
        occurred_at=NOW,
        actor=AGENT,
        now=NOW,
    )


def resources(mission: Mission) -> list[str]:
    return [entry["resource"] for entry in mission.effective_authority()]


def test_discharge_removes_exactly_the_entry_whose_condition_fired() -> None:
    mission = new_mission()
    assert report(mission, RECONCILED)
    assert resources(mission) == [JOURNAL, LEDGER]
    assert mission.authority_set == discharge_authority()  # the record itself is immutable


def test_discharge_bumps_the_version_and_keeps_the_state() -> None:
    mission = new_mission()
    report(mission, RECONCILED)
    assert mission.version == 2
    assert mission.state == "active"


def test_discharged_capability_is_outside_the_effective_authority() -> None:
    mission = new_mission()
    report(mission, RECONCILED)
    assert not mission.permits_capability(INVOICES + "/42", "invoices.read")
    assert mission.permits_capability(JOURNAL + "/7", "journal-entries.write")


def test_without_an_entry_digest_every_matching_entry_is_discharged() -> None:
    mission = new_mission()
    report(mission, CLOSED)
    assert resources(mission) == [INVOICES]
    assert mission.version == 3  # one EntryDischarged per entry


def test_an_entry_digest_selects_one_of_several_matching_entries() -> None:
    mission = new_mission()
    report(mission, CLOSED, entry_digest=digest_of(ISSUER, 2))
    assert resources(mission) == [INVOICES, JOURNAL]
    assert mission.discharged_entries()[0]["entry_digest"] == digest_of(ISSUER, 2)


def test_a_duplicate_event_id_is_a_no_op() -> None:
    mission = new_mission()
    report(mission, CLOSED, entry_digest=digest_of(ISSUER, 1))
    version = mission.version
    assert not report(mission, CLOSED, entry_digest=digest_of(ISSUER, 1))
    assert mission.version == version
    assert resources(mission) == [INVOICES, LEDGER]


def test_an_event_id_reused_for_another_event_is_a_conflict() -> None:
    mission = new_mission()
    report(mission, CLOSED)
    with pytest.raises(Conflict):
        report(mission, RECONCILED)


def test_an_event_type_no_entry_names_is_refused() -> None:
    mission = new_mission()
    with pytest.raises(NoMatchingCondition):
        report(mission, "https://events.example.com/unrelated")
    assert mission.version == 1


def test_an_entry_digest_naming_no_entry_is_refused() -> None:
    mission = new_mission()
    with pytest.raises(NoMatchingCondition):
        report(mission, CLOSED, entry_digest=digest_of("https://other.example.com", 1))


def test_an_entry_digest_whose_entry_lacks_the_condition_is_refused() -> None:
    mission = new_mission()
    with pytest.raises(NoMatchingCondition):
        report(mission, RECONCILED, entry_digest=digest_of(ISSUER, 1))


def test_an_already_discharged_entry_cannot_be_discharged_again() -> None:
    mission = new_mission()
    report(mission, RECONCILED, event_id="evt-1")
    with pytest.raises(NoMatchingCondition):
        report(mission, RECONCILED, event_id="evt-2")


def test_a_suspended_mission_can_be_discharged() -> None:
    mission = new_mission()
    mission.apply_operation(Operation.SUSPEND, actor=OPERATOR, now=NOW, reason="x")
    assert report(mission, RECONCILED)
    assert mission.state == "suspended"


def test_a_terminal_mission_refuses_a_discharge() -> None:
    mission = new_mission()
    mission.apply_operation(Operation.REVOKE, actor=OPERATOR, now=NOW, reason="x")
    with pytest.raises(Conflict):
        report(mission, RECONCILED)


def test_discharging_the_last_entry_leaves_the_mission_active_with_no_authority() -> None:
    mission = new_mission()
    report(mission, RECONCILED, event_id="evt-1")
    report(mission, CLOSED, event_id="evt-2")
    assert mission.state == "active"
    assert mission.effective_authority() == []
