"""No inert controls (SPEC 7.3): every member an Intent's ``controls`` or an entry's
``constraints`` accepts is enforced, and every other one (unknown, or known but not enforced
by this release) is refused at submission with 400 ``unsupported_control`` naming it.

The table below names, for each accepted member, the test that shows it enforced by a
permit/deny (or allow/refuse) pair; a member added to the accepted sets without such a test
fails ``test_every_accepted_member_has_a_test_that_shows_it_enforced``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from ledger.domain.constraints import COMMON_CONSTRAINT_KEYS
from ledger.domain.intent import ENFORCED_CONTROLS
from tests.api.conftest import Api, assert_problem, entry

_DECISIONS = "tests.api.pdp.test_authzen_decisions"
_CONSTRAINT_PAIRS = (_DECISIONS, "test_each_constraint_permits_inside_and_denies_outside")
_METERING = "tests.api.pdp.test_metering_http"

#: Accepted member -> (module, test) that shows a permit and a deny (or refusal) for it.
ENFORCED_BY = {
    "max_amount": _CONSTRAINT_PAIRS,
    "allowed_tools": _CONSTRAINT_PAIRS,
    "recipient_domain": _CONSTRAINT_PAIRS,
    "tenant": _CONSTRAINT_PAIRS,
    "time_window": _CONSTRAINT_PAIRS,
    "data_classification": _CONSTRAINT_PAIRS,
    "resource_issued_after": _CONSTRAINT_PAIRS,
    "resource_issued_before": _CONSTRAINT_PAIRS,
    "requires_action_approval": (
        _DECISIONS,
        "test_requires_action_approval_denies_as_approval_required",
    ),
    "terminal_when": (
        "tests.api.test_completion_events_http",
        "test_the_answer_is_the_mission_without_the_discharged_entry",
    ),
    "acr": (
        "tests.api.test_subject_http",
        "test_a_jwt_approver_with_another_acr_does_not_meet_controls_acr",
    ),
    "max_derivations": (
        "tests.integration.test_mandates_contract",
        "test_max_derivations_caps_issuance",
    ),
    "max_budget": (_METERING, "test_max_budget_permits_within_and_denies_beyond"),
    "max_calls": (_METERING, "test_max_calls_permits_within_and_denies_beyond"),
    "call_class": (_METERING, "test_a_call_class_limit_denies_only_calls_of_its_class"),
}

#: Controls the Intent grammar knows but this release does not enforce (deployment
#: attestation, duration, egress volume and exclusivity are later work).
NOT_ENFORCED = {
    "agent_deployment": {"model": "m-1"},
    "max_duration": "P1D",
    "max_egress_volume": {"bytes": 1024},
    "exclusive": ["finance"],
}


def test_every_accepted_member_has_a_test_that_shows_it_enforced() -> None:
    assert set(ENFORCED_BY) == set(COMMON_CONSTRAINT_KEYS) | set(ENFORCED_CONTROLS)
    for module, name in ENFORCED_BY.values():
        assert callable(getattr(importlib.import_module(module), name)), (module, name)


def _submit(api: Api, body: dict[str, Any]) -> Any:
    return api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))


@pytest.mark.parametrize("name", sorted(NOT_ENFORCED))
def test_a_control_this_release_does_not_enforce_is_refused_naming_it(api: Api, name: str) -> None:
    body = api.proposal_body()
    body["intent"]["controls"] = {name: NOT_ENFORCED[name]}
    head = api.head()
    problem = assert_problem(_submit(api, body), 400, "unsupported_control")
    assert f"/intent/controls/{name}" in problem["detail"]
    assert api.head() == head


def test_an_unknown_control_is_refused_naming_it(api: Api) -> None:
    body = api.proposal_body()
    body["intent"]["controls"] = {"colour": 1}
    problem = assert_problem(_submit(api, body), 400, "unsupported_control")
    assert "/intent/controls/colour" in problem["detail"]


def test_an_unknown_constraint_is_refused_naming_it(api: Api) -> None:
    body = api.proposal_body(authorization_details=[entry() | {"constraints": {"colour": "x"}}])
    problem = assert_problem(_submit(api, body), 400, "unsupported_control")
    assert "/authorization_details/0/constraints/colour" in problem["detail"]


@pytest.mark.parametrize("name", sorted(ENFORCED_CONTROLS))
def test_an_enforced_control_is_accepted(api: Api, name: str) -> None:
    body = api.proposal_body()
    accepted = {
        "acr": "urn:acr:mfa",
        "max_derivations": 3,
        "max_budget": {"amount": "1000.00", "currency": "USD"},
        "max_calls": [{"call_class": "write", "max": 10}],
    }
    body["intent"]["controls"] = {name: accepted[name]}
    assert _submit(api, body).status_code == 202
