"""The AccessRequest aggregate's rules and the denial binding, without any store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.domain.access_binding import (
    binding_context_members,
    binding_hash,
    task_id_for,
    template_of,
)
from ledger.domain.access_requests import (
    AccessRequest,
    Approval,
    DeniedRequest,
    Requester,
)
from ledger.domain.actors import Actor
from ledger.domain.errors import (
    ApprovalNotAllowed,
    ApprovalUnusable,
    InvalidTaskState,
    TaskExpired,
)
from ledger.domain.subjects import PrincipalIdentity

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ISSUER = "https://mas.example.com"
SUBJECT = {"iss": "https://idp.example.com", "sub": "alice"}
PEP = Actor(type="api_key", name="pep-1", role="pep")
APPROVER = Actor(type="api_key", name="approver-1", role="approver")
APPROVER_ID = PrincipalIdentity(iss=ISSUER, sub="approver-1")


def new_task(*, action: str = "invoices.pay", required_acr: str | None = None) -> AccessRequest:
    return AccessRequest.submit(
        task_id=task_id_for("jti-1"),
        issuer=ISSUER,
        denied=DeniedRequest(
            subject={"type": "agent", "id": "agent-1"},
            resource={"type": "api", "id": "https://erp.example.com/invoices/7"},
            action={"name": action},
            context={"mandate": "mdt_x"},
            reason="approval_required",
            template="mission_gate",
            evaluation_id="ev_1",
            binding_hash="h",
            binding_jti="jti-1",
            denial_expires_at=NOW + timedelta(minutes=10),
        ),
        requester=Requester(
            actor=PEP,
            identity=PrincipalIdentity(iss=ISSUER, sub="pep-1"),
            scope="api_key::pep-1",
            client_id="agent-1",
            mission_id="msn_1",
            mission_subject=SUBJECT,
            required_acr=required_acr,
        ),
        justification="month-end",
        requested_until=None,
        expires_at=NOW + timedelta(hours=24),
        now=NOW,
    )


def approval(*, max_uses: int = 1, hours: float = 1) -> Approval:
    return Approval(
        approval_id="apv_1",
        approved_until=NOW + timedelta(hours=hours),
        max_uses=max_uses,
        state="jws",
    )


def approve(task: AccessRequest, approver: PrincipalIdentity = APPROVER_ID, **kw: Any) -> None:
    task.approve(approval=approval(**kw), reason="ok", approver=approver, actor=APPROVER, now=NOW)


def names(task: AccessRequest) -> list[str]:
    return [type(e).__name__ for e in task.collect_events()]


def test_a_new_task_is_pending() -> None:
    task = new_task()
    assert task.effective_status(NOW) == "pending"
    assert task.next_deadline() == NOW + timedelta(hours=24)


def test_a_pending_task_is_expired_at_its_deadline_and_recorded_once() -> None:
    task = new_task()
    later = NOW + timedelta(hours=24)
    task.advance_clock(later)
    task.advance_clock(later + timedelta(seconds=1))
    assert names(task) == ["Submitted", "Expired"]
    assert task.next_deadline() is None


def test_an_expired_task_cannot_be_approved() -> None:
    task = new_task()
    with pytest.raises(TaskExpired):
        task.approve(
            approval=approval(),
            reason=None,
            approver=APPROVER_ID,
            actor=APPROVER,
            now=NOW + timedelta(hours=25),
        )


def test_a_decided_task_cannot_be_decided_again() -> None:
    task = new_task()
    task.deny(reason="no", actor=APPROVER, now=NOW)
    with pytest.raises(InvalidTaskState):
        approve(task)


def test_a_cancelled_task_cannot_be_cancelled_again() -> None:
    task = new_task()
    task.cancel(reason=None, actor=PEP, now=NOW)
    with pytest.raises(InvalidTaskState):
        task.cancel(reason=None, actor=PEP, now=NOW)


def test_the_requester_may_not_approve() -> None:
    task = new_task()
    with pytest.raises(ApprovalNotAllowed) as refused:
        approve(task, PrincipalIdentity(iss=ISSUER, sub="pep-1"))
    assert refused.value.rule == "approver_is_requester"
    assert names(task) == ["Submitted"]


def test_the_agent_may_not_approve() -> None:
    task = new_task()
    with pytest.raises(ApprovalNotAllowed) as refused:
        approve(task, PrincipalIdentity(iss=ISSUER, sub="agent-1"))
    assert refused.value.rule == "approver_is_requester"


def test_the_subject_may_not_approve_a_write_action() -> None:
    task = new_task()
    with pytest.raises(ApprovalNotAllowed) as refused:
        approve(task, PrincipalIdentity(**SUBJECT))
    assert refused.value.rule == "approver_is_subject"


def test_the_subject_may_approve_a_read_action() -> None:
    task = new_task(action="invoices.read")
    approve(task, PrincipalIdentity(**SUBJECT))
    assert task.status == "approved"


def test_the_missions_acr_binds_the_approver() -> None:
    task = new_task(required_acr="phr")
    with pytest.raises(ApprovalNotAllowed) as refused:
        approve(task)
    assert refused.value.rule == "acr_not_met"
    approve(task, PrincipalIdentity(iss=ISSUER, sub="approver-1", acr="phr"))
    assert task.status == "approved"


def test_each_use_of_an_approval_is_an_event_up_to_max_uses() -> None:
    task = new_task()
    approve(task, max_uses=2)
    task.use_approval(approval_id="apv_1", evaluation_id="ev_2", now=NOW)
    task.use_approval(approval_id="apv_1", evaluation_id="ev_3", now=NOW)
    with pytest.raises(ApprovalUnusable):
        task.use_approval(approval_id="apv_1", evaluation_id="ev_4", now=NOW)
    assert names(task) == ["Submitted", "Approved", "ApprovalUsed", "ApprovalUsed"]


def test_an_approval_is_unusable_from_approved_until() -> None:
    task = new_task()
    approve(task, max_uses=5)
    with pytest.raises(ApprovalUnusable):
        task.use_approval(approval_id="apv_1", evaluation_id="e", now=NOW + timedelta(hours=1))


def test_another_approval_id_is_unusable() -> None:
    task = new_task()
    approve(task)
    with pytest.raises(ApprovalUnusable):
        task.use_approval(approval_id="apv_2", evaluation_id="e", now=NOW)


def test_a_pending_task_has_no_usable_approval() -> None:
    with pytest.raises(ApprovalUnusable):
        new_task().use_approval(approval_id="apv_1", evaluation_id="e", now=NOW)


# ---------------------------------------------------------------------- the binding


def _hash(**overrides: Any) -> str:
    request: dict[str, Any] = {
        "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
        "resource": {"type": "api", "id": "https://erp.example.com/x"},
        "action": {"name": "invoices.pay", "properties": {"amount": "5"}},
        "context": {"mandate": "t", "proof": {"jkt": "k"}, "note": "free text"},
    }
    request.update(overrides)
    return binding_hash(
        **request,
        members=binding_context_members(request["context"]),
        proof_jkt="k",
    )


def test_only_approval_required_and_out_of_authority_are_requestable() -> None:
    assert template_of("approval_required") == "mission_gate"
    assert template_of("out_of_authority") == "mission_broadening"
    for reason in ("actor_invalid", "credential_invalid", "key_mismatch", "mission_inactive"):
        assert template_of(reason) is None


def test_the_binding_ignores_context_members_outside_authorization() -> None:
    assert _hash() == _hash(context={"mandate": "t", "proof": {"jkt": "k"}})


def test_the_binding_covers_the_action_parameters() -> None:
    assert _hash() != _hash(action={"name": "invoices.pay", "properties": {"amount": "6"}})


def test_the_binding_drops_the_subjects_act() -> None:
    with_act = {
        "type": "agent",
        "id": "agent-1",
        "properties": {"instance_id": "i-1", "act": {"sub": "orchestrator"}},
    }
    assert _hash() == _hash(subject=with_act)


def test_absent_and_empty_properties_bind_alike() -> None:
    assert _hash() == _hash(
        resource={"type": "api", "id": "https://erp.example.com/x", "properties": {}}
    )


def test_one_binding_token_makes_one_task_id() -> None:
    assert task_id_for("a") == task_id_for("a") != task_id_for("b")
