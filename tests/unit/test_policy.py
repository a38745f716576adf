"""Who may do what (``api/policy.py``): every gate and object rule, as one table per kind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from api import policy
from api.auth import Principal
from ledger.domain.errors import Forbidden
from ledger.domain.roles import Role
from ledger.domain.states import Operation


def caller(role: str, client_id: str | None = None) -> Principal:
    the_role = Role(role)
    return Principal(
        kind="api_key",
        name=client_id or f"{role}-1",
        roles=frozenset({the_role}),
        client_id=client_id if the_role is Role.AGENT else None,
    )


AGENT = caller("agent", "agent-1")
OTHER_AGENT = caller("agent", "agent-2")
APPROVER = caller("approver")
OPERATOR = caller("operator")
AUDITOR = caller("auditor")
PEP = caller("pep")
ADMIN = caller("admin")
EVERYONE = {
    "agent": AGENT,
    "approver": APPROVER,
    "operator": OPERATOR,
    "auditor": AUDITOR,
    "pep": PEP,
    "admin": ADMIN,
}

GATES = [
    # gate, the roles it lets through (admin always)
    (policy.SUBMIT_PROPOSAL, {"agent"}),
    (policy.READ_PROPOSALS, {"approver", "agent"}),
    (policy.DECIDE_PROPOSAL, {"approver"}),
    (policy.CANCEL_PROPOSAL, {"agent"}),
    (policy.LIST_MISSIONS, {"operator", "auditor"}),
    (policy.READ_MISSION, {"operator", "auditor", "agent"}),
    (policy.READ_MISSION_EVENTS, {"operator", "auditor"}),
    (policy.CHANGE_LIFECYCLE, {"operator"}),
    (policy.RESUME_MISSION, set()),
    (policy.CONTAIN_MISSION, {"operator"}),
    (policy.PROPOSE_EXPANSION, {"agent"}),
    (policy.REPORT_COMPLETION_EVENT, {"operator", "agent"}),
    (policy.ISSUE_MANDATE, {"agent"}),
    (policy.DELEGATE_MANDATE, {"agent"}),
    (policy.NARROW_MANDATE, {"operator", "agent"}),
    (policy.REVOKE_MANDATE, {"operator"}),
    (policy.REVOKE_INSTANCE, {"operator"}),
    (policy.READ_MANDATE, {"operator", "auditor", "agent"}),
    (policy.INTROSPECT_MANDATE, {"pep"}),
    (policy.DECIDE_ACCESS, {"pep"}),
    (policy.READ_MISSION_STATUS, {"pep", "operator", "auditor", "agent"}),
    (policy.READ_METRICS, {"operator", "auditor"}),
    (policy.READ_AUDIT_LOG, {"auditor"}),
    (policy.EXPORT_EVIDENCE, {"auditor"}),
]


@pytest.mark.parametrize(("gate", "passing"), GATES, ids=[str(i) for i in range(len(GATES))])
def test_a_gate_lets_through_exactly_its_roles_and_admin(
    gate: policy.Gate, passing: set[str]
) -> None:
    for role, principal in EVERYONE.items():
        allowed = role in passing or role == "admin"
        assert gate.allows(principal) is allowed, role
        if allowed:
            gate.check(principal)
        else:
            with pytest.raises(Forbidden):
                gate.check(principal)


@pytest.mark.parametrize("operation", list(Operation))
def test_only_admin_resumes_and_operators_change_the_rest_of_the_lifecycle(
    operation: Operation,
) -> None:
    gate = policy.lifecycle_gate(operation)
    assert gate.allows(ADMIN)
    assert gate.allows(OPERATOR) is (operation is not Operation.RESUME)


OWN: Any = SimpleNamespace(client_id="agent-1", holder={"client_id": "agent-1"})

OBJECT_RULES = [
    # rule, callers who may (on agent-1's Proposal / Mission / Mandate), admin always
    (policy.may_see_proposal, {"approver", "agent"}),
    (policy.may_cancel_proposal, {"agent"}),
    (policy.may_see_mission, {"operator", "auditor", "agent"}),
    (policy.may_propose_expansion, {"agent"}),
    (policy.may_report_completion_event, {"operator", "agent"}),
    (policy.may_read_mission_status, {"pep", "operator", "auditor", "agent"}),
    (policy.may_issue_mandate, {"agent"}),
    (policy.may_delegate, {"agent"}),
    (policy.may_narrow, {"operator", "agent"}),
    (policy.may_see_mandate, {"operator", "auditor", "agent"}),
]


@pytest.mark.parametrize(
    ("rule", "may"), OBJECT_RULES, ids=[rule.__name__ for rule, _ in OBJECT_RULES]
)
def test_an_object_rule_admits_its_roles_the_owning_agent_and_admin(
    rule: Any, may: set[str]
) -> None:
    for role, principal in EVERYONE.items():
        assert rule(principal, OWN) is (role in may or role == "admin"), role


@pytest.mark.parametrize(
    ("rule", "may"), OBJECT_RULES, ids=[rule.__name__ for rule, _ in OBJECT_RULES]
)
def test_an_agent_never_acts_on_another_agents_object(rule: Any, may: set[str]) -> None:
    assert "agent" in may
    assert rule(OTHER_AGENT, OWN) is False


def test_an_agent_submits_only_for_its_own_client_id() -> None:
    assert policy.may_submit_for(AGENT, "agent-1")
    assert not policy.may_submit_for(AGENT, "agent-2")
    assert policy.may_submit_for(ADMIN, "agent-2")


def test_approvers_see_every_proposal_agents_their_own() -> None:
    assert policy.sees_every_proposal(APPROVER)
    assert policy.sees_every_proposal(ADMIN)
    assert not policy.sees_every_proposal(AGENT)
