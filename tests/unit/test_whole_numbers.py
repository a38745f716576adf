"""Whole numbers from request text are ASCII digits only, and bounded."""

from __future__ import annotations

import pytest

from api.whole_numbers import whole_number


def test_ascii_digits_are_a_whole_number() -> None:
    assert whole_number("0") == 0
    assert whole_number("9" * 18) == 10**18 - 1


@pytest.mark.parametrize(
    "text", ["", "-1", "+1", " 1", "1.0", "\u00b2", "\u0661", "\uff11", "9" * 19, "1" * 5_000]
)
def test_anything_else_is_not(text: str) -> None:
    assert whole_number(text) is None


def test_the_bound_is_the_callers() -> None:
    assert whole_number("1" * 9, max_digits=9) == 111_111_111
    assert whole_number("1" * 10, max_digits=9) is None
