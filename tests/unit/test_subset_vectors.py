"""Every case of the drafts' subset-rule vectors (subset-rule.json) reproduces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ledger.domain.actions import action_within
from ledger.domain.authority import entry_within, parse_authority_set
from ledger.domain.constraints import (
    COMMON_CONSTRAINT_KEYS,
    DECIMAL_PATTERN,
    Facts,
    constraint_within,
    constraints_within,
    evaluate_constraints,
    validate_constraints,
)
from ledger.domain.errors import InvalidRequest
from ledger.domain.resources import resource_covers, resource_within
from tests.vectors import load_mission_vector

RULES: dict[str, Any] = load_mission_vector("subset-rule.json")
PREFIX = RULES["prefix_resource_match"]
BASE = PREFIX["reference_entry"]["resource"]
NOW = datetime(2026, 8, 1, tzinfo=UTC)


def _ids(cases: list[dict[str, Any]], *keys: str) -> list[Any]:
    return [pytest.param(case, id="|".join(str(case.get(key)) for key in keys)) for case in cases]


@pytest.mark.parametrize("case", _ids(PREFIX["cases"], "request_uri"))
def test_prefix_resource_match_case(case: dict[str, Any]) -> None:
    match = PREFIX["reference_entry"]["resource_match"]
    covered = resource_covers(BASE, match, case["request_uri"])
    assert covered is (case["expected"] == "ALLOW"), case["why"]


# entry_level states each rule in prose; these concrete pairs exercise every clause.
ENTRY_LEVEL_PAIRS = {
    ("exact", "prefix"): [
        (BASE, True),
        (BASE + "/123", True),
        ("https://API.example:443/orders/123", True),
        (BASE + "X", False),
        ("https://api.example/other", False),
    ],
    ("prefix", "exact"): [(BASE, False), (BASE + "/123", False)],
    ("exact", "exact"): [
        (BASE, True),
        ("HTTPS://api.example/%6Frders", True),
        (BASE + "/123", False),
    ],
}


def _entry_level_params() -> list[Any]:
    params = []
    for rule in PREFIX["entry_level"]:
        pairs = ENTRY_LEVEL_PAIRS[(rule["A_match"], rule["B_match"])]
        if rule["contained"] is False:
            assert not any(expected for _, expected in pairs)
        for uri, expected in pairs:
            label = f"A={rule['A_match']}:{uri}|B={rule['B_match']}"
            params.append(pytest.param(rule["A_match"], rule["B_match"], uri, expected, id=label))
    return params


@pytest.mark.parametrize(("a_match", "b_match", "a_uri", "expected"), _entry_level_params())
def test_entry_level_resource_containment(
    a_match: str, b_match: str, a_uri: str, expected: bool
) -> None:
    assert resource_within(a_uri, a_match, BASE, b_match) is expected


def test_prefix_within_prefix_when_the_base_is_covered() -> None:
    assert resource_within(BASE + "/123", "prefix", BASE, "prefix")
    assert not resource_within("https://api.example", "prefix", BASE, "prefix")


@pytest.mark.parametrize("case", _ids(RULES["action_containment"], "candidate", "reference"))
def test_action_containment_case(case: dict[str, Any]) -> None:
    assert action_within(case["candidate"], case["reference"]) is case["within"]


@pytest.mark.parametrize("case", _ids(RULES["constraint_presence"], "why"))
def test_constraint_presence_case(case: dict[str, Any]) -> None:
    reason = constraints_within(case["A_constraints"], case["B_constraints"])
    assert (reason is None) is case["subset"], case["why"]


@pytest.mark.parametrize("case", _ids(RULES["constraint_presence"], "why"))
def test_constraint_presence_case_at_entry_level(case: dict[str, Any]) -> None:
    def entry(constraints: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "mission_resource_access",
            "resource": "https://erp.example.com",
            "actions": ["journal-entries.write"],
            "constraints": constraints,
        }

    (a,) = parse_authority_set([entry(case["A_constraints"])])
    (b,) = parse_authority_set([entry(case["B_constraints"])])
    assert (entry_within(a, b) is None) is case["subset"]


@pytest.mark.parametrize("case", _ids(RULES["common_constraints_value_space"], "key", "candidate"))
def test_common_constraint_value_space_case(case: dict[str, Any]) -> None:
    key = case["key"]
    validate_constraints({key: case["candidate"]}, "/a")
    validate_constraints({key: case["reference"]}, "/b")
    assert constraint_within(key, case["candidate"], case["reference"]) is case["subset"]


@pytest.mark.parametrize("case", _ids(RULES["common_constraints_value_space"], "key", "candidate"))
def test_common_constraint_value_space_case_via_constraints_within(case: dict[str, Any]) -> None:
    reason = constraints_within({case["key"]: case["candidate"]}, {case["key"]: case["reference"]})
    assert (reason is None) is case["subset"]


def test_registry_lists_exactly_the_supported_keys_besides_terminal_when_and_call_class() -> None:
    # terminal_when (discharge) and call_class (metering, SPEC 7.3) came after the drafts.
    registry = {row["key"] for row in RULES["common_constraints_registry"]}
    assert registry == COMMON_CONSTRAINT_KEYS - {"terminal_when", "call_class"}


GRAMMAR = RULES["decimal_grammar"]


def test_decimal_grammar_regex_is_the_one_implemented() -> None:
    # The vector's regex ends in ECMAScript's "$" (the end of the text); Python spells that
    # "\\Z" (its "$" also matches before a final newline).
    assert DECIMAL_PATTERN.pattern == GRAMMAR["regex"].removesuffix("$") + r"\Z"


@pytest.mark.parametrize("amount", GRAMMAR["valid"])
def test_valid_decimal_is_accepted(amount: str) -> None:
    value = {"max_amount": {"amount": amount, "currency": "USD"}}
    assert validate_constraints(value, "/c") is value


@pytest.mark.parametrize("amount", GRAMMAR["malformed"])
def test_malformed_decimal_is_rejected(amount: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_constraints({"max_amount": {"amount": amount, "currency": "USD"}}, "/c")
    assert caught.value.errors[0].pointer == "/c/max_amount/amount"


@pytest.mark.parametrize("amount", GRAMMAR["malformed"])
def test_malformed_decimal_is_refused_at_use_time(amount: str) -> None:
    ceiling = {"max_amount": {"amount": "999999999", "currency": "USD"}}
    facts = Facts({"amount": amount, "currency": "USD"}, {}, {}, NOW)
    violation = evaluate_constraints(ceiling, facts)
    assert violation is not None
    assert violation.reason == "parameter_violation"


RUNTIME = RULES["runtime_parameter_constraint_fixtures"]


def _runtime_params() -> list[Any]:
    return [pytest.param(case, id=case["why"]) for case in RUNTIME["cases"]]


@pytest.mark.parametrize("case", _runtime_params())
def test_runtime_parameter_fixture(case: dict[str, Any]) -> None:
    ceiling = dict(RUNTIME["ceiling"])
    # The currency case states no amount: use one inside the bound, so only currency differs.
    amount = case.get("amount_usd", RUNTIME["ceiling"]["max_amount"]["amount"])
    if "ceiling_currency" in case:
        ceiling = {"max_amount": {**ceiling["max_amount"], "currency": case["ceiling_currency"]}}
    action: dict[str, object] = {"currency": "USD"}
    if amount is not None:
        action["amount"] = amount
    violation = evaluate_constraints(ceiling, Facts(action, {}, {}, NOW))
    if case["expected"] == "permit":
        assert violation is None
    else:
        assert violation is not None, case["why"]
        assert (violation.reason, violation.constraint) == ("parameter_violation", "max_amount")
