"""When outstanding metered reservations expire, written in the same transaction as the Meter
events that make and end them (SPEC 7.3 metering).

The Meter writer passes ``ReservationDeadlines`` to ``Application.save(...,
reservations=...)``; the recorder writes them beside the events, so the table lists exactly
the reservations whose ``Reserved`` event committed and whose end did not. The scheduler of
any replica asks ``due_meters`` which Meters hold a reservation to release; the Meter's own
version check makes each release happen once. This module owns the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.persistence.database import Database
from ledger.persistence.sqlite_rows import chunks, flat, in_list, values

METER_PREFIX = "meter:"

#: SQLite: followed by ``sqlite_rows.values`` / ``sqlite_rows.in_list``.
INSERT_VALUES_SQL = (
    "INSERT INTO reservation_deadlines (evaluation_id, meter_id, expires_at) VALUES "
)
DELETE_IN_SQL = "DELETE FROM reservation_deadlines WHERE evaluation_id IN "
INSERT_MANY_SQL = (
    "INSERT INTO reservation_deadlines (evaluation_id, meter_id, expires_at) "
    "SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[])"
)
DELETE_MANY_SQL = "DELETE FROM reservation_deadlines WHERE evaluation_id = ANY(%b::text[])"
# (``%b``: the arrays go in binary. As text, psycopg quotes every element through regular
# expressions, several µs a row.)


@dataclass(frozen=True)
class ReservationDeadlines:
    """The deadline rows one save adds (evaluation id, meter id, expiry in epoch µs) and
    removes (evaluation ids)."""

    added: tuple[tuple[str, str, int], ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def write(self, cursor: Any, *, placeholder: str = "%s", **options: Any) -> None:
        """Apply the rows through ``cursor`` (PostgreSQL: ``%s``; SQLite: ``?``)."""
        if placeholder == "?":  # SQLite: a few multi-row statements (``sqlite_rows``)
            for start, size in chunks(len(self.added), 3):
                cursor.execute(
                    INSERT_VALUES_SQL + values(size, 3), flat(self.added[start : start + size])
                )
            for start, size in chunks(len(self.removed), 1):
                cursor.execute(DELETE_IN_SQL + in_list(size), self.removed[start : start + size])
            return
        # PostgreSQL: one statement each, whatever the number of rows (arrays).
        if self.added:
            ids, meters, instants = (list(column) for column in zip(*self.added, strict=True))
            cursor.execute(INSERT_MANY_SQL, (ids, meters, instants), **options)
        if self.removed:
            cursor.execute(DELETE_MANY_SQL, (list(self.removed),), **options)


def micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def due_meters(database: Database, now: datetime, limit: int = 100) -> list[str]:
    """The Missions whose Meter holds a reservation due by ``now`` (soonest first)."""
    rows = database.fetchall(
        "SELECT meter_id, MIN(expires_at) AS soonest FROM reservation_deadlines "
        "WHERE expires_at <= %s GROUP BY meter_id ORDER BY soonest LIMIT %s",
        (micros(now), limit),
    )
    return [str(row["meter_id"]).removeprefix(METER_PREFIX) for row in rows]
