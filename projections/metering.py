"""When outstanding reservations expire: the read model the scheduler asks for Meters with a
reservation to release (SPEC 7.3 metering).

One row per outstanding reservation (``Reserved`` adds it; ``UsageCommitted`` and
``Released`` remove it). The reservations themselves live in the Meter aggregates; this
table only says which Meter to look at, and when. It trails the log like the signal log
(nothing waits for it): a release found here a little late is released a little late, never
twice (the Meter's own version check decides that).
"""

from __future__ import annotations

from datetime import datetime

from ledger.domain.metering import Meter
from ledger.persistence.database import Cursor, Database
from projections.aggregate_tables import event_topics, micros
from projections.follower import DurableProjection, Item

_PREFIX = "meter:"


class ReservationDeadlines(DurableProjection):
    name = "reservation_deadlines"
    topics = event_topics(Meter)

    def apply(self, cur: Cursor, item: Item) -> None:
        event = item.event
        if isinstance(event, Meter.Reserved):
            cur.execute(
                "INSERT INTO reservation_deadlines (evaluation_id, meter_id, expires_at) "
                "VALUES (%s, %s, %s)",
                (event.evaluation_id, event.originator_id, micros(event.expires_at)),
            )
        elif isinstance(event, Meter.UsageCommitted | Meter.Released):
            cur.execute(
                "DELETE FROM reservation_deadlines WHERE evaluation_id = %s",
                (event.evaluation_id,),
            )

    def reset(self, cur: Cursor) -> None:
        cur.execute("DELETE FROM reservation_deadlines")

    def due(self, db: Database, now: datetime, limit: int = 100) -> list[str]:
        """The Missions with a reservation whose expiry has come (soonest first)."""
        rows = db.fetchall(
            "SELECT meter_id, MIN(expires_at) AS soonest FROM reservation_deadlines "
            "WHERE expires_at <= %s GROUP BY meter_id ORDER BY soonest LIMIT %s",
            (micros(now), limit),
        )
        return [str(row["meter_id"]).removeprefix(_PREFIX) for row in rows]
