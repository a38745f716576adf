"""The decision log (SPEC 7.4): one record per AuthZEN decision, and the only module that
reads or writes the ``decision_log`` table (migrations/*/0006_decision_log.sql).

A ``DecisionRecord`` is what the decision path hands over: the decision point's own
``Decision``, the request it answered, the caller and the instant. It is cheap to build;
turning it into a row (the JCS digest of the request, JSON text of its members) is left to
the writer (``api/workers/decision_writer.py``), off the decision path.

``DecisionLog`` writes rows in batches (``COPY`` on PostgreSQL; a repeated batch after an
ambiguous failure goes in with ``ON CONFLICT DO NOTHING``, so a record is never stored
twice), pages through them for ``GET /v1/audit/decisions``, and applies retention:
PostgreSQL keeps one partition per day (UTC), created ahead and as records need them, and
drops whole partitions older than the retention period under an advisory lock (one replica
at a time, the others skip that tick); SQLite deletes the rows.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from rfc8785 import CanonicalizationError

from ledger.domain.actors import Actor
from ledger.domain.canonical import DIGEST_PREFIX, jcs, sha256_b64url
from ledger.domain.errors import InvalidRequest
from ledger.persistence.database import Cursor, Database, Dialect
from ledger.persistence.sqlite_rows import CHUNKS, chunks, flat, values

if TYPE_CHECKING:
    from projections.pdp import Decision

log = logging.getLogger("mission_ledger.decision_log")

TABLE = "decision_log"
COLUMNS = (
    "evaluated_at",
    "evaluation_id",
    "principal",
    "subject",
    "action",
    "resource",
    "agent",
    "request_digest",
    "mandate_id",
    "mission_id",
    "mission_version",
    "index_position",
    "decision",
    "reason",
    "approval_id",
)
Row = tuple[Any, ...]

#: Partitions exist this many days after today (UTC) at every retention tick.
DAYS_AHEAD = 3
#: Serialises partition DDL across replicas ("MLdl").
_PARTITION_LOCK = 0x4D4C_646C
_PARTITION = re.compile(r"^decision_log_(\d{8})\Z")
_DAY_MICROS = 86_400_000_000
_EPOCH = date(1970, 1, 1)
_SAFE_INTEGER = 2**53 - 1


def micros(instant: datetime) -> int:
    return int(instant.timestamp() * 1_000_000)


def _instant(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision, as the decision path hands it over.

    ``request`` is the request the decision answered, as submitted (for a batch item, the
    item merged with the batch's defaults; a batch item that is not an object, as it is):
    its JCS digest is recorded, and its ``subject``, ``action`` and ``resource`` members.
    Its ``context`` (Mandate token, proof) is only digested."""

    evaluated_at: datetime
    principal: Actor
    request: object
    decision: Decision
    #: ``request``'s JSON text as received, when ``request`` is the whole body (a single
    #: evaluation): sent to a writer process as it is, not encoded again.
    text: bytes | None = None

    def wire(self) -> Wire:
        """What the writer needs of the record, as JSON values (cheap: no digest, no member
        JSON); ``row_of`` turns it into the row."""
        decided = self.decision
        context = decided.context
        mission = context.get("mission")
        mission_id = mission_version = None
        if isinstance(mission, dict):
            mission_id, mission_version = mission.get("id"), mission.get("version")
        return [
            micros(self.evaluated_at),
            _principal(self.principal),
            self.request,
            context["evaluation_id"],
            decided.mandate_id,
            mission_id,
            mission_version,
            decided.position if decided.position is not None else 0,
            decided.decision,
            context.get("reason"),
            decided.approval_id,
        ]

    def row(self) -> Row:
        return row_of(self.wire())

    @property
    def evaluation_id(self) -> str:
        return str(self.decision.context["evaluation_id"])


#: A record on its way to the writer: ``DecisionRecord.wire``'s list (JSON values only, so it
#: crosses a pipe to a writer process as JSON).
Wire = list[Any]


def row_of(wire: Wire) -> Row:
    """The table row (the work the writer does, off the decision path); should the request
    defeat that, the row without the request's members."""
    try:
        return _row(wire)
    except Exception:
        log.exception("decision log: record of %s kept without its request", wire[3])
        return _minimal(_row(wire, bare=True))


def _row(wire: Wire, *, bare: bool = False) -> Row:
    (at, principal, submitted, evaluation_id, mandate_id, *decided) = wire
    request = submitted if isinstance(submitted, dict) and not bare else {}
    subject = request.get("subject")
    agent = subject.get("id") if isinstance(subject, dict) else None
    return (
        at,
        evaluation_id,
        principal,
        _member(request, "subject"),
        _member(request, "action"),
        _member(request, "resource"),
        _agent(agent),
        None if bare else request_digest(submitted),
        mandate_id,
        *decided,  # mission id and version, index position, decision, reason, approval id
    )


def encode_wires(records: Sequence[DecisionRecord]) -> bytes:
    """The records of one answer for a writer process (``decode_wires`` reads them back):
    a JSON array of their wires; or, for one record with the request's ``text``, ``T``, its
    wire without the request (JSON holds no raw line feed), a line feed and the text as
    received (copied, not encoded again)."""
    if len(records) == 1 and records[0].text is not None:
        wire = records[0].wire()
        wire[2] = None
        return b"T" + _dumps(wire) + b"\n" + records[0].text
    return _dumps([record.wire() for record in records])


def decode_wires(payload: bytes) -> list[Wire]:
    if payload[:1] == b"T":
        head, _, text = payload[1:].partition(b"\n")
        wire = _loads(head)
        wire[2] = _loads(text)  # read as the decision path read it (api.json_body)
        return [wire]
    wires = _loads(payload)
    if not isinstance(wires, list):
        msg = "a decision log frame holds a JSON array of records"
        raise TypeError(msg)
    return wires


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: the standard library has it
        return json.dumps(value, separators=(",", ":")).encode()


def _loads(text: bytes) -> Any:
    """orjson, then (integers beyond 64 bits, a byte order mark, UTF-16) the standard
    library: in that order, as ``api.json_body.parse_json_fast`` reads a body."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


#: Longer ``subject.id`` values are not indexed for the agent filter (a btree entry must fit
#: a third of a page); the record's ``subject`` keeps them whole.
MAX_AGENT_LENGTH = 500


def _agent(value: object) -> str | None:
    """``subject.id`` for the agent column: request data, so made storable (PostgreSQL text
    holds neither NUL nor lone surrogates)."""
    if not isinstance(value, str) or len(value) > MAX_AGENT_LENGTH:
        return None
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


@functools.lru_cache(maxsize=1024)
def _principal(actor: Actor) -> str:
    """The caller's JSON (a PEP makes many decisions under one credential)."""
    return _json_text(actor.to_json())


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits
        return json.dumps(value)


def _member(request: Mapping[str, Any], name: str) -> str | None:
    value = request.get(name)
    return None if value is None else _json_text(value)


def request_digest(request: object) -> str | None:
    """``sha-256:`` + base64url(SHA-256(JCS(request))).

    JCS models numbers as IEEE 754 doubles: an integer beyond the I-JSON range is digested
    as the double it stands for (what a JavaScript verifier parses); None only for a request
    no double can represent (an integer beyond 1e308)."""
    try:
        return DIGEST_PREFIX + sha256_b64url(jcs(request))
    except CanonicalizationError:
        try:
            return DIGEST_PREFIX + sha256_b64url(jcs(_as_doubles(request)))
        except (CanonicalizationError, OverflowError):
            return None


def _as_doubles(value: object) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > _SAFE_INTEGER:
        return float(value)
    if isinstance(value, Mapping):
        return {key: _as_doubles(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_doubles(item) for item in value]
    return value


# ---------------------------------------------------------------------- queries


@dataclass(frozen=True)
class DecisionFilter:
    """What ``GET /v1/audit/decisions`` may ask for (every member optional)."""

    mission: str | None = None
    mandate: str | None = None
    agent: str | None = None
    decision: bool | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


def encode_cursor(evaluated_at: int, evaluation_id: str) -> str:
    raw = json.dumps([evaluated_at, evaluation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        at, evaluation_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if type(at) is not int or not isinstance(evaluation_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest.at("/cursor", "is not a cursor this service issued") from None
    return at, evaluation_id


@dataclass(frozen=True)
class StoredDecision:
    """A record read back (the members of SPEC 7.4)."""

    evaluation_id: str
    evaluated_at: datetime
    principal: dict[str, Any]
    subject: Any
    action: Any
    resource: Any
    request_digest: str | None
    mandate_id: str | None
    mission_id: str | None
    mission_version: int | None
    index_position: int
    decision: bool
    reason: str | None
    approval_id: str | None


def _stored(row: Mapping[str, Any]) -> StoredDecision:
    def parsed(name: str) -> Any:
        value = row[name]
        return None if value is None else json.loads(value)

    return StoredDecision(
        evaluation_id=row["evaluation_id"],
        evaluated_at=_instant(int(row["evaluated_at"])),
        principal=parsed("principal"),
        subject=parsed("subject"),
        action=parsed("action"),
        resource=parsed("resource"),
        request_digest=row["request_digest"],
        mandate_id=row["mandate_id"],
        mission_id=row["mission_id"],
        mission_version=row["mission_version"],
        index_position=int(row["index_position"]),
        decision=bool(row["decision"]),
        reason=row["reason"],
        approval_id=row["approval_id"],
    )


# ---------------------------------------------------------------------- the table


def _day_of(evaluated_at: int) -> date:
    return _EPOCH + timedelta(days=evaluated_at // _DAY_MICROS)


def _day_start(day: date) -> int:
    return (day - _EPOCH).days * _DAY_MICROS


def _partition(day: date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608 - constants only
    f"VALUES ({', '.join('%s' for _ in COLUMNS)})"
)
_INSERT_IGNORING_DUPLICATES = _INSERT + " ON CONFLICT DO NOTHING"


@functools.lru_cache(maxsize=2 * len(CHUNKS))
def _insert_many(rows: int, *, ignoring_duplicates: bool) -> str:
    return (
        f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES "  # noqa: S608 - constants only
        + values(rows, len(COLUMNS), "%s")
        + (" ON CONFLICT DO NOTHING" if ignoring_duplicates else "")
    )


def _insert_sqlite(cur: Cursor, rows: Sequence[Row], *, ignoring_duplicates: bool) -> None:
    """Multi-row INSERTs (``ledger.persistence.sqlite_rows``): with ``executemany`` the
    writer thread would take the interpreter lock back from a busy event loop once per row."""
    for start, size in chunks(len(rows), len(COLUMNS)):
        cur.execute(
            _insert_many(size, ignoring_duplicates=ignoring_duplicates),
            flat(rows[start : start + size]),
        )


class DecisionLog:
    """The ``decision_log`` table of one store.

    ``shares_interpreter``: the writer shares its interpreter lock with the decision path
    (the writer thread), so SQLite batches go in as multi-row ``INSERT``s (``_insert_sqlite``).
    A writer process of its own executes one statement for every row instead, which costs
    less CPU (``executemany``: binding in C, no parameter list built in Python)."""

    def __init__(self, database: Database, *, shares_interpreter: bool = True) -> None:
        self._database = database
        self._partitioned = database.dialect is Dialect.POSTGRES
        self._multi_row = shares_interpreter
        #: Days known to have a partition (PostgreSQL), loaded from the catalogue on first use.
        self._days: set[date] | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ writing

    def write(self, rows: Sequence[Row], *, repeated: bool = False) -> None:
        """Store ``rows`` in one transaction. ``repeated``: the batch may already have been
        committed by an attempt whose outcome is unknown; rows already there are skipped."""
        if not rows:
            return
        if self._partitioned:
            self._ensure_days({_day_of(row[0]) for row in rows})
        try:
            with self._database.transaction() as cur:
                if not self._partitioned and self._multi_row:
                    _insert_sqlite(cur, rows, ignoring_duplicates=repeated)
                elif not self._partitioned:
                    cur.executemany(_INSERT_IGNORING_DUPLICATES if repeated else _INSERT, rows)
                elif repeated:
                    cur.executemany(_INSERT_IGNORING_DUPLICATES, rows)
                else:
                    cur.copy_in(TABLE, COLUMNS, rows)
        except Exception:
            with self._lock:
                self._days = None  # perhaps a partition was dropped: look again
            raise

    def write_separately(self, rows: Sequence[Row]) -> None:
        """The last resort for a batch that keeps failing: each row in a transaction of its
        own, and a row the store refuses (a value it cannot hold) in its minimal form,
        without the request's members, so that its evaluation id is still recorded."""
        for row in rows:
            try:
                self.write([row], repeated=True)
            except Exception:
                log.exception("decision log: record %s stored without its request", row[1])
                self.write([_minimal(row)], repeated=True)

    def _ensure_days(self, days: Iterable[date]) -> None:
        with self._lock:
            if self._days is None:
                self._days = self._partition_days()
            missing = sorted(set(days) - self._days)
        if not missing:
            return
        with self._database.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for day in missing:
                _create_partition(cur, day)
        with self._lock:
            if self._days is not None:
                self._days.update(missing)

    def _partition_days(self) -> set[date]:
        rows = self._database.fetchall(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'decision_log'::regclass"
        )
        return {day for row in rows if (day := _parse_partition(str(row["name"]))) is not None}

    # ------------------------------------------------------------------ reading

    def page(
        self, where: DecisionFilter, *, cursor: str | None, limit: int
    ) -> tuple[list[StoredDecision], str | None]:
        """Records in (evaluated_at, evaluation_id) order after ``cursor``, at most ``limit``,
        and the cursor of the next page (None after the last)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("mission_id", where.mission),
            ("mandate_id", where.mandate),
            ("agent", where.agent),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if where.decision is not None:
            clauses.append("decision = %s")
            params.append(where.decision)
        if where.since is not None:
            clauses.append("evaluated_at >= %s")
            params.append(micros(where.since))
        if where.until is not None:
            clauses.append("evaluated_at < %s")
            params.append(micros(where.until))
        if cursor:
            clauses.append("(evaluated_at, evaluation_id) > (%s, %s)")
            params.extend(decode_cursor(cursor))
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constants and %s only
            + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
            + " ORDER BY evaluated_at, evaluation_id LIMIT %s"
        )
        rows = self._database.fetchall(sql, [*params, limit + 1])
        records = [_stored(row) for row in rows[:limit]]
        if len(rows) <= limit:
            return records, None
        last = rows[limit - 1]
        return records, encode_cursor(int(last["evaluated_at"]), str(last["evaluation_id"]))

    def count(self) -> int:
        row = self._database.fetchone(f"SELECT count(*) AS n FROM {TABLE}")  # noqa: S608
        return 0 if row is None else int(row["n"])

    # ------------------------------------------------------------------ retention

    def prune(self, now: datetime, retention: timedelta) -> int:
        """Drop what is older than ``retention`` and (PostgreSQL) make sure the partitions of
        the next days exist. Returns the rows deleted (SQLite) or partitions dropped
        (PostgreSQL; 0 when another replica holds the lock this time)."""
        cutoff = micros(now - retention)
        if not self._partitioned:
            deleted = self._database.execute(
                f"DELETE FROM {TABLE} WHERE evaluated_at < %s",  # noqa: S608 - constants
                (cutoff,),
            )
            return max(deleted, 0)
        today = _day_of(micros(now))
        dropped: list[date] = []
        with self._database.transaction() as cur:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s) AS locked", (_PARTITION_LOCK,))
            locked = cur.fetchone()
            if locked is None or not locked["locked"]:
                return 0
            cur.execute(
                "SELECT c.relname AS name FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'decision_log'::regclass"
            )
            days = {d for row in cur.fetchall() if (d := _parse_partition(str(row["name"])))}
            for day in sorted(days):
                if _day_start(day + timedelta(days=1)) <= cutoff:
                    cur.execute(f"DROP TABLE IF EXISTS {_partition(day)}")
                    dropped.append(day)
            for offset in range(DAYS_AHEAD + 1):
                day = today + timedelta(days=offset)
                if day not in days:
                    _create_partition(cur, day)
        with self._lock:
            self._days = None
        if dropped:
            log.info("decision log retention: dropped the partitions of %s", dropped)
        return len(dropped)


def _minimal(row: Row) -> Row:
    """``row`` without what came from the request (subject, action, resource, agent) and with
    only values of the expected types."""
    fields = dict(zip(COLUMNS, row, strict=True))
    position = fields["index_position"]

    def small(value: object) -> int | None:
        return value if type(value) is int and -(2**31) < value < 2**31 else None

    def text(value: object) -> str | None:
        return value if isinstance(value, str) and value.isprintable() else None

    return (
        fields["evaluated_at"],
        fields["evaluation_id"],
        fields["principal"],
        None,
        None,
        None,
        None,
        text(fields["request_digest"]),
        text(fields["mandate_id"]),
        text(fields["mission_id"]),
        small(fields["mission_version"]),
        position if type(position) is int and 0 <= position < 2**63 else 0,
        bool(fields["decision"]),
        text(fields["reason"]),
        text(fields["approval_id"]),
    )


def _create_partition(cur: Cursor, day: date) -> None:
    start = _day_start(day)
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {_partition(day)} PARTITION OF {TABLE} "
        f"FOR VALUES FROM ({start}) TO ({start + _DAY_MICROS})"
    )


def _parse_partition(name: str) -> date | None:
    match = _PARTITION.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None
