"""Access requests on the store (both backends): one task per binding token, an approval's
uses spent exactly once and a task's expiry recorded once, across two Ledger applications
on one store (two replicas) under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger.application import AccessRequestInput, Ledger
from ledger.domain.access_binding import (
    access_request_endpoint,
    binding_context_members,
    binding_hash,
)
from ledger.domain.actors import Actor
from ledger.domain.callbacks import Callback
from ledger.domain.errors import ApprovalUnusable, Conflict, InvalidTaskState, NotRequestable
from ledger.domain.instants import format_instant
from ledger.domain.missions import Mission
from ledger.domain.states import Operation
from ledger.domain.subjects import PrincipalIdentity
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from tests.builders import active_mission
from tests.conftest import MutableClock

PEP = Actor(type="api_key", name="pep-1", role="pep")
APPROVER = Actor(type="api_key", name="approver-1", role="approver")


class RecordingSigner:
    """Stands in for the keyring: these tests are about the store, not signatures."""

    def __init__(self) -> None:
        self.signed: list[bytes] = []

    def sign_compact(
        self, header: dict[str, Any], payload: bytes, *, alg: str, now: datetime
    ) -> str:
        self.signed.append(payload)
        return f"h.{len(self.signed)}.s"


@pytest.fixture
def replicas(
    ledger: Ledger, store_settings: Settings, clock: MutableClock
) -> Iterator[tuple[Ledger, Ledger]]:
    other = open_ledger(store_settings, clock=clock)
    for app in (ledger, other):
        app.signer = RecordingSigner()
    yield ledger, other
    other.close()


def _input(ledger: Ledger, mission: Mission, jti: str) -> AccessRequestInput:
    subject = {"type": "agent", "id": mission.client_id}
    resource = {"type": "api", "id": "https://erp.example.com/invoices/7"}
    action = {"name": "journal-entries.write"}
    context = {"mandate": "mdt_x"}
    members = binding_context_members(context)
    now = ledger.clock.now()
    return AccessRequestInput(
        subject=subject,
        resource=resource,
        action=action,
        context=context,
        denial={"expires_at": format_instant(now + timedelta(minutes=10))},
        binding={
            "aud": access_request_endpoint(ledger.issuer),
            "jti": jti,
            "exp": int((now + timedelta(minutes=10)).timestamp()),
            "denial_expires_at": format_instant(now + timedelta(minutes=10)),
            "reason": "approval_required",
            "evaluation_id": "ev_1",
            "binding_hash": binding_hash(
                subject=subject,
                resource=resource,
                action=action,
                context=context,
                members=members,
                proof_jkt=None,
            ),
            "binding_context_members": members,
            "mission": {"ref": mission.id, "status": "active"},
        },
        proof_jkt=None,
        justification=None,
        requested_until=None,
    )


def submit_access_request(
    ledger: Ledger, mission: Mission, jti: str = "jti-1", callback: Callback | None = None
) -> str:
    """A pending task for a requestable denial (the binding token's claims as verified)."""
    written = ledger.submit_access_request(
        actor=PEP,
        requester=PrincipalIdentity(iss=ledger.issuer, sub="pep-1"),
        scope="api_key::pep-1",
        request=replace(_input(ledger, mission, jti), callback=callback),
    )
    return written.value.id


def _approved(ledger: Ledger, task_id: str, **options: Any) -> str:
    """Approve the task (as the approver); the approval's id."""
    written = ledger.approve_access_request(
        actor=APPROVER,
        approver=PrincipalIdentity(iss=ledger.issuer, sub="approver-1"),
        task_id=task_id,
        reason=None,
        **options,
    )
    approval = written.value.approval
    assert approval is not None
    return str(approval["approval_id"])


def _together(jobs: list[Callable[[], object]]) -> list[object]:
    """Run the jobs at once (a barrier), each outcome a value or the exception raised."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[object] = [None] * len(jobs)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = jobs[index]()
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def _events(ledger: Ledger, task_id: str) -> list[str]:
    return [type(e.event).__name__ for e in ledger.history(task_id)]


def test_one_binding_token_makes_one_task_across_replicas(
    replicas: tuple[Ledger, Ledger],
) -> None:
    a, b = replicas
    mission = active_mission(a)
    outcomes = _together(
        [lambda app=app: submit_access_request(app, mission) for app in (a, b, a, b)]
    )
    assert len(set(outcomes)) == 1, outcomes
    assert _events(a, str(outcomes[0])) == ["Submitted"]


def test_a_single_use_approval_is_spent_exactly_once_under_concurrency(
    replicas: tuple[Ledger, Ledger],
) -> None:
    a, b = replicas
    mission = active_mission(a)
    task_id = submit_access_request(a, mission)
    approval_id = _approved(a, task_id)

    def use(app: Ledger, n: int) -> object:
        return app.use_approval(task_id=task_id, approval_id=approval_id, evaluation_id=f"e{n}")

    outcomes = _together([lambda n=n: use(a if n % 2 else b, n) for n in range(20)])
    spent = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, ApprovalUnusable | Conflict)]
    assert (len(spent), len(refused)) == (1, 19), outcomes
    assert _events(a, task_id).count("ApprovalUsed") == 1


def test_task_expiry_is_recorded_once_across_replicas(
    replicas: tuple[Ledger, Ledger], clock: MutableClock
) -> None:
    a, b = replicas
    task_id = submit_access_request(a, active_mission(a))
    clock.advance(hours=24, seconds=1)
    _together([lambda app=app: app.record_due_transitions(task_id) for app in (a, b, a, b)])
    assert _events(b, task_id) == ["Submitted", "Expired"]


def test_a_request_under_a_revoked_mission_writes_nothing(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    ledger.change_lifecycle(
        actor=APPROVER, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    )
    head = ledger.head_position()
    with pytest.raises(NotRequestable):
        submit_access_request(ledger, mission)
    assert ledger.head_position() == head


def test_an_approval_granted_on_the_other_replica_is_usable_here(
    replicas: tuple[Ledger, Ledger],
) -> None:
    """The submitting replica's command cache still holds the task as pending: its refusal
    is judged again on the stored state before it is believed."""
    a, b = replicas
    task_id = submit_access_request(a, active_mission(a))
    approval_id = _approved(b, task_id)
    used = a.use_approval(task_id=task_id, approval_id=approval_id, evaluation_id="e1")
    assert used.value.uses == ["e1"]


def test_a_task_decided_on_the_other_replica_cannot_be_cancelled_here(
    replicas: tuple[Ledger, Ledger],
) -> None:
    a, b = replicas
    task_id = submit_access_request(a, active_mission(a))
    b.deny_access_request(actor=APPROVER, task_id=task_id, reason="no")
    with pytest.raises(InvalidTaskState):
        a.cancel_access_request(actor=PEP, task_id=task_id, reason=None)
    assert _events(a, task_id) == ["Submitted", "Denied"]


def test_a_mission_revoked_on_the_other_replica_voids_an_approvals_uses(
    replicas: tuple[Ledger, Ledger],
) -> None:
    a, b = replicas
    mission = active_mission(a)
    task_id = submit_access_request(a, mission)
    approval_id = _approved(a, task_id, max_uses=3)
    a.use_approval(task_id=task_id, approval_id=approval_id, evaluation_id="e1")
    b.change_lifecycle(
        actor=APPROVER, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    )
    with pytest.raises(ApprovalUnusable):
        a.use_approval(task_id=task_id, approval_id=approval_id, evaluation_id="e2")
    assert _events(a, task_id).count("ApprovalUsed") == 1
