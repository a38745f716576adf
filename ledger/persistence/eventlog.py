"""Direct reads of the stored log that the library does not offer: positions of given
events, per-aggregate history with positions and links, and the chain rows in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent

from ledger.domain.events import LedgerEvent
from ledger.persistence.chain import GENESIS, ChainRow
from ledger.persistence.database import Cursor, Database, Dialect


@dataclass(frozen=True)
class LoggedEvent:
    """A domain event with where it sits in the log."""

    position: int
    event: LedgerEvent
    topic: str
    chain_hash: bytes | None


@dataclass(frozen=True)
class HeadLink:
    """The chain's head: the newest event's position and link hash, and a count of events
    (over a range the caller chose)."""

    position: int
    chain_hash: bytes
    counted: int


class EventLog:
    def __init__(self, database: Database, mapper: Mapper[str]) -> None:
        self._db = database
        self._mapper = mapper
        if database.dialect is Dialect.POSTGRES:
            self._history_sql = (
                "SELECT notification_id AS position, originator_id, originator_version, topic, "
                "state, chain_hash FROM ledger_events WHERE originator_id = %s "
                "ORDER BY originator_version"
            )
            self._position_sql = (
                "SELECT notification_id AS position FROM ledger_events "
                "WHERE originator_id = %s AND originator_version = %s"
            )
            self._page_sql = (
                "SELECT notification_id AS position, originator_id, originator_version, topic, "
                "state, chain_hash FROM ledger_events WHERE notification_id > %s "
                "ORDER BY notification_id LIMIT %s"
            )
        else:
            self._history_sql = (
                "SELECT e.rowid AS position, e.originator_id, e.originator_version, e.topic, "
                "e.state, c.hash AS chain_hash FROM stored_events e "
                "LEFT JOIN stored_events_chain c ON c.notification_id = e.rowid "
                "WHERE e.originator_id = %s ORDER BY e.originator_version"
            )
            self._position_sql = (
                "SELECT rowid AS position FROM stored_events "
                "WHERE originator_id = %s AND originator_version = %s"
            )
            self._page_sql = (
                "SELECT e.rowid AS position, e.originator_id, e.originator_version, e.topic, "
                "e.state, c.hash AS chain_hash FROM stored_events e "
                "LEFT JOIN stored_events_chain c ON c.notification_id = e.rowid "
                "WHERE e.rowid > %s ORDER BY e.rowid LIMIT %s"
            )

    def history(self, originator_id: str) -> list[LoggedEvent]:
        rows = self._db.fetchall(self._history_sql, (originator_id,))
        return [self._logged(row) for row in rows]

    def page(self, after: int, limit: int) -> list[LoggedEvent]:
        """Up to ``limit`` events after position ``after``, in position order."""
        return [self._logged(row) for row in self._db.fetchall(self._page_sql, (after, limit))]

    def _logged(self, row: dict[str, Any]) -> LoggedEvent:
        stored = StoredEvent(
            originator_id=row["originator_id"],
            originator_version=int(row["originator_version"]),
            topic=row["topic"],
            state=bytes(row["state"]),
        )
        event = self._mapper.to_domain_event(stored)
        assert isinstance(event, LedgerEvent)
        chain = row["chain_hash"]
        return LoggedEvent(
            position=int(row["position"]),
            event=event,
            topic=row["topic"],
            chain_hash=None if chain is None else bytes(chain),
        )

    def position_of(self, originator_id: str, version: int) -> int | None:
        row = self._db.fetchone(self._position_sql, (originator_id, version))
        return None if row is None else int(row["position"])

    def head_link(self, cur: Cursor, *, counted_after: int = 0) -> HeadLink | None:
        """The newest event's position and link hash, and how many events lie after
        ``counted_after`` up to it, read on ``cur`` (None for an empty log)."""
        if self._db.dialect is Dialect.POSTGRES:
            cur.execute(
                "SELECT notification_id AS position, chain_hash FROM ledger_events "
                "ORDER BY notification_id DESC LIMIT 1"
            )
            count_sql = (
                "SELECT count(*) AS n FROM ledger_events "
                "WHERE notification_id > %s AND notification_id <= %s"
            )
        else:
            cur.execute(
                "SELECT e.rowid AS position, c.hash AS chain_hash FROM stored_events e "
                "LEFT JOIN stored_events_chain c ON c.notification_id = e.rowid "
                "ORDER BY e.rowid DESC LIMIT 1"
            )
            count_sql = "SELECT count(*) AS n FROM stored_events WHERE rowid > %s AND rowid <= %s"
        row = cur.fetchone()
        if row is None or row["chain_hash"] is None:
            return None
        position = int(row["position"])
        cur.execute(count_sql, (counted_after, position))
        counted = cur.fetchone()
        assert counted is not None
        return HeadLink(position, bytes(row["chain_hash"]), int(counted["n"]))

    def linked_rows(self, originator_ids: Iterable[str]) -> list[tuple[ChainRow, bytes]]:
        """Every event of these aggregates in position order, each with its predecessor's
        link hash (its ``chain_prev``'s; the genesis value for the first event), so that
        each link can be recomputed on its own."""
        wanted = sorted(set(originator_ids))
        found: list[tuple[ChainRow, bytes]] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("%s" for _ in chunk)
            for row in self._db.fetchall(self._linked_sql(marks), chunk):
                link = _chain_row(row)
                prev = _as_bytes(row["prev_hash"])
                found.append((link, GENESIS if prev is None else prev))
        found.sort(key=lambda pair: pair[0].position)
        return found

    def _linked_sql(self, marks: str) -> str:
        if self._db.dialect is Dialect.POSTGRES:
            return (
                "SELECT e.notification_id AS position, e.originator_id, e.originator_version, "  # noqa: S608 - placeholders only
                "e.topic, e.state, e.chain_prev, e.chain_hash, p.chain_hash AS prev_hash "
                "FROM ledger_events e LEFT JOIN ledger_events p "
                "ON p.notification_id = e.chain_prev "
                f"WHERE e.originator_id IN ({marks})"
            )
        return (
            "SELECT e.rowid AS position, e.originator_id, e.originator_version, e.topic, "  # noqa: S608 - placeholders only
            "e.state, c.prev_id AS chain_prev, c.hash AS chain_hash, p.hash AS prev_hash "
            "FROM stored_events e "
            "LEFT JOIN stored_events_chain c ON c.notification_id = e.rowid "
            "LEFT JOIN stored_events_chain p ON p.notification_id = c.prev_id "
            f"WHERE e.originator_id IN ({marks})"
        )

    def chain_rows(self, batch: int = 1000) -> Iterator[ChainRow]:
        """Every position in order, events and links joined (a link without its event,
        or an event without its link, appears with the missing half as None)."""
        after = -1
        with self._db.snapshot() as cur:
            while True:
                cur.execute(self._chain_page_sql(), (after, after, batch))
                rows = cur.fetchall()
                if not rows:
                    return
                for row in rows:
                    yield _chain_row(row)
                    after = int(row["position"])

    def _chain_page_sql(self) -> str:
        if self._db.dialect is Dialect.POSTGRES:
            return (
                "SELECT notification_id AS position, originator_id, originator_version, topic, "
                "state, chain_prev, chain_hash FROM ledger_events "
                "WHERE notification_id > %s AND notification_id > %s "
                "ORDER BY notification_id LIMIT %s"
            )
        # Events and side-table links, merged by position (either half may be missing).
        return (
            "SELECT p.position AS position, e.originator_id, e.originator_version, e.topic, "
            "e.state, c.prev_id AS chain_prev, c.hash AS chain_hash FROM ("
            "  SELECT rowid AS position FROM stored_events WHERE rowid > %s"
            "  UNION SELECT notification_id FROM stored_events_chain WHERE notification_id > %s"
            ") p LEFT JOIN stored_events e ON e.rowid = p.position "
            "LEFT JOIN stored_events_chain c ON c.notification_id = p.position "
            "ORDER BY p.position LIMIT %s"
        )


def _chain_row(row: dict[str, object]) -> ChainRow:
    state = row["state"]
    chain = row["chain_hash"]
    version = row["originator_version"]
    prev = row["chain_prev"]
    return ChainRow(
        position=int(str(row["position"])),
        originator_id=None if row["originator_id"] is None else str(row["originator_id"]),
        version=None if version is None else int(str(version)),
        topic=None if row["topic"] is None else str(row["topic"]),
        state=_as_bytes(state),
        chain_prev=None if prev is None else int(str(prev)),
        chain_hash=_as_bytes(chain),
    )


def _as_bytes(value: object) -> bytes | None:
    """Stored bytes as bytes. Text (what SQLite's ``||`` makes of a BLOB) is taken as its
    UTF-8 bytes, so a tampered row is reported as a mismatch rather than crashing the
    verifier."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")
