"""Read models that keep each aggregate's current state, plus columns to filter on.

A row holds a snapshot of the aggregate (``ledger.persistence.snapshots``). An
event is applied by thawing the snapshot and calling the event's own ``mutate``,
the same code the write side runs, so the read model cannot drift from the domain.
"""

from __future__ import annotations

import base64
import binascii
from abc import abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from eventsourcing.domain import BaseAggregate

from ledger.domain.errors import InvalidRequest
from ledger.domain.events import LedgerCreated, LedgerEvent
from ledger.persistence.database import Cursor, Database
from ledger.persistence.snapshots import StateCodec
from projections.follower import DurableProjection, Item

A = TypeVar("A", bound=BaseAggregate[str])


def event_topics(aggregate_class: type[BaseAggregate[str]]) -> frozenset[str]:
    """Every stored topic of the aggregate's nested event classes."""
    return frozenset(
        value.TOPIC
        for value in vars(aggregate_class).values()
        if isinstance(value, type) and issubclass(value, LedgerEvent) and hasattr(value, "TOPIC")
    )


def micros(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000)


def encode_cursor(created_position: int) -> str:
    return base64.urlsafe_b64encode(f"p{created_position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("p"):
            raise ValueError(text)
        return int(text[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest.at("/cursor", "is not a cursor this service issued") from None


class AggregateTable(DurableProjection, Generic[A]):
    """A table of current aggregate states keyed by aggregate id."""

    table: str
    key: str
    aggregate_class: type[A]

    def __init__(self, codec: StateCodec) -> None:
        self.codec = codec
        self.topics = event_topics(self.aggregate_class)

    @abstractmethod
    def columns(self, aggregate: A) -> Mapping[str, Any]:
        """The filter/sort columns of a row (besides key, position, version, snapshot)."""

    def apply(self, cur: Cursor, item: Item) -> None:
        event = item.event
        if isinstance(event, LedgerCreated):
            aggregate = cast("BaseAggregate[str] | None", event.mutate(None))
            assert isinstance(aggregate, self.aggregate_class)
            columns = dict(self.columns(aggregate))
            names = [self.key, "created_position", "position", "version", "snapshot", *columns]
            values = [
                aggregate.id,
                item.position,
                item.position,
                aggregate.version,
                self.codec.freeze(aggregate),
                *columns.values(),
            ]
            cur.execute(
                f"INSERT INTO {self.table} ({', '.join(names)}) "  # noqa: S608 - fixed identifiers
                f"VALUES ({', '.join(['%s'] * len(values))})",
                values,
            )
            return
        cur.execute(
            f"SELECT snapshot FROM {self.table} WHERE {self.key} = %s",  # noqa: S608
            (event.originator_id,),
        )
        row = cur.fetchone()
        if row is None:
            msg = f"{self.table}: event at {item.position} for unknown {event.originator_id}"
            raise LookupError(msg)
        current = self.codec.thaw(bytes(row["snapshot"]))
        assert isinstance(current, self.aggregate_class)
        event.mutate(current)
        columns = dict(self.columns(current))
        assignments = ", ".join(f"{name} = %s" for name in columns)
        cur.execute(
            f"UPDATE {self.table} SET position = %s, version = %s, snapshot = %s, "  # noqa: S608
            f"{assignments} WHERE {self.key} = %s",
            [
                item.position,
                current.version,
                self.codec.freeze(current),
                *columns.values(),
                current.id,
            ],
        )

    def reset(self, cur: Cursor) -> None:
        cur.execute(f"DELETE FROM {self.table}")  # noqa: S608

    # ------------------------------------------------------------------ queries

    def get(self, db: Database, aggregate_id: str) -> A | None:
        row = db.fetchone(
            f"SELECT snapshot FROM {self.table} WHERE {self.key} = %s",  # noqa: S608
            (aggregate_id,),
        )
        if row is None:
            return None
        aggregate = self.codec.thaw(bytes(row["snapshot"]))
        assert isinstance(aggregate, self.aggregate_class)
        return aggregate

    def page(
        self,
        db: Database,
        *,
        filters: Mapping[str, object | None],
        cursor: str | None,
        limit: int,
    ) -> tuple[list[A], str | None]:
        """One page in creation order, and the cursor of the next page (None at the end)."""
        rows = self.positioned(db, filters=filters, after=decode_cursor(cursor), limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0]) if more else None
        return [aggregate for _, aggregate in rows], next_cursor

    def positioned(
        self, db: Database, *, filters: Mapping[str, object | None], after: int, limit: int
    ) -> list[tuple[int, A]]:
        """Up to ``limit`` rows created after log position ``after``, in creation order, as
        (created position, aggregate): positions are the log's, so pages of several boards
        merge into one list in log order (the console's inbox)."""
        clauses = ["created_position > %s"]
        params: list[object] = [after]
        for column, value in filters.items():
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        params.append(limit)
        rows = db.fetchall(
            f"SELECT created_position, snapshot FROM {self.table} "  # noqa: S608
            f"WHERE {' AND '.join(clauses)} ORDER BY created_position LIMIT %s",
            params,
        )
        items = []
        for row in rows:
            aggregate = self.codec.thaw(bytes(row["snapshot"]))
            assert isinstance(aggregate, self.aggregate_class)
            items.append((int(row["created_position"]), aggregate))
        return items

    def due(self, db: Database, now: datetime, limit: int = 100) -> list[str]:
        """Ids whose next clock-driven transition is due."""
        rows = db.fetchall(
            f"SELECT {self.key} AS id FROM {self.table} "  # noqa: S608
            "WHERE next_deadline IS NOT NULL AND next_deadline <= %s "
            "ORDER BY next_deadline LIMIT %s",
            (micros(now), limit),
        )
        return [str(row["id"]) for row in rows]
