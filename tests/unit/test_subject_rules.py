"""The subject and approver rules of the domain (SPEC 7.3): how a proposal's subject is
established, and which approvers the Proposal aggregate refuses (recording nothing)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ledger.domain.actors import Actor
from ledger.domain.errors import ApprovalNotAllowed, SubjectUnverified
from ledger.domain.proposals import Proposal, Submission
from ledger.domain.subjects import (
    ASSERTED,
    ATTESTED,
    PrincipalIdentity,
    SubjectAssertion,
    establish_subject,
)
from tests.conftest import T0

IDP = "https://idp.example.com"
ALICE = {"iss": IDP, "sub": "alice"}
APPROVER = Actor(type="oauth", name="bob", role="approver", iss=IDP)
WRITE = ["invoices.read", "journal-entries.write"]


def proposal(controls: dict[str, Any] | None = None) -> Proposal:
    intent: dict[str, Any] = {"goal": "g", "resources": ["https://erp.example.com"]}
    if controls is not None:
        intent["controls"] = controls
    created = Proposal.submit(
        proposal_id="prp_1",
        submission=Submission(
            issuer="https://ledger.example.com",
            client_id="agent-1",
            instance_id=None,
            subject=ALICE,
            intent=intent,
            proposed_authority=None,
            intent_hash="h",
            proposal_hash=None,
            expires_at=T0 + timedelta(days=1),
            predecessor=None,
        ),
        actor=Actor(type="api_key", name="agent-1", role="agent"),
        now=T0,
    )
    created.collect_events()
    return created


def approve(target: Proposal, approver: PrincipalIdentity, actions: list[str]) -> None:
    target.approve(
        mission_id="msn_1",
        approval_event_id=None,
        actor=APPROVER,
        approver=approver,
        granted_actions=actions,
        now=T0,
    )


def refused_rule(target: Proposal, approver: PrincipalIdentity, actions: list[str]) -> str:
    with pytest.raises(ApprovalNotAllowed) as refused:
        approve(target, approver, actions)
    assert target.collect_events() == []
    return refused.value.rule


# ------------------------------------------------------------------ establishing the subject


def test_a_verified_assertion_is_the_subject_and_makes_it_asserted() -> None:
    established = establish_subject(
        None, SubjectAssertion(iss=IDP, sub="alice"), require_assertion=False
    )
    assert (established.subject, established.provenance) == (ALICE, ASSERTED)


def test_a_claimed_subject_must_match_the_assertion() -> None:
    with pytest.raises(SubjectUnverified):
        establish_subject(
            {"iss": IDP, "sub": "mallory"},
            SubjectAssertion(iss=IDP, sub="alice"),
            require_assertion=False,
        )


def test_a_claimed_subject_without_assertion_is_attested() -> None:
    assert establish_subject(ALICE, None, require_assertion=False).provenance == ATTESTED


def test_an_unasserted_subject_is_refused_when_assertion_is_required() -> None:
    with pytest.raises(SubjectUnverified):
        establish_subject(ALICE, None, require_assertion=True)


def test_an_expansion_keeps_its_predecessors_asserted_subject_when_required() -> None:
    established = establish_subject(
        ALICE, None, require_assertion=True, inherited_provenance=ASSERTED
    )
    assert established.provenance == ASSERTED


def test_no_subject_and_no_assertion_is_refused() -> None:
    with pytest.raises(SubjectUnverified):
        establish_subject(None, None, require_assertion=False)


# ------------------------------------------------------------------ approver rules


def test_the_subject_may_not_approve_write_authority() -> None:
    rule = refused_rule(proposal(), PrincipalIdentity(iss=IDP, sub="alice"), WRITE)
    assert rule == "approver_is_subject"


def test_an_action_family_counts_as_write_authority() -> None:
    rule = refused_rule(proposal(), PrincipalIdentity(iss=IDP, sub="alice"), ["invoices.*"])
    assert rule == "approver_is_subject"


def test_the_subject_may_approve_read_only_authority() -> None:
    target = proposal()
    approve(target, PrincipalIdentity(iss=IDP, sub="alice"), ["invoices.read", "ledger.list"])
    assert target.status == "approved"


def test_another_principal_may_approve_write_authority() -> None:
    target = proposal()
    approve(target, PrincipalIdentity(iss=IDP, sub="bob"), WRITE)
    assert target.status == "approved"


def test_the_same_sub_at_another_issuer_is_not_the_subject() -> None:
    target = proposal()
    approve(target, PrincipalIdentity(iss="https://other.example.com", sub="alice"), WRITE)
    assert target.status == "approved"


def test_an_approver_without_acr_does_not_meet_controls_acr() -> None:
    rule = refused_rule(proposal({"acr": "phr"}), PrincipalIdentity(iss=IDP, sub="bob"), WRITE)
    assert rule == "acr_not_met"


def test_an_approver_with_another_acr_does_not_meet_controls_acr() -> None:
    approver = PrincipalIdentity(iss=IDP, sub="bob", acr="pwd")
    assert refused_rule(proposal({"acr": "phr"}), approver, WRITE) == "acr_not_met"


def test_an_approver_with_the_required_acr_approves() -> None:
    target = proposal({"acr": "phr"})
    approve(target, PrincipalIdentity(iss=IDP, sub="bob", acr="phr"), WRITE)
    assert target.status == "approved"
