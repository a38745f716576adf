"""A decision point's request and answer as values: copies keep what they do not change."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

from ledger.domain.metering import Bounds, MeteredCall
from ledger.signing.dpop import ReadProof, VerifiedProof
from projections.pdp import (
    Action,
    ApprovalUse,
    Decision,
    Evaluation,
    PendingReservation,
    Resource,
    Subject,
)


def test_a_decision_answered_at_a_position_keeps_every_other_member() -> None:
    fallback = Decision(decision=False, context={"reason": "approval_expired"})
    decision = Decision(
        decision=True,
        context={"evaluation_id": "ev_1"},
        mandate_id="mdt_1",
        position=3,
        approval_id="apr_1",
        use=ApprovalUse(task_id="tsk_1", approval_id="apr_1"),
        fallback=fallback,
        pending=PendingReservation(
            mission_id="msn_1",
            bounds=Bounds(budget="10.00", currency="USD"),
            call=MeteredCall(amount="1.00", currency="USD", call_class=None),
            mandate_id="mdt_1",
            valid_until=0.0,
            request=Evaluation(Subject("agent", "agent-1"), Action("pay"), Resource("api", "x")),
            now=datetime(2026, 12, 6, tzinfo=UTC),
            approval_id="apr_1",
        ),
    )
    moved = decision.at(7)
    assert moved.position == 7
    for member in fields(Decision):
        if member.name != "position":
            assert getattr(moved, member.name) is getattr(decision, member.name), member.name


def test_a_request_deferring_its_proof_keeps_every_other_member() -> None:
    request = Evaluation(
        Subject("agent", "agent-1", {"instance_id": "i-1"}),
        Action("invoices.pay", {"amount": "1.00"}),
        Resource("api", "https://erp.example.com/invoices/7"),
        {"mandate": "mdt_1"},
    )
    proof = ReadProof(
        token="h.p.s",
        header_segment="h",
        signing_input=b"h.p",
        signature=b"s",
        proof=VerifiedProof(jkt="jkt", jti="jti-1", iat=0.0),
    )
    deferred = request.deferring(proof)
    assert deferred.deferred_proof is proof
    for member in fields(Evaluation):
        if member.name != "deferred_proof":
            assert getattr(deferred, member.name) is getattr(request, member.name), member.name
