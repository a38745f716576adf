"""RFC 3339 instants: strict parsing, normalisation to UTC, one output format.

The domain never reads the clock; callers pass ``now`` in. These helpers only
convert between wire strings and timezone-aware ``datetime`` values.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from ledger.domain.errors import InvalidRequest

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})"
    r"(?:\.(?P<frac>\d{1,9}))?(?P<tz>[Zz]|[+-]\d{2}:\d{2})\Z"
)


def parse_instant(value: object, pointer: str = "") -> datetime:
    """Parse an RFC 3339 date-time with an explicit offset and return it in UTC.

    Raises ``InvalidRequest`` (located at ``pointer``) for anything else: a missing
    offset, a date-only value, a leap second, an impossible date, a non-string.
    """
    if not isinstance(value, str):
        raise InvalidRequest.at(pointer, "must be an RFC 3339 date-time string")
    match = _RFC3339.match(value)
    if match is None or len(value) > 40:
        raise InvalidRequest.at(pointer, f"{value[:64]!r} is not an RFC 3339 date-time")
    frac = (match["frac"] or "").ljust(6, "0")[:6]
    tz = match["tz"]
    if tz in ("Z", "z"):
        offset = UTC
    else:
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        if hours > 23 or minutes > 59:
            raise InvalidRequest.at(pointer, f"{value!r} has an invalid UTC offset")
        offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        parsed = datetime.fromisoformat(
            f"{match['date']}T{match['h']}:{match['m']}:{match['s']}.{frac}"
        ).replace(tzinfo=offset)
        # In UTC, an instant at either end of year 1 to 9999 may leave that range.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest.at(pointer, f"{value!r} is not a valid date-time") from None


def parse_as_of(value: object, now: datetime, pointer: str = "") -> datetime:
    """An instant to look back at (``as_of``): RFC 3339 as ``parse_instant``, and not after
    ``now``: the ledger knows the past, and what a later instant will hold is not recorded
    yet (deadlines applied to today's state would be a forecast shown as fact)."""
    instant = parse_instant(value, pointer)
    if instant > now:
        raise InvalidRequest.at(
            pointer, f"{value!r} is in the future (now is {format_instant(now)})"
        )
    return instant


def format_instant(value: datetime) -> str:
    """Render a timezone-aware instant as RFC 3339 in UTC with a ``Z`` suffix."""
    if value.tzinfo is None:
        msg = "naive datetimes are not instants"
        raise ValueError(msg)
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def epoch_seconds(value: datetime) -> int:
    """NumericDate (RFC 7519): whole seconds since the epoch, rounded down."""
    return int(value.timestamp() // 1)
