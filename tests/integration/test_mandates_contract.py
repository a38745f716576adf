"""Execution Mandates: issuance, delegation by narrowing only, cascades (both backends)."""

from __future__ import annotations

import copy
import threading
from datetime import timedelta
from typing import Any

import pytest

from api.replay import mandate_resource
from ledger.application import Ledger
from ledger.domain.delegation import ActorRef
from ledger.domain.errors import AuthorityExceeded, Conflict, InvalidRequest, LedgerError
from ledger.domain.states import Operation
from tests.builders import ADMIN, ERP, OPERATOR
from tests.conftest import MutableClock
from tests.mandate_builders import (
    HOLDER,
    delegable_authority,
    delegate,
    issue,
    jkt,
    mission_with,
)


def _entry(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": ERP,
        "resource_match": "prefix",
        "actions": ["invoices.read"],
        "constraints": {"max_amount": {"amount": "100.00", "currency": "USD"}},
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def _active(ledger: Ledger, mandate_id: str) -> bool:
    mandate = ledger.get_mandate(mandate_id)
    return ledger.mandate_validity(mandate, ledger.clock.now()).active


# ---------------------------------------------------------------------- issuance


def test_default_grant_is_the_missions_effective_authority(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    mandate = issue(ledger, mission)
    assert mandate.authorization_details == mission.effective_authority()
    assert _active(ledger, mandate.id)


def test_mandate_carries_the_mission_binding_unchanged(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    mandate = issue(ledger, mission)
    assert mandate.mission_id == mission.id
    assert mandate.mission_authority_hash == mission.authority_hash
    assert mandate.subject == mission.subject


def test_default_ttl_is_fifteen_minutes(ledger: Ledger, clock: MutableClock) -> None:
    mission = mission_with(ledger, delegable_authority())
    mandate = issue(ledger, mission)
    assert mandate.expires_at == clock.now().replace(microsecond=0) + timedelta(seconds=900)


def test_expiry_is_clamped_to_the_missions(ledger: Ledger, clock: MutableClock) -> None:
    mission = mission_with(ledger, delegable_authority(), days=1)
    clock.advance(hours=23, minutes=59)
    mandate = issue(ledger, mission, ttl=3600)
    assert mandate.expires_at <= mission.expires_at


def test_ttl_over_a_day_is_refused(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    with pytest.raises(InvalidRequest):
        issue(ledger, mission, ttl=86_401)


def test_mandate_for_another_client_is_refused(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    with pytest.raises(InvalidRequest):
        issue(ledger, mission, holder=ActorRef(client_id="agent-2", instance_id="x"))


@pytest.mark.parametrize(
    ("why", "details"),
    [
        ("extra resource", [_entry(resource="https://other.example.com")]),
        ("extra action", [_entry(actions=["invoices.delete"])]),
        ("wider family", [_entry(actions=["invoices.*"])]),
        ("removed constraint", [_entry(constraints=None)]),
        (
            "looser constraint",
            [_entry(constraints={"max_amount": {"amount": "900", "currency": "USD"}})],
        ),
        (
            "new delegation",
            [
                _entry(
                    resource="https://crm.example.com",
                    resource_match=None,
                    actions=["accounts.read"],
                    constraints=None,
                    delegation={"max_depth": 1},
                )
            ],
        ),
    ],
)
def test_amplified_issuance_is_refused_and_writes_nothing(
    ledger: Ledger, why: str, details: list[dict[str, Any]]
) -> None:
    mission = mission_with(ledger, delegable_authority())
    head = ledger.head_position()
    with pytest.raises(AuthorityExceeded):
        issue(ledger, mission, details=details)
    assert ledger.head_position() == head, why


def test_wider_resource_match_is_refused(ledger: Ledger) -> None:
    exact = [
        {
            "type": "mission_resource_access",
            "resource": ERP,
            "actions": ["invoices.read"],
        }
    ]
    mission = mission_with(ledger, exact)
    with pytest.raises(AuthorityExceeded):
        issue(ledger, mission, details=[{**exact[0], "resource_match": "prefix"}])


@pytest.mark.parametrize("state", ["suspended", "revoked", "completed"])
def test_issuing_under_a_non_active_mission_is_refused(ledger: Ledger, state: str) -> None:
    mission = mission_with(ledger, delegable_authority())
    operation = {"suspended": Operation.SUSPEND, "revoked": Operation.REVOKE}.get(
        state, Operation.COMPLETE
    )
    ledger.change_lifecycle(actor=OPERATOR, mission_id=mission.id, operation=operation, reason="t")
    head = ledger.head_position()
    with pytest.raises(Conflict):
        issue(ledger, mission)
    assert ledger.head_position() == head


def test_max_derivations_caps_issuance(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority(), controls={"max_derivations": 2})
    issue(ledger, mission)
    issue(ledger, mission)
    with pytest.raises(Conflict):
        issue(ledger, mission)


# ---------------------------------------------------------------------- delegation


def test_delegation_narrows_and_records_the_act_chain(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[_entry()])
    assert child.parent_mandate_id == root.id
    assert child.depth == 1
    assert child.act["sub"] == "sub-agent"
    assert child.act["act"] == root.act
    assert child.parent_hash is not None
    assert _active(ledger, child.id)


def test_child_may_equal_its_parent(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission, details=[delegable_authority()[0]])
    child = delegate(ledger, root, details=[delegable_authority()[0]])
    assert child.authorization_details == root.authorization_details


def test_child_expiry_never_exceeds_the_parents(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission, ttl=600)
    child = delegate(ledger, root, ttl=86_400)
    assert child.expires_at <= root.expires_at


@pytest.mark.parametrize(
    ("why", "details"),
    [
        ("extra action", [_entry(actions=["invoices.delete"])]),
        (
            "not delegable entry",
            [
                _entry(
                    resource="https://crm.example.com",
                    resource_match=None,
                    actions=["accounts.read"],
                    constraints=None,
                )
            ],
        ),
        (
            "looser constraint",
            [_entry(constraints={"max_amount": {"amount": "501", "currency": "USD"}})],
        ),
        ("deeper policy", [_entry(delegation={"max_depth": 5})]),
    ],
)
def test_amplified_delegation_is_refused_and_writes_nothing(
    ledger: Ledger, why: str, details: list[dict[str, Any]]
) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    head = ledger.head_position()
    with pytest.raises(AuthorityExceeded):
        delegate(ledger, root, details=details)
    assert ledger.head_position() == head, why


def test_depth_beyond_max_depth_is_refused(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority(max_depth=1))
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[_entry(delegation={"max_depth": 1})])
    head = ledger.head_position()
    with pytest.raises(AuthorityExceeded, match="max_depth"):
        delegate(ledger, child, client_id="sub-sub", details=[_entry()])
    assert ledger.head_position() == head


def test_delegate_outside_allowed_delegates_is_refused(ledger: Ledger) -> None:
    mission = mission_with(
        ledger, delegable_authority(allowed_delegates=[{"sub_profile": "ai_agent"}])
    )
    root = issue(ledger, mission)
    with pytest.raises(AuthorityExceeded, match="allowed_delegates"):
        delegate(ledger, root, sub_profile="human_assistant", details=[_entry()])
    assert delegate(ledger, root, sub_profile="ai_agent", details=[_entry()]).depth == 1


def test_delegate_must_use_a_key_of_its_own(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    with pytest.raises(AuthorityExceeded, match="key of its own"):
        delegate(ledger, root, key=root.cnf["jkt"], details=[_entry()])


def test_inactive_parent_cannot_delegate(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    with pytest.raises(Conflict):
        delegate(ledger, root)


# ---------------------------------------------------------------------- narrowing


def test_narrowing_is_removal_only(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    with pytest.raises(AuthorityExceeded):
        ledger.narrow_mandate(
            actor=OPERATOR,
            mandate_id=root.id,
            authorization_details=[_entry(actions=["invoices.delete"])],
            reason="t",
        )
    narrowed = ledger.narrow_mandate(
        actor=OPERATOR, mandate_id=root.id, authorization_details=[_entry()], reason="t"
    ).value
    assert narrowed.token_version == 2
    assert narrowed.authorization_details == [_entry()]


def test_narrowing_a_parent_narrows_or_ends_its_children(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    reads = delegate(ledger, root, details=[_entry()])
    writes = delegate(ledger, root, details=[_entry(actions=["invoices.write"])])
    ledger.narrow_mandate(
        actor=OPERATOR,
        mandate_id=root.id,
        authorization_details=[delegable_authority()[0] | {"actions": ["invoices.read"]}],
        reason="t",
    )
    assert _active(ledger, reads.id)
    assert ledger.get_mandate(writes.id).state == "cascaded"


# ---------------------------------------------------------------------- cascades


def test_revoking_a_root_ends_every_descendant(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority(max_depth=3))
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[_entry(delegation={"max_depth": 3})])
    grandchild = delegate(ledger, child, client_id="sub-sub", details=[_entry()])
    sibling = issue(ledger, mission)
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="compromised")
    assert ledger.get_mandate(root.id).state == "revoked"
    assert ledger.get_mandate(child.id).state == "cascaded"
    assert ledger.get_mandate(grandchild.id).state == "cascaded"
    assert not any(_active(ledger, m.id) for m in (root, child, grandchild))
    assert _active(ledger, sibling.id)


def test_revoking_an_inactive_mandate_writes_nothing(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    again = ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    assert again.position is None


def test_instance_kill_switch_ends_its_mandates_and_nothing_else(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    doomed = issue(ledger, mission)
    doomed_child = delegate(ledger, doomed, details=[_entry()])
    other = issue(ledger, mission, holder=ActorRef(client_id="agent-1", instance_id="inst-2"))
    ledger.revoke_instance(actor=OPERATOR, client_id="agent-1", instance_id="inst-1", reason="x")
    assert ledger.get_mandate(doomed.id).state == "revoked"
    assert ledger.get_mandate(doomed_child.id).state == "cascaded"
    assert _active(ledger, other.id)
    with pytest.raises(Conflict):
        issue(ledger, mission)  # HOLDER is inst-1


@pytest.mark.parametrize("operation", [Operation.REVOKE, Operation.COMPLETE])
def test_mission_end_cascades_to_every_mandate(ledger: Ledger, operation: Operation) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[_entry()])
    ledger.change_lifecycle(actor=OPERATOR, mission_id=mission.id, operation=operation, reason="t")
    assert ledger.get_mandate(root.id).state == "cascaded"
    assert ledger.get_mandate(child.id).state == "cascaded"


def test_mission_expiry_cascades_to_every_mandate(ledger: Ledger, clock: MutableClock) -> None:
    mission = mission_with(ledger, delegable_authority(), days=1)
    root = issue(ledger, mission)
    clock.advance(days=1, seconds=1)
    assert not _active(ledger, root.id)
    ledger.record_due_transitions(mission.id)
    assert ledger.get_mandate(root.id).state == "cascaded"


def test_suspension_holds_mandates_and_resume_restores_them(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    validity = ledger.mandate_validity(ledger.get_mandate(root.id), ledger.clock.now())
    assert not validity.active
    assert validity.reason == "mission_suspended"
    ledger.change_lifecycle(
        actor=ADMIN, mission_id=mission.id, operation=Operation.RESUME, reason="t"
    )
    assert _active(ledger, root.id)
    assert ledger.get_mandate(root.id).state == "active"


def test_containment_narrows_the_mandates_it_touches(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    crm_only = issue(
        ledger,
        mission,
        details=[delegable_authority()[1]],
        holder=ActorRef(client_id="agent-1", instance_id="inst-2"),
    )
    ledger.contain(
        actor=OPERATOR,
        mission_id=mission.id,
        contained=[{"resource": ERP, "actions": ["invoices.write"]}],
        reason="t",
    )
    narrowed = ledger.get_mandate(root.id)
    assert narrowed.token_version == 2
    actions = [a for e in narrowed.authorization_details for a in e["actions"]]
    assert "invoices.write" not in actions
    assert ledger.get_mandate(crm_only.id).token_version == 1


def test_mandate_expiry_is_recorded_by_the_clock(ledger: Ledger, clock: MutableClock) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission, ttl=60)
    clock.advance(seconds=61)
    assert not _active(ledger, root.id)
    ledger.record_due_transitions(root.id)
    assert ledger.get_mandate(root.id).state == "expired"


def _revoke(ledger: Ledger, mission_id: str, failures: list[BaseException]) -> None:
    """Revoke in a worker thread, keeping any failure for the test to assert on."""
    try:
        ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission_id, operation=Operation.REVOKE, reason="race"
        )
    except BaseException as error:  # reported by the test's assertion
        failures.append(error)


def test_no_mandate_survives_a_race_between_issuance_and_mission_revoke(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    barrier = threading.Barrier(3)
    issued: list[str] = []

    def issuer(instance: str) -> None:
        barrier.wait()
        for _ in range(5):
            try:
                issued.append(
                    ledger.issue_mandate(
                        actor=OPERATOR,
                        mission_id=mission.id,
                        holder=ActorRef(client_id="agent-1", instance_id=instance),
                        jkt=jkt(),
                    ).value.id
                )
            except LedgerError:
                return

    failures: list[BaseException] = []

    def revoker() -> None:
        barrier.wait()
        _revoke(ledger, mission.id, failures)

    threads = [
        threading.Thread(target=issuer, args=("a",)),
        threading.Thread(target=issuer, args=("b",)),
        threading.Thread(target=revoker),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    tree = ledger.get_tree(mission.id)
    ids = [] if tree is None else tree.mandate_ids
    assert sorted(ids) == sorted(issued)
    assert all(ledger.get_mandate(i).state == "cascaded" for i in ids)


def test_a_revoke_is_not_starved_by_a_stream_of_issuances(ledger: Ledger) -> None:
    # Issuers append to the Mission's tree as fast as they can until the Mission is no
    # longer active; the revoke, which must rewrite the whole tree, still commits.
    mission = mission_with(ledger, delegable_authority())
    revoked = threading.Event()
    contended = threading.Semaphore(0)
    failures: list[BaseException] = []

    def issuer(instance: str) -> None:
        for _ in range(500):
            try:
                ledger.issue_mandate(
                    actor=OPERATOR,
                    mission_id=mission.id,
                    holder=ActorRef(client_id="agent-1", instance_id=instance),
                    jkt=jkt(),
                )
            except LedgerError:
                return
            contended.release()
            if revoked.is_set():
                return

    def revoker() -> None:
        for _ in range(6):  # the issuers are in full flow before the revoke starts
            if not contended.acquire(timeout=30):
                failures.append(AssertionError("the issuers stopped before the revoke"))
                break
        _revoke(ledger, mission.id, failures)
        revoked.set()

    threads = [threading.Thread(target=issuer, args=(name,)) for name in "abc"]
    threads.append(threading.Thread(target=revoker))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert ledger.get_mission(mission.id).state == "revoked"
    tree = ledger.get_tree(mission.id)
    assert tree is not None
    assert {ledger.get_mandate(i).state for i in tree.mandate_ids} == {"cascaded"}


def test_holder_reference_is_recorded(ledger: Ledger) -> None:
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    assert root.holder == HOLDER.to_json()


def test_a_mandates_validity_reads_its_holders_instance_without_copying_it(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent instance holds every Mandate ever issued to it: copying it on every read
    made introspection cost milliseconds per thousand Mandates held."""
    mission = mission_with(ledger, delegable_authority())
    mandate = issue(ledger, mission)
    now = ledger.clock.now()
    ledger.mandate_validity(mandate, now)  # the repository holds the instance now
    copied: list[str] = []

    def counted(value: Any) -> Any:
        copied.append(type(value).__name__)
        return copy.deepcopy(value)

    monkeypatch.setattr("eventsourcing.application.deepcopy", counted)
    assert ledger.mandate_validity(mandate, now).active
    assert "AgentInstance" not in copied
    assert copied  # the others are still copied (the Mission): the spy saw the reads


def test_a_mandates_resource_names_its_children_without_copying_its_missions_tree(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Mission's tree holds every Mandate of the Mission: copying it on every read of one
    Mandate cost milliseconds per thousand Mandates."""
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[_entry()])
    issue(ledger, mission, holder=ActorRef(client_id="agent-1", instance_id="inst-2"))
    now = ledger.clock.now()
    mandate_resource(ledger, root, now)  # the repository holds the tree now
    copied: list[str] = []

    def counted(value: Any) -> Any:
        copied.append(type(value).__name__)
        return copy.deepcopy(value)

    monkeypatch.setattr("eventsourcing.application.deepcopy", counted)
    assert mandate_resource(ledger, root, now)["children"] == [child.id]
    assert mandate_resource(ledger, child, now)["children"] == []
    assert "MandateTree" not in copied
    assert copied  # the others are still copied (the Mission): the spy saw the reads
