"""Action identifiers and families: syntax, containment and coverage."""

from __future__ import annotations

import pytest

from ledger.domain.actions import action_covers, action_within, is_family, validate_action
from ledger.domain.errors import InvalidRequest


@pytest.mark.parametrize(
    "value", ["invoices.read", "journal-entries.write", "a:b_c-d.e", "invoices.*", "x.q3.*"]
)
def test_valid_action_is_returned_unchanged(value: str) -> None:
    assert validate_action(value, "/a") is value


@pytest.mark.parametrize(
    "value", ["", "*", ".*", "invoices.read*", "in voices", "inv/oices", "invoices.*.read", "é"]
)
def test_invalid_action_is_rejected_at_its_pointer(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_action(value, "/authorization_details/0/actions/1")
    assert caught.value.errors[0].pointer == "/authorization_details/0/actions/1"


def test_non_string_action_is_rejected() -> None:
    with pytest.raises(InvalidRequest):
        validate_action(7, "/a")


def test_action_longer_than_128_characters_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="128"):
        validate_action("a" * 129, "/a")


def test_action_of_128_characters_is_accepted() -> None:
    assert validate_action("a" * 128, "/a") == "a" * 128


def test_family_is_recognised_by_its_suffix() -> None:
    assert is_family("invoices.*")
    assert not is_family("invoices.read")


def test_literal_within_equal_literal_only() -> None:
    assert action_within("invoices.read", "invoices.read")
    assert not action_within("invoices.read", "invoices.write")


def test_literal_within_family_at_dot_boundary() -> None:
    assert action_within("invoices.read", "invoices.*")
    assert not action_within("invoicesX.read", "invoices.*")


def test_family_does_not_cover_its_bare_name() -> None:
    assert not action_within("invoices", "invoices.*")


def test_narrower_family_within_family() -> None:
    assert action_within("invoices.q3.*", "invoices.*")
    assert action_within("invoices.*", "invoices.*")
    assert not action_within("invoices.*", "invoices.q3.*")


def test_family_never_within_literal() -> None:
    assert not action_within("invoices.*", "invoices.read")


def test_action_matching_is_case_sensitive() -> None:
    assert not action_within("Invoices.read", "invoices.*")


def test_family_covers_a_concrete_action() -> None:
    assert action_covers("invoices.*", "invoices.q3.read")


def test_literal_covers_only_itself() -> None:
    assert action_covers("invoices.read", "invoices.read")
    assert not action_covers("invoices.read", "invoices.write")


def test_requested_family_is_never_covered() -> None:
    assert not action_covers("invoices.*", "invoices.*")
    assert not action_covers("invoices.*", "invoices.q3.*")


def test_malformed_requested_action_is_never_covered() -> None:
    assert not action_covers("invoices.*", "invoices.a b")
