"""RFC 3339 instants: what the service reads, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import parse_instant


def test_an_instant_with_an_offset_is_read_in_utc() -> None:
    assert parse_instant("2026-12-05T12:00:00+02:00") == datetime(2026, 12, 5, 10, tzinfo=UTC)


def test_the_last_second_of_year_9999_in_utc_is_an_instant() -> None:
    assert parse_instant("9999-12-31T23:59:59Z").year == 9999


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_instant_that_is_out_of_range_in_utc_is_invalid(value: str) -> None:
    # (Once an OverflowError: a server error for any request carrying such an instant.)
    with pytest.raises(InvalidRequest, match="not a valid date-time"):
        parse_instant(value, "/expires_at")
