"""The Mission lifecycle contract, written once and run on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from ledger.application import IdempotencyRequest, Ledger
from ledger.domain.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    StaleVersion,
)
from ledger.domain.states import OnExpiry, Operation
from tests.builders import (
    ADMIN,
    AGENT,
    APPROVER,
    OPERATOR,
    SUBJECT,
    active_mission,
    authority,
    intent,
    mission_in_state,
)
from tests.conftest import MutableClock

STATES = ["active", "suspended", "revoked", "expired", "completed", "superseded"]

# (state, operation) -> resulting state, "same" (idempotent, no event) or "conflict"
TABLE = {
    ("active", "revoke"): "revoked",
    ("active", "suspend"): "suspended",
    ("active", "resume"): "conflict",
    ("active", "complete"): "completed",
    ("suspended", "revoke"): "revoked",
    ("suspended", "suspend"): "same",
    ("suspended", "resume"): "active",
    ("suspended", "complete"): "completed",
    ("revoked", "revoke"): "same",
    ("revoked", "suspend"): "conflict",
    ("revoked", "resume"): "conflict",
    ("revoked", "complete"): "conflict",
    ("expired", "revoke"): "conflict",
    ("expired", "suspend"): "conflict",
    ("expired", "resume"): "conflict",
    ("expired", "complete"): "conflict",
    ("completed", "revoke"): "conflict",
    ("completed", "suspend"): "conflict",
    ("completed", "resume"): "conflict",
    ("completed", "complete"): "same",
    ("superseded", "revoke"): "conflict",
    ("superseded", "suspend"): "conflict",
    ("superseded", "resume"): "conflict",
    ("superseded", "complete"): "conflict",
}


@pytest.mark.parametrize(("state", "operation"), sorted(TABLE))
def test_legal_operation_table(ledger: Ledger, state: str, operation: str) -> None:
    mission = mission_in_state(ledger, state)
    assert mission.state == state
    head = ledger.head_position()
    expected = TABLE[(state, operation)]
    if expected == "conflict":
        with pytest.raises(Conflict):
            ledger.change_lifecycle(
                actor=ADMIN, mission_id=mission.id, operation=Operation(operation), reason="t"
            )
        assert ledger.head_position() == head
        assert ledger.get_mission(mission.id).version == mission.version
        return
    written = ledger.change_lifecycle(
        actor=ADMIN, mission_id=mission.id, operation=Operation(operation), reason="t"
    )
    if expected == "same":
        assert written.position is None
        assert ledger.head_position() == head
        assert written.value.version == mission.version
        assert written.value.state == state
    else:
        assert written.value.state == expected
        assert written.value.version == mission.version + 1
        assert written.position is not None
        assert written.position > head


def test_version_increases_by_one_per_change(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    versions = [mission.version]
    versions.extend(
        ledger.change_lifecycle(
            actor=ADMIN, mission_id=mission.id, operation=operation, reason="t"
        ).value.version
        for operation in (Operation.SUSPEND, Operation.RESUME, Operation.SUSPEND, Operation.REVOKE)
    )
    assert versions == [1, 2, 3, 4, 5]


def test_containment_bumps_version_without_changing_state(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    written = ledger.contain(
        actor=OPERATOR,
        mission_id=mission.id,
        contained=[{"resource": "https://erp.example.com", "actions": ["journal-entries.write"]}],
        reason="suspicious writes",
    )
    assert written.value.state == "active"
    assert written.value.version == 2
    assert written.value.containment_version == 1
    actions = [a for e in written.value.effective_authority() for a in e["actions"]]
    assert actions == ["invoices.read"]


def test_containment_of_unrelated_capability_is_refused(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    head = ledger.head_position()
    with pytest.raises(InvalidRequest):
        ledger.contain(
            actor=OPERATOR,
            mission_id=mission.id,
            contained=[{"resource": "https://other.example.com"}],
            reason="x",
        )
    assert ledger.head_position() == head


def test_expected_version_mismatch_is_stale_version(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    head = ledger.head_position()
    with pytest.raises(StaleVersion):
        ledger.change_lifecycle(
            actor=OPERATOR,
            mission_id=mission.id,
            operation=Operation.SUSPEND,
            reason="t",
            expected_version=7,
        )
    assert ledger.head_position() == head


def test_matching_expected_version_applies(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    written = ledger.change_lifecycle(
        actor=OPERATOR,
        mission_id=mission.id,
        operation=Operation.SUSPEND,
        reason="t",
        expected_version=1,
    )
    assert written.value.version == 2


def test_concurrent_commands_with_same_expected_version_one_wins(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(operation: Operation) -> None:
        barrier.wait()
        try:
            ledger.change_lifecycle(
                actor=OPERATOR,
                mission_id=mission.id,
                operation=operation,
                reason="race",
                expected_version=1,
            )
            outcomes.append("ok")
        except StaleVersion:
            outcomes.append("stale")

    threads = [
        threading.Thread(target=attempt, args=(op,)) for op in (Operation.SUSPEND, Operation.REVOKE)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok", "stale"]
    assert [e.event.originator_version for e in ledger.history(mission.id)] == [1, 2]


def test_nonce_replay_returns_success_without_a_new_event(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    first = ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t", nonce="n1"
    )
    ledger.change_lifecycle(
        actor=ADMIN, mission_id=mission.id, operation=Operation.RESUME, reason="back"
    )
    replay = ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t", nonce="n1"
    )
    assert first.value.version == 2
    assert replay.position is None
    assert replay.value.version == 3  # the resume stands; the replay changed nothing


def test_nonce_reused_for_a_different_request_is_a_conflict(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t", nonce="n1"
    )
    with pytest.raises(Conflict):
        ledger.change_lifecycle(
            actor=OPERATOR,
            mission_id=mission.id,
            operation=Operation.REVOKE,
            reason="t",
            nonce="n1",
        )


def _idem(key: str, digest: str) -> IdempotencyRequest:
    return IdempotencyRequest(
        scope="api_key::operator-1", key=key, request_hash=digest, status_code=200
    )


def test_idempotency_key_with_same_request_replays_the_original(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    first = ledger.change_lifecycle(
        actor=OPERATOR,
        mission_id=mission.id,
        operation=Operation.SUSPEND,
        reason="t",
        idempotency=_idem("k1", "d1"),
    )
    head = ledger.head_position()
    again = ledger.change_lifecycle(
        actor=OPERATOR,
        mission_id=mission.id,
        operation=Operation.SUSPEND,
        reason="t",
        idempotency=_idem("k1", "d1"),
    )
    assert again.replayed
    assert again.position == first.position
    assert again.value.version == first.value.version
    assert ledger.head_position() == head


def test_idempotency_key_with_different_request_is_refused(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    ledger.change_lifecycle(
        actor=OPERATOR,
        mission_id=mission.id,
        operation=Operation.SUSPEND,
        reason="t",
        idempotency=_idem("k1", "d1"),
    )
    head = ledger.head_position()
    with pytest.raises(IdempotencyConflict):
        ledger.change_lifecycle(
            actor=OPERATOR,
            mission_id=mission.id,
            operation=Operation.REVOKE,
            reason="t",
            idempotency=_idem("k1", "d2"),
        )
    assert ledger.head_position() == head


def test_concurrent_requests_with_one_idempotency_key_write_once(ledger: Ledger) -> None:
    missions = [active_mission(ledger) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[object] = []

    def attempt(mission_id: str) -> None:
        barrier.wait()
        try:
            results.append(
                ledger.change_lifecycle(
                    actor=OPERATOR,
                    mission_id=mission_id,
                    operation=Operation.SUSPEND,
                    reason="t",
                    idempotency=_idem("shared", "same-digest"),
                )
            )
        except Exception as error:
            results.append(error)

    threads = [threading.Thread(target=attempt, args=(m.id,)) for m in missions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not isinstance(r, Exception) for r in results), results
    states = sorted(ledger.get_mission(m.id).state for m in missions)
    assert states == ["active", "suspended"]
    written = {r.value.id for r in results}  # type: ignore[attr-defined]
    assert len(written) == 1


def test_approval_event_id_replay_returns_the_same_mission(ledger: Ledger) -> None:
    now = ledger.clock.now()
    proposal = ledger.submit_proposal(
        actor=AGENT,
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        intent=intent(now),
        authorization_details=authority(),
    ).value
    first = ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id, approval_event_id="e1")
    head = ledger.head_position()
    again = ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id, approval_event_id="e1")
    assert again.value.id == first.value.id
    assert ledger.head_position() == head
    with pytest.raises(Conflict):
        ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id, approval_event_id="e2")


def test_as_of_reconstructs_each_past_state(ledger: Ledger, clock: MutableClock) -> None:
    mission = active_mission(ledger)
    t_active = clock.now()
    clock.advance(minutes=5)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    t_suspended = clock.now()
    clock.advance(minutes=5)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    )
    assert ledger.get_mission(mission.id, as_of=t_active).state == "active"
    assert ledger.get_mission(mission.id, as_of=t_suspended).state == "suspended"
    assert ledger.get_mission(mission.id, as_of=clock.now()).state == "revoked"


def test_as_of_before_approval_is_not_found(ledger: Ledger, clock: MutableClock) -> None:
    before = clock.now()
    clock.advance(seconds=1)
    mission = active_mission(ledger)
    with pytest.raises(NotFound):
        ledger.get_mission(mission.id, as_of=before - (clock.now() - before))


def test_expiry_is_recorded_once_when_due(ledger: Ledger, clock: MutableClock) -> None:
    mission = active_mission(ledger, days=1)
    assert ledger.record_due_transitions(mission.id) is None
    clock.advance(days=1, seconds=1)
    assert ledger.record_due_transitions(mission.id) is not None
    assert ledger.record_due_transitions(mission.id) is None
    types = [type(e.event).__name__ for e in ledger.history(mission.id)]
    assert types == ["Approved", "Expired"]


def test_concurrent_clocks_record_expiry_exactly_once(ledger: Ledger, clock: MutableClock) -> None:
    mission = active_mission(ledger, days=1)
    clock.advance(days=2)
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        ledger.record_due_transitions(mission.id)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    types = [type(e.event).__name__ for e in ledger.history(mission.id)]
    assert types == ["Approved", "Expired"]


@pytest.mark.parametrize(("on_expiry", "final"), [("resume", "active"), ("revoke", "revoked")])
def test_suspension_deadline_applies_on_expiry(
    ledger: Ledger,
    clock: MutableClock,
    on_expiry: str,
    final: str,
) -> None:
    mission = active_mission(ledger)
    ledger.change_lifecycle(
        actor=OPERATOR,
        mission_id=mission.id,
        operation=Operation.SUSPEND,
        reason="review",
        suspend_until=clock.now() + timedelta(hours=1),
        on_expiry=OnExpiry(on_expiry),
    )
    clock.advance(hours=1, seconds=1)
    ledger.record_due_transitions(mission.id)
    assert ledger.get_mission(mission.id).state == final


def test_pending_proposal_expires(ledger: Ledger, clock: MutableClock) -> None:
    proposal = ledger.submit_proposal(
        actor=AGENT,
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        intent=intent(clock.now()),
        authorization_details=authority(),
    ).value
    clock.advance(days=1, seconds=1)
    assert ledger.get_proposal(proposal.id).effective_status(clock.now()) == "expired"
    ledger.record_due_transitions(proposal.id)
    assert ledger.get_proposal(proposal.id).status == "expired"
