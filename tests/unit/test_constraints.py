"""Common Constraints: value syntax, the subset rule and evaluation at use time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from ledger.domain.constraints import (
    Facts,
    Violation,
    constraint_within,
    constraints_within,
    evaluate_constraints,
    validate_constraints,
)
from ledger.domain.errors import InvalidRequest

NOW = datetime(2026, 8, 1, 12, 0, tzinfo=UTC)
USD_500 = {"amount": "500.00", "currency": "USD"}
P = "/authorization_details/0/constraints"


def _rejected_at(value: object) -> str:
    with pytest.raises(InvalidRequest) as caught:
        validate_constraints(value, P)
    return caught.value.errors[0].pointer


def facts(
    *,
    action: Mapping[str, object] | None = None,
    resource: Mapping[str, object] | None = None,
    context: Mapping[str, object] | None = None,
    now: datetime = NOW,
) -> Facts:
    return Facts(
        action_properties=action or {},
        resource_properties=resource or {},
        context=context or {},
        now=now,
    )


def _evaluate(
    constraints: Mapping[str, object],
    *,
    action: Mapping[str, object] | None = None,
    resource: Mapping[str, object] | None = None,
    context: Mapping[str, object] | None = None,
    now: datetime = NOW,
) -> Violation | None:
    return evaluate_constraints(
        constraints, facts(action=action, resource=resource, context=context, now=now)
    )


# --------------------------------------------------------------------------- validation

VALID = {
    "max_amount": USD_500,
    "resource_issued_after": "2026-07-01T00:00:00Z",
    "resource_issued_before": "2026-09-30T23:59:59+02:00",
    "tenant": "acme",
    "recipient_domain": "Example.COM.",
    "time_window": {"not_before": "2026-07-01T00:00:00Z", "not_after": "2026-08-01T00:00:00Z"},
    "data_classification": ["public", "internal"],
    "allowed_tools": ["search"],
    "requires_action_approval": True,
    "terminal_when": [{"event_type": "invoice.paid", "discharge_policy": "auto"}],
}


def test_every_common_constraint_validates_and_is_returned_unchanged() -> None:
    assert validate_constraints(VALID, P) is VALID


def test_empty_constraints_object_is_valid() -> None:
    assert validate_constraints({}, P) == {}


def test_constraints_must_be_an_object() -> None:
    assert _rejected_at(["max_amount"]) == P


def test_unknown_constraint_key_is_rejected_at_its_pointer() -> None:
    assert _rejected_at({"max_speed": 3}) == f"{P}/max_speed"


def test_unknown_member_of_max_amount_is_rejected_at_its_pointer() -> None:
    value = {"max_amount": {**USD_500, "fx": "ECB"}}
    assert _rejected_at(value) == f"{P}/max_amount/fx"


def test_max_amount_needs_both_members() -> None:
    assert _rejected_at({"max_amount": {"amount": "5"}}) == f"{P}/max_amount/currency"


@pytest.mark.parametrize("amount", ["1e3", "-5", "5.", ".5", 500, "1,000", "5\n", "5.5\n"])
def test_malformed_max_amount_is_rejected(amount: object) -> None:
    value = {"max_amount": {"amount": amount, "currency": "USD"}}
    assert _rejected_at(value) == f"{P}/max_amount/amount"


def test_an_amount_has_at_most_36_integer_digits() -> None:
    longest = {"max_amount": {"amount": "9" * 36 + ".5", "currency": "USD"}}
    assert validate_constraints(longest, P) is longest
    too_long = {"max_amount": {"amount": "1" * 37, "currency": "USD"}}
    assert _rejected_at(too_long) == f"{P}/max_amount/amount"


@pytest.mark.parametrize("currency", ["usd", "US", "USDD", 840, "USD\n"])
def test_malformed_currency_is_rejected(currency: object) -> None:
    value = {"max_amount": {"amount": "5", "currency": currency}}
    assert _rejected_at(value) == f"{P}/max_amount/currency"


def test_issued_after_must_be_rfc3339() -> None:
    assert _rejected_at({"resource_issued_after": "2026-07-01"}) == f"{P}/resource_issued_after"


@pytest.mark.parametrize("tenant", ["", "t" * 257, 5])
def test_tenant_must_be_a_non_empty_string_of_at_most_256(tenant: object) -> None:
    assert _rejected_at({"tenant": tenant}) == f"{P}/tenant"


@pytest.mark.parametrize(
    "domain",
    ["", "-a.example", "a_b.example", "a..example", "x" * 64 + ".example", 7, "a.example\n"],
)
def test_recipient_domain_must_be_a_dns_name(domain: object) -> None:
    assert _rejected_at({"recipient_domain": domain}) == f"{P}/recipient_domain"


def test_recipient_domain_over_253_characters_is_rejected() -> None:
    name = ".".join(["a" * 63] * 4)  # 255 characters
    assert _rejected_at({"recipient_domain": name}) == f"{P}/recipient_domain"


def test_time_window_needs_a_bound() -> None:
    assert _rejected_at({"time_window": {}}) == f"{P}/time_window"


def test_time_window_must_be_ordered() -> None:
    window = {"not_before": "2026-08-01T00:00:00Z", "not_after": "2026-08-01T00:00:00Z"}
    assert _rejected_at({"time_window": window}) == f"{P}/time_window/not_after"


def test_time_window_rejects_unknown_members() -> None:
    window = {"not_before": "2026-08-01T00:00:00Z", "until": "x"}
    assert _rejected_at({"time_window": window}) == f"{P}/time_window/until"


@pytest.mark.parametrize("key", ["data_classification", "allowed_tools"])
def test_string_sets_reject_duplicates_at_the_item(key: str) -> None:
    assert _rejected_at({key: ["a", "a"]}) == f"{P}/{key}/1"


@pytest.mark.parametrize("key", ["data_classification", "allowed_tools"])
def test_string_sets_must_not_be_empty(key: str) -> None:
    assert _rejected_at({key: []}) == f"{P}/{key}"


@pytest.mark.parametrize("key", ["data_classification", "allowed_tools"])
def test_string_sets_hold_at_most_64_items(key: str) -> None:
    assert _rejected_at({key: [str(i) for i in range(65)]}) == f"{P}/{key}"


@pytest.mark.parametrize("key", ["data_classification", "allowed_tools"])
def test_string_set_items_are_non_empty_strings_of_at_most_128(key: str) -> None:
    assert _rejected_at({key: ["ok", "x" * 129]}) == f"{P}/{key}/1"
    assert _rejected_at({key: [""]}) == f"{P}/{key}/0"


def test_requires_action_approval_must_be_boolean() -> None:
    assert _rejected_at({"requires_action_approval": "yes"}) == f"{P}/requires_action_approval"


def test_terminal_when_must_not_be_empty() -> None:
    assert _rejected_at({"terminal_when": []}) == f"{P}/terminal_when"


def test_terminal_when_condition_needs_event_type() -> None:
    value = {"terminal_when": [{"discharge_policy": "auto"}]}
    assert _rejected_at(value) == f"{P}/terminal_when/0/event_type"


def test_terminal_when_rejects_unknown_members() -> None:
    value = {"terminal_when": [{"event_type": "x", "when": "now"}]}
    assert _rejected_at(value) == f"{P}/terminal_when/0/when"


def test_pointer_tokens_are_escaped() -> None:
    assert _rejected_at({"a/b~c": 1}) == f"{P}/a~1b~0c"


# --------------------------------------------------------------------------- subset


def test_max_amount_within_when_smaller_in_value_space() -> None:
    assert constraint_within("max_amount", {"amount": "499.999", "currency": "USD"}, USD_500)
    assert constraint_within("max_amount", {"amount": "500", "currency": "USD"}, USD_500)
    assert not constraint_within("max_amount", {"amount": "500.01", "currency": "USD"}, USD_500)


def test_max_amount_in_another_currency_is_never_within() -> None:
    assert not constraint_within("max_amount", {"amount": "1", "currency": "EUR"}, USD_500)


def test_issued_after_within_when_later_or_equal() -> None:
    ref = "2026-07-01T00:00:00Z"
    assert constraint_within("resource_issued_after", "2026-07-01T02:00:00+02:00", ref)
    assert constraint_within("resource_issued_after", "2026-07-02T00:00:00Z", ref)
    assert not constraint_within("resource_issued_after", "2026-06-30T00:00:00Z", ref)


def test_issued_before_within_when_earlier_or_equal() -> None:
    ref = "2026-09-30T00:00:00Z"
    assert constraint_within("resource_issued_before", "2026-09-29T00:00:00Z", ref)
    assert not constraint_within("resource_issued_before", "2026-10-01T00:00:00Z", ref)


def test_tenant_within_only_when_equal() -> None:
    assert constraint_within("tenant", "acme", "acme")
    assert not constraint_within("tenant", "acme-eu", "acme")


def test_recipient_domain_within_when_equal_or_subdomain_case_insensitively() -> None:
    assert constraint_within("recipient_domain", "Mail.Example.com.", "example.COM")
    assert not constraint_within("recipient_domain", "badexample.com", "example.com")


def test_time_window_within_when_inside() -> None:
    ref = {"not_before": "2026-07-01T00:00:00Z", "not_after": "2026-08-01T00:00:00Z"}
    inside = {"not_before": "2026-07-02T00:00:00Z", "not_after": "2026-07-03T00:00:00Z"}
    assert constraint_within("time_window", inside, ref)
    assert not constraint_within("time_window", {"not_before": "2026-07-02T00:00:00Z"}, ref)


def test_time_window_absent_reference_bound_is_unbounded() -> None:
    ref = {"not_after": "2026-08-01T00:00:00Z"}
    early = {"not_before": "2000-01-01T00:00:00Z", "not_after": "2026-07-01T00:00:00Z"}
    assert constraint_within("time_window", early, ref)


@pytest.mark.parametrize("key", ["data_classification", "allowed_tools"])
def test_string_set_within_when_subset(key: str) -> None:
    assert constraint_within(key, ["a"], ["a", "b"])
    assert not constraint_within(key, ["a", "c"], ["a", "b"])


def test_terminal_when_candidate_keeps_every_reference_condition() -> None:
    ref = [{"event_type": "a"}]
    assert constraint_within("terminal_when", [{"event_type": "b"}, {"event_type": "a"}], ref)
    assert not constraint_within("terminal_when", [{"event_type": "b"}], ref)


def test_unknown_key_is_never_within() -> None:
    assert not constraint_within("max_speed", 1, 1)


def test_malformed_value_is_never_within() -> None:
    assert not constraint_within("max_amount", {"amount": "lots"}, USD_500)


def test_constraints_within_when_equal() -> None:
    assert constraints_within(VALID, VALID) is None


def test_candidate_may_add_constraints() -> None:
    assert constraints_within({"tenant": "acme"}, None) is None


def test_missing_reference_constraint_is_named() -> None:
    reason = constraints_within({}, {"max_amount": USD_500})
    assert reason == "constraint 'max_amount' is absent (the ceiling has it)"


def test_broader_amount_reason_shows_both_values() -> None:
    reason = constraints_within(
        {"max_amount": {"amount": "600.00", "currency": "USD"}}, {"max_amount": USD_500}
    )
    assert reason == "constraint 'max_amount' 600.00 USD exceeds 500.00 USD"


def test_currency_mismatch_reason_names_both_currencies() -> None:
    reason = constraints_within(
        {"max_amount": {"amount": "1", "currency": "EUR"}}, {"max_amount": USD_500}
    )
    assert reason is not None
    assert "EUR" in reason
    assert "USD" in reason


def test_approval_false_equals_absent() -> None:
    assert constraints_within({}, {"requires_action_approval": False}) is None
    assert constraints_within({"requires_action_approval": False}, {}) is None


def test_approval_may_not_be_removed() -> None:
    assert constraints_within({}, {"requires_action_approval": True}) is not None
    reason = constraints_within(
        {"requires_action_approval": False}, {"requires_action_approval": True}
    )
    assert reason is not None
    assert "requires_action_approval" in reason


def test_string_set_reason_names_the_added_value() -> None:
    reason = constraints_within({"allowed_tools": ["a", "rm"]}, {"allowed_tools": ["a"]})
    assert reason is not None
    assert "rm" in reason


# --------------------------------------------------------------------------- evaluation


def test_no_constraints_is_satisfied() -> None:
    assert _evaluate({}) is None


def test_max_amount_permits_within_the_bound() -> None:
    action = {"amount": "499.99", "currency": "USD"}
    assert _evaluate({"max_amount": USD_500}, action=action) is None


def test_max_amount_denies_over_the_bound() -> None:
    violation = _evaluate({"max_amount": USD_500}, action={"amount": "500.01", "currency": "USD"})
    assert violation is not None
    assert violation.reason == "parameter_violation"
    assert violation.constraint == "max_amount"


def test_max_amount_falls_back_to_context() -> None:
    assert _evaluate({"max_amount": USD_500}, context={"amount": "5", "currency": "USD"}) is None


def test_max_amount_action_property_wins_over_context() -> None:
    violation = _evaluate(
        {"max_amount": USD_500},
        action={"amount": "900", "currency": "USD"},
        context={"amount": "5", "currency": "USD"},
    )
    assert violation is not None


def test_max_amount_number_input_is_a_violation() -> None:
    violation = _evaluate({"max_amount": USD_500}, action={"amount": 5, "currency": "USD"})
    assert violation is not None
    assert violation.reason == "parameter_violation"


def test_max_amount_missing_currency_is_a_violation() -> None:
    violation = _evaluate({"max_amount": USD_500}, action={"amount": "5"})
    assert violation is not None
    assert violation.reason == "parameter_violation"


def test_allowed_tools_permits_a_listed_tool() -> None:
    assert _evaluate({"allowed_tools": ["search", "fetch"]}, action={"tool": "fetch"}) is None


def test_allowed_tools_denies_an_unlisted_tool() -> None:
    violation = _evaluate({"allowed_tools": ["search"]}, action={"tool": "shell"})
    assert violation is not None
    assert violation.constraint == "allowed_tools"


def test_allowed_tools_denies_a_missing_tool() -> None:
    violation = _evaluate({"allowed_tools": ["search"]})
    assert violation is not None
    assert violation.reason == "parameter_violation"


def test_recipient_domain_permits_an_address_in_a_subdomain() -> None:
    constraints = {"recipient_domain": "example.com"}
    assert _evaluate(constraints, action={"recipient": "a@b@Mail.Example.com"}) is None


def test_recipient_domain_permits_a_bare_domain() -> None:
    constraints = {"recipient_domain": "example.com"}
    assert _evaluate(constraints, action={"recipient": "example.com."}) is None


def test_recipient_domain_denies_another_domain() -> None:
    violation = _evaluate({"recipient_domain": "example.com"}, action={"recipient": "a@evil.com"})
    assert violation is not None
    assert violation.constraint == "recipient_domain"


def test_recipient_domain_denies_a_lookalike_suffix() -> None:
    violation = _evaluate(
        {"recipient_domain": "example.com"}, action={"recipient": "a@notexample.com"}
    )
    assert violation is not None


def test_recipient_domain_denies_a_missing_recipient() -> None:
    assert _evaluate({"recipient_domain": "example.com"}) is not None


WINDOW = {"not_before": "2026-08-01T00:00:00Z", "not_after": "2026-08-02T00:00:00Z"}


def test_time_window_permits_inside() -> None:
    assert _evaluate({"time_window": WINDOW}) is None


def test_time_window_bounds_are_inclusive() -> None:
    assert _evaluate({"time_window": WINDOW}, now=datetime(2026, 8, 2, tzinfo=UTC)) is None


def test_time_window_denies_after_not_after() -> None:
    violation = _evaluate({"time_window": WINDOW}, now=datetime(2026, 8, 3, tzinfo=UTC))
    assert violation is not None
    assert violation.constraint == "time_window"


def test_time_window_denies_before_not_before() -> None:
    violation = _evaluate({"time_window": WINDOW}, now=datetime(2026, 7, 1, tzinfo=UTC))
    assert violation is not None


def test_tenant_permits_the_same_tenant() -> None:
    assert _evaluate({"tenant": "acme"}, context={"tenant": "acme"}) is None


def test_tenant_denies_another_tenant() -> None:
    violation = _evaluate({"tenant": "acme"}, context={"tenant": "umbrella"})
    assert violation is not None
    assert violation.constraint == "tenant"


def test_tenant_denies_a_missing_tenant() -> None:
    assert _evaluate({"tenant": "acme"}) is not None


def test_data_classification_permits_listed_labels() -> None:
    constraints = {"data_classification": ["public", "internal"]}
    assert _evaluate(constraints, resource={"data_classification": "internal"}) is None
    assert _evaluate(constraints, resource={"data_classification": ["public", "internal"]}) is None


def test_data_classification_denies_an_unlisted_label() -> None:
    violation = _evaluate(
        {"data_classification": ["public"]},
        resource={"data_classification": ["public", "secret"]},
    )
    assert violation is not None
    assert violation.constraint == "data_classification"


def test_data_classification_denies_a_missing_label() -> None:
    assert _evaluate({"data_classification": ["public"]}) is not None


ISSUED = {"resource_issued_after": "2026-07-01T00:00:00Z"}


def test_issued_after_permits_a_later_resource() -> None:
    assert _evaluate(ISSUED, resource={"issued_at": "2026-07-15T00:00:00Z"}) is None


def test_issued_after_denies_an_earlier_resource() -> None:
    violation = _evaluate(ISSUED, resource={"issued_at": "2026-06-30T23:59:59Z"})
    assert violation is not None
    assert violation.constraint == "resource_issued_after"


@pytest.mark.parametrize("issued_at", ["yesterday", "0001-01-01T00:00:00+01:00"])
def test_issued_after_denies_a_malformed_issued_at(issued_at: str) -> None:
    violation = _evaluate(ISSUED, resource={"issued_at": issued_at})
    assert violation is not None
    assert violation.reason == "parameter_violation"


def test_issued_before_permits_an_earlier_resource() -> None:
    constraints = {"resource_issued_before": "2026-09-30T23:59:59Z"}
    assert _evaluate(constraints, resource={"issued_at": "2026-09-30T23:59:59Z"}) is None


def test_issued_before_denies_a_later_resource() -> None:
    constraints = {"resource_issued_before": "2026-09-30T23:59:59Z"}
    violation = _evaluate(constraints, resource={"issued_at": "2026-10-01T00:00:00Z"})
    assert violation is not None
    assert violation.constraint == "resource_issued_before"


def test_issued_before_denies_a_missing_issued_at() -> None:
    assert _evaluate({"resource_issued_before": "2026-09-30T23:59:59Z"}) is not None


def test_requires_action_approval_true_needs_approval() -> None:
    violation = _evaluate({"requires_action_approval": True})
    assert violation is not None
    assert (violation.reason, violation.constraint) == (
        "approval_required",
        "requires_action_approval",
    )


def test_requires_action_approval_false_is_satisfied() -> None:
    assert _evaluate({"requires_action_approval": False}) is None


def test_terminal_when_does_not_gate_a_decision() -> None:
    assert _evaluate({"terminal_when": [{"event_type": "invoice.paid"}]}) is None


def test_terminal_when_never_permits_what_another_constraint_denies() -> None:
    violation = _evaluate(
        {"terminal_when": [{"event_type": "invoice.paid"}], "tenant": "acme"},
        context={"tenant": "other"},
    )
    assert violation is not None


def test_unknown_constraint_fails_closed() -> None:
    violation = _evaluate({"max_speed": 3})
    assert violation is not None
    assert violation.reason == "constraint_unsupported"


def test_malformed_constraint_value_fails_closed() -> None:
    action = {"amount": "1", "currency": "USD"}
    violation = _evaluate({"max_amount": {"amount": "5"}}, action=action)
    assert violation is not None
    assert violation.reason == "constraint_unsupported"


def test_first_violation_in_sorted_key_order_is_returned() -> None:
    violation = _evaluate({"tenant": "acme", "allowed_tools": ["search"]})
    assert violation is not None
    assert violation.constraint == "allowed_tools"
