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
                link = ChainRow(
                    int(row["position"]),
                    row["originator_id"],
                    row["originator_version"],
                    row["topic"],
                    _as_bytes(row["state"]),
                    row["chain_prev"],
                    _as_bytes(row["chain_hash"]),
                )
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

    def chain_rows(self, batch: int = 5000) -> Iterator[ChainRow]:
        """Every position in order, events and links joined (a link without its event,
        or an event without its link, appears with the missing half as None), read in one
        snapshot a page at a time."""
        with self._db.snapshot() as cur:
            if self._db.dialect is Dialect.POSTGRES:
                # bytea arrives as bytes, and the trigger and NOT NULL columns keep every
                # row whole: the columns are a ChainRow as they come.
                yield from map(ChainRow._make, _pages(cur, _POSTGRES_CHAIN_PAGE, batch))
                return
            # SQLite keeps the links in a side table: merge two position-ordered scans
            # (a UNION of both would be re-sorted for every page).
            events = _pages(cur, _SQLITE_EVENTS_PAGE, batch)
            links = _pages(cur, _SQLITE_LINKS_PAGE, batch)
            event, link = next(events, None), next(links, None)
            while event is not None or link is not None:
                at_event = _MAX if event is None else event[0]
                at_link = _MAX if link is None else link[0]
                if at_event <= at_link:
                    yield _merged(event, link if at_event == at_link else None)
                    event = next(events, None)
                else:
                    yield _merged(None, link)
                if at_link <= at_event:
                    link = next(links, None)


_MAX = 2**63
# Columns: position, originator_id, originator_version, topic, state, chain_prev, chain_hash.
_POSTGRES_CHAIN_PAGE = (
    "SELECT notification_id, originator_id, originator_version, topic, state, chain_prev, "
    "chain_hash FROM ledger_events WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)
# Columns: position, originator_id, originator_version, topic, state.
_SQLITE_EVENTS_PAGE = (
    "SELECT rowid, originator_id, originator_version, topic, state "
    "FROM stored_events WHERE rowid > %s ORDER BY rowid LIMIT %s"
)
# Columns: position, chain_prev, chain_hash.
_SQLITE_LINKS_PAGE = (
    "SELECT notification_id, prev_id, hash FROM stored_events_chain "
    "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
)


def _pages(cur: Cursor, sql: str, batch: int) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` (ordered by its first column, the position; parameters: after,
    limit), a page at a time."""
    after = -1
    while True:
        cur.execute(sql, (after, batch))
        rows = cur.fetchall_tuples()
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]


def _merged(event: tuple[Any, ...] | None, link: tuple[Any, ...] | None) -> ChainRow:
    """One SQLite position from its event's row and its link's row (either may be absent)."""
    if event is None:
        assert link is not None
        return ChainRow(link[0], None, None, None, None, link[1], _as_bytes(link[2]))
    position, oid, version, topic, state = event
    prev, chain = (None, None) if link is None else (link[1], _as_bytes(link[2]))
    return ChainRow(position, oid, version, topic, _as_bytes(state), prev, chain)


def _as_bytes(value: object) -> bytes | None:
    """Stored bytes as bytes. Text (what SQLite's ``||`` makes of a BLOB) is taken as its
    UTF-8 bytes, so a tampered row is reported as a mismatch rather than crashing the
    verifier."""
    if value is None or type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8")
