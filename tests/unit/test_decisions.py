"""A decision point's answer as a value: copies keep what they do not change."""

from __future__ import annotations

from dataclasses import fields

from projections.pdp import ApprovalUse, Decision


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
    )
    moved = decision.at(7)
    assert moved.position == 7
    for member in fields(Decision):
        if member.name != "position":
            assert getattr(moved, member.name) is getattr(decision, member.name), member.name
