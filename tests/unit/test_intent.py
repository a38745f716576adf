"""The Mission Intent: strict parsing, and which resources it bounds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.domain.canonical import intent_hash
from ledger.domain.errors import InvalidRequest
from ledger.domain.intent import parse_intent, resource_in_intent
from tests.vectors import load_mission_vector

P = "/intent"


def intent(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "goal": "Reconcile Q3 invoices",
        "resources": ["https://erp.example.com"],
        "expires_at": "2026-12-31T23:59:59Z",
    }
    base.update(members)
    return {key: value for key, value in base.items() if value is not None}


def rejected_at(value: object) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_intent(value)
    return caught.value.errors[0].pointer


def controls(**members: Any) -> dict[str, Any]:
    return intent(controls=members)


FULL = intent(
    goal_lang="en-US",
    constraints=["No payments above 500 USD", "Only Q3"],
    success_criteria="Every Q3 invoice matched",
    purpose="https://as.example.com/purposes/reconciliation",
    controls={
        "acr": "urn:example:acr:mfa",
        "max_derivations": 20,
        "agent_deployment": {"build": "sha256:abc", "model": "m-1"},
        "max_budget": {"amount": "1000.00", "currency": "USD"},
        "max_calls": [{"call_class": "write", "max": 10}],
        "max_duration": "P1DT2H",
        "max_egress_volume": {"bytes": 1048576, "messages": 0},
        "exclusive": ["finance-approver"],
    },
)


# --------------------------------------------------------------------------- parsing


def test_minimal_intent_parses() -> None:
    parsed = parse_intent(intent())
    assert parsed.goal == "Reconcile Q3 invoices"
    assert parsed.resources == ("https://erp.example.com",)
    assert parsed.expires_at == datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_every_member_parses() -> None:
    assert parse_intent(FULL).raw == FULL


def test_expires_at_is_normalised_to_utc() -> None:
    parsed = parse_intent(intent(expires_at="2026-12-31T01:00:00+02:00"))
    assert parsed.expires_at == datetime(2026, 12, 30, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize("vector_id", ["intent-1", "intent-2-nested-controls"])
def test_vector_intent_parses_and_hashes_unchanged(vector_id: str) -> None:
    vectors = {v["id"]: v for v in load_mission_vector("integrity-anchors.json")["vectors"]}
    vector = vectors[vector_id]
    parsed = parse_intent(vector["value"])
    assert intent_hash(vector["iss"], parsed.raw) == vector["expected"]


def test_raw_is_a_copy_of_the_input() -> None:
    submitted = intent()
    parsed = parse_intent(submitted)
    submitted["resources"].append("https://crm.example.com")
    assert parsed.raw["resources"] == ["https://erp.example.com"]


def test_intent_must_be_an_object() -> None:
    assert rejected_at(["goal"]) == P


def test_unknown_member_is_rejected_at_its_pointer() -> None:
    assert rejected_at(intent(evidence=[])) == f"{P}/evidence"


@pytest.mark.parametrize("member", ["goal", "resources", "expires_at"])
def test_required_member_is_reported_missing(member: str) -> None:
    value = intent()
    del value[member]
    assert rejected_at(value) == f"{P}/{member}"


@pytest.mark.parametrize("goal", ["", "   ", "g" * 4097, 7])
def test_goal_is_a_non_blank_string_of_at_most_4096(goal: object) -> None:
    assert rejected_at(intent(goal=goal)) == f"{P}/goal"


def test_goal_of_4096_characters_is_accepted() -> None:
    assert parse_intent(intent(goal="g" * 4096)).goal == "g" * 4096


@pytest.mark.parametrize("lang", ["english!", "en_US", "toolongtag-x", "x" * 36])
def test_goal_lang_must_look_like_bcp47(lang: str) -> None:
    assert rejected_at(intent(goal_lang=lang)) == f"{P}/goal_lang"


def test_resources_must_not_be_empty() -> None:
    assert rejected_at(intent(resources=[])) == f"{P}/resources"


def test_resources_are_bounded_to_64() -> None:
    many = [f"https://r{i}.example" for i in range(65)]
    assert rejected_at(intent(resources=many)) == f"{P}/resources"


def test_resources_must_be_absolute_uris() -> None:
    value = intent(resources=["https://erp.example.com", "erp"])
    assert rejected_at(value) == f"{P}/resources/1"


def test_resources_must_be_unique_after_normalisation() -> None:
    value = intent(resources=["https://erp.example.com/a", "HTTPS://ERP.example.com:443/a"])
    assert rejected_at(value) == f"{P}/resources/1"


def test_prose_constraints_may_be_a_string() -> None:
    assert parse_intent(intent(constraints="be careful")).goal


@pytest.mark.parametrize(
    ("value", "pointer"),
    [
        ("c" * 4097, f"{P}/constraints"),
        (["ok", "c" * 1025], f"{P}/constraints/1"),
        ([str(i) for i in range(33)], f"{P}/constraints"),
        ({"max_amount": "5"}, f"{P}/constraints"),
        ([5], f"{P}/constraints/0"),
    ],
)
def test_prose_constraints_are_bounded_prose(value: object, pointer: str) -> None:
    assert rejected_at(intent(constraints=value)) == pointer


def test_success_criteria_is_bounded() -> None:
    assert rejected_at(intent(success_criteria="s" * 4097)) == f"{P}/success_criteria"


def test_purpose_must_be_an_absolute_uri() -> None:
    assert rejected_at(intent(purpose="reconciliation")) == f"{P}/purpose"


def test_expires_at_must_be_rfc3339() -> None:
    assert rejected_at(intent(expires_at="2026-12-31")) == f"{P}/expires_at"


def test_unknown_control_is_rejected_at_its_pointer() -> None:
    assert rejected_at(controls(max_tokens=5)) == f"{P}/controls/max_tokens"


def test_acr_is_bounded() -> None:
    assert rejected_at(controls(acr="a" * 257)) == f"{P}/controls/acr"


@pytest.mark.parametrize("value", [0, 1_000_001, True, "20"])
def test_max_derivations_is_an_integer_from_1_to_a_million(value: object) -> None:
    assert rejected_at(controls(max_derivations=value)) == f"{P}/controls/max_derivations"


def test_agent_deployment_values_are_bounded_strings() -> None:
    value = controls(agent_deployment={"model": 5})
    assert rejected_at(value) == f"{P}/controls/agent_deployment/model"


def test_agent_deployment_has_at_most_8_members() -> None:
    value = controls(agent_deployment={f"k{i}": "v" for i in range(9)})
    assert rejected_at(value) == f"{P}/controls/agent_deployment"


def test_max_budget_needs_a_decimal_amount() -> None:
    value = controls(max_budget={"amount": "1e3", "currency": "USD"})
    assert rejected_at(value) == f"{P}/controls/max_budget/amount"


def test_max_budget_rejects_unknown_members() -> None:
    value = controls(max_budget={"amount": "1", "currency": "USD", "period": "P1D"})
    assert rejected_at(value) == f"{P}/controls/max_budget/period"


def test_max_calls_items_are_objects() -> None:
    assert rejected_at(controls(max_calls=["write"])) == f"{P}/controls/max_calls/0"


def test_max_calls_is_an_integer_or_an_array_of_class_rules() -> None:
    assert rejected_at(controls(max_calls="10")) == f"{P}/controls/max_calls"
    assert rejected_at(controls(max_calls=-1)) == f"{P}/controls/max_calls"
    parse_intent(controls(max_calls=10))


def test_a_call_class_rule_needs_its_class_and_max() -> None:
    assert rejected_at(controls(max_calls=[{"max": 3}])) == f"{P}/controls/max_calls/0/call_class"
    assert rejected_at(controls(max_calls=[{"call_class": "w"}])) == f"{P}/controls/max_calls/0/max"
    limit = [{"call_class": "w", "max": 3, "limit": 1}]
    assert rejected_at(controls(max_calls=limit)) == f"{P}/controls/max_calls/0/limit"


def test_a_call_class_is_named_once() -> None:
    twice = [{"call_class": "w", "max": 3}, {"call_class": "w", "max": 4}]
    assert rejected_at(controls(max_calls=twice)) == f"{P}/controls/max_calls/1/call_class"


def test_max_calls_hold_at_most_32_rules() -> None:
    value = controls(max_calls=[{"call_class": str(i)} for i in range(33)])
    assert rejected_at(value) == f"{P}/controls/max_calls"


@pytest.mark.parametrize("duration", ["P1D", "PT30M", "P2DT1H30M15S", "PT5S"])
def test_max_duration_accepts_iso8601_durations(duration: str) -> None:
    assert parse_intent(controls(max_duration=duration)).raw["controls"] == {
        "max_duration": duration
    }


@pytest.mark.parametrize("duration", ["P", "PT", "1D", "P1H", "PT1D", "P1.5D", "-P1D"])
def test_max_duration_rejects_other_strings(duration: str) -> None:
    assert rejected_at(controls(max_duration=duration)) == f"{P}/controls/max_duration"


@pytest.mark.parametrize(("member", "value"), [("bytes", -1), ("messages", 1.5), ("bits", 1)])
def test_max_egress_volume_holds_non_negative_counts(member: str, value: object) -> None:
    pointer = f"{P}/controls/max_egress_volume/{member}"
    assert rejected_at(controls(max_egress_volume={member: value})) == pointer


def test_exclusive_holds_strings() -> None:
    assert rejected_at(controls(exclusive=[1])) == f"{P}/controls/exclusive/0"


def test_values_jcs_cannot_represent_are_rejected() -> None:
    value = controls(agent_deployment={"model": "\ud800"})
    assert rejected_at(value) == P


# --------------------------------------------------------------------------- resources


def test_resource_in_intent_when_listed() -> None:
    parsed = parse_intent(intent(resources=["https://erp.example.com/ledger"]))
    assert resource_in_intent(parsed, "https://ERP.example.com/ledger")


def test_resource_in_intent_when_below_at_a_segment_boundary() -> None:
    parsed = parse_intent(intent(resources=["https://erp.example.com/ledger"]))
    assert resource_in_intent(parsed, "https://erp.example.com/ledger/2026/q3")
    assert not resource_in_intent(parsed, "https://erp.example.com/ledgers")


def test_resource_not_in_intent_elsewhere() -> None:
    parsed = parse_intent(intent())
    assert not resource_in_intent(parsed, "https://crm.example.com/accounts")
