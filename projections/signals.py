"""The signal log: every stream's SETs, appended in log order with a gap-free sequence.

A durable projection (tracking in the same transaction as its rows): for each ledger
event that is a signal (``ledger.domain.sets``) it signs one SET per stream that
carries it (event type delivered, subject not removed, stream not disabled, and for a
stream scoped to ``resources`` an authority that touches one of them) and
appends it to ``set_log`` under that stream's next ``seq``. Paused streams still
receive rows (held); delivery methods deliver them once the stream is enabled
again. Every delivery method (SSE, poll, push) reads this one log.

A transmitter-initiated pause or disable is announced by a ``stream-updated`` SET, and
a receiver that is never told cannot ask to be enabled again: a paused or disabled
stream therefore still delivers its SETs through that announcement (``announced_through``)
and holds only the later ones. A status the receiver set itself is not announced, and
such a stream holds everything.

It keeps its own copies of stream, Mission and Mandate state (``ssf_streams``,
``signal_state``) so that it never reads another read model's tables.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from eventsourcing.domain import BaseAggregate

from ledger.domain.access_requests import AccessRequest
from ledger.domain.actors import Actor
from ledger.domain.events import LedgerCreated, LedgerEvent
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.domain.sets import (
    SET_TYP,
    Signal,
    access_request_signal,
    mandate_signal,
    mission_signal,
    set_claims,
    stream_signal,
)
from ledger.domain.streams import STREAM_UPDATED, Stream, StreamStatus
from ledger.persistence.database import Cursor, Database, Dialect
from ledger.persistence.snapshots import StateCodec
from ledger.signing.keyring import Keyring
from projections.aggregate_tables import event_topics, micros
from projections.follower import DurableProjection, Item

ACCESS_REQUEST_TOPICS = event_topics(AccessRequest)
MISSION_TOPICS = event_topics(Mission)
MANDATE_TOPICS = event_topics(ExecutionMandate)
STREAM_TOPICS = event_topics(Stream)


@dataclass(frozen=True)
class PublishedSets:
    """Every SET caused by the events in (``start``, ``end``]: (stream, seq, compact SET)."""

    start: int
    end: int
    rows: tuple[tuple[str, int, str], ...]


class SignalLog(DurableProjection):
    name = "signal_log"
    topics = MISSION_TOPICS | MANDATE_TOPICS | STREAM_TOPICS | ACCESS_REQUEST_TOPICS

    def __init__(self, codec: StateCodec, signer: Keyring, issuer: str) -> None:
        self._codec = codec
        self._signer = signer
        self._issuer = issuer
        self._streams: dict[str, Stream] = {}
        self._next_seq: dict[str, int] = {}
        self._dirty: set[str] = set()  # streams whose state changed (snapshot rewritten)
        self._advanced: set[str] = set()  # streams that only got SETs (next_seq moved)
        # set_log rows without their SET, signed and written at the batch's end, and the
        # payload and signing parameters of each.
        self._rows: list[tuple[object, ...]] = []
        self._unsigned: list[tuple[bytes, str, datetime]] = []
        # Thawed streams from earlier batches, by id: (the row's position marker, stream).
        # Never mutated: a batch that changes a stream works on its own copy, so a batch
        # that rolls back leaves the cache equal to the committed rows.
        self._cache: dict[str, tuple[int, Stream]] = {}
        self._copied: set[str] = set()
        self._marker: dict[str, int] = {}  # position of the last stream event this batch
        # The tracking position at which the copies above equal the committed rows (None:
        # unknown), and the committed next seq of every live stream then.
        self._valid_at: int | None = None
        self._committed_seq: dict[str, int] = {}
        self._signed: list[tuple[str, int, str]] = []  # (stream, seq, SET) of this batch
        #: The SETs of the last batch this process committed, for the SSE hub of this
        #: process (which then need not read back what was just written).
        self.published: PublishedSets | None = None

    # ------------------------------------------------------------------ batch

    def begin_batch(self, cur: Cursor, tracked: int) -> None:
        # Every batch needs every live stream and its next seq (any change may concern any
        # of them). When this process committed the rows at ``tracked`` itself, nobody has
        # changed them since (only this projection writes them, under the tracking lock):
        # its copies are the committed rows and nothing is read. Otherwise only the
        # streams whose row changed since they were cached are thawed again.
        if self._valid_at is not None and self._valid_at == tracked:
            self._next_seq = dict(self._committed_seq)
            self._streams = {sid: entry[1] for sid, entry in self._cache.items()}
        else:
            self._load(cur)
        self._valid_at = None  # until this batch commits
        self._copied = set()
        self._marker = {}
        self._dirty = set()
        self._advanced = set()
        self._rows = []
        self._unsigned = []
        self._signed = []

    def _load(self, cur: Cursor) -> None:
        cur.execute("SELECT stream_id, next_seq, position FROM ssf_streams WHERE deleted = 0")
        markers: dict[str, int] = {}
        self._next_seq = {}
        for row in cur.fetchall():
            markers[str(row["stream_id"])] = int(row["position"])
            self._next_seq[str(row["stream_id"])] = int(row["next_seq"])
        stale = {sid for sid, marker in markers.items() if self._cache.get(sid, (-1,))[0] != marker}
        cache = {sid: entry for sid, entry in self._cache.items() if sid in markers}
        if stale:
            cur.execute("SELECT stream_id, position, snapshot FROM ssf_streams WHERE deleted = 0")
            for row in cur.fetchall():
                stream_id = str(row["stream_id"])
                if stream_id in stale:
                    stream = self._codec.thaw(bytes(row["snapshot"]))
                    assert isinstance(stream, Stream)
                    cache[stream_id] = (int(row["position"]), stream)
        self._cache = cache
        self._streams = {sid: cache[sid][1] for sid in markers if sid in cache}

    def committed(self, start: int, end: int, *, applied: bool) -> None:
        if not applied:
            # No stream changed and no SET was written in (start, end].
            if self._valid_at == start:
                self._valid_at = end
            self.published = PublishedSets(start, end, ())
            return
        self._cache = {
            sid: (self._marker[sid], stream) if sid in self._marker else self._cache[sid]
            for sid, stream in self._streams.items()
        }
        self._committed_seq = self._next_seq
        self._valid_at = end
        self.published = PublishedSets(start, end, tuple(self._signed))

    def end_batch(self, cur: Cursor) -> None:
        # One change may give a SET to every stream: signed together and written in bulk
        # (COPY on PostgreSQL), in the same transaction as the tracking position.
        if self._rows:
            cur.copy_in("set_log", _SET_COLUMNS, self._signed_rows())
        advanced = sorted(self._advanced - self._dirty)
        if advanced and cur.dialect is Dialect.POSTGRES:
            cur.execute(
                "UPDATE ssf_streams AS s SET next_seq = v.next_seq "
                "FROM unnest(%b::text[], %b::bigint[]) AS v(stream_id, next_seq) "
                "WHERE s.stream_id = v.stream_id",
                (advanced, [self._next_seq[stream_id] for stream_id in advanced]),
            )
        elif advanced:
            cur.executemany(
                "UPDATE ssf_streams SET next_seq = %s WHERE stream_id = %s",
                [(self._next_seq[stream_id], stream_id) for stream_id in advanced],
            )
        for stream_id in self._dirty:
            stream = self._streams[stream_id]
            cur.execute(
                "UPDATE ssf_streams SET next_seq = %s, status = %s, method = %s, deleted = %s, "
                "position = %s, snapshot = %s WHERE stream_id = %s",
                (
                    self._next_seq[stream_id],
                    stream.status,
                    str(stream.config["delivery"]["method"]),
                    1 if stream.deleted else 0,
                    self._marker[stream_id],
                    self._codec.freeze(stream),
                    stream_id,
                ),
            )

    def reset(self, cur: Cursor) -> None:
        self._valid_at = None
        self.published = None
        # Push progress (push_state) is delivery state, not part of this read model: kept,
        # so a rebuild does not push everything again. Poll acknowledgements are lost.
        self._cache = {}
        for table in ("set_log", "ssf_streams", "signal_state"):
            cur.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names

    # ------------------------------------------------------------------ events

    def apply(self, cur: Cursor, item: Item) -> None:
        if item.topic in STREAM_TOPICS:
            self._apply_stream(cur, item)
            return
        folded = self._fold(cur, item.event)
        if folded is None:
            return
        aggregate, prior = folded
        signal: Signal | None
        if isinstance(aggregate, Mission):
            signal = mission_signal(item.event, aggregate)
        elif isinstance(aggregate, ExecutionMandate):
            signal = mandate_signal(item.event, aggregate, prior)
        elif isinstance(aggregate, AccessRequest):
            signal = access_request_signal(item.event, aggregate)
        else:
            signal = None
        if signal is None:
            return
        for stream_id, stream in self._streams.items():
            if stream.carries(signal.event_type, signal.sub_id, signal.touched):
                self._append(stream_id, stream, signal, item.position)

    def _apply_stream(self, cur: Cursor, item: Item) -> None:
        event = item.event
        if isinstance(event, LedgerCreated):
            stream = cast("Stream | None", event.mutate(None))
            assert isinstance(stream, Stream)
            cur.execute(
                "INSERT INTO ssf_streams (stream_id, owner_key, status, method, deleted, "
                "next_seq, created_position, position, snapshot) "
                "VALUES (%s, %s, %s, %s, 0, 1, %s, %s, %s)",
                (
                    stream.stream_id,
                    _owner_key(stream),
                    stream.status,
                    str(stream.config["delivery"]["method"]),
                    item.position,
                    item.position,
                    self._codec.freeze(stream),
                ),
            )
            self._streams[stream.stream_id] = stream
            self._next_seq[stream.stream_id] = 1
            self._marker[stream.stream_id] = item.position
            return
        stream_id = event.originator_id.removeprefix("stream:")
        current = self._streams.get(stream_id)
        if current is None or event.originator_version <= current.version:
            return
        if stream_id not in self._copied:  # leave the cached (committed) state untouched
            current = cast("Stream", self._codec.thaw(self._codec.freeze(current)))
            self._streams[stream_id] = current
            self._copied.add(stream_id)
        event.mutate(current)
        self._marker[stream_id] = item.position
        self._dirty.add(stream_id)
        signal = stream_signal(event, current)
        if signal is not None:
            self._append(stream_id, current, signal, item.position)
        if current.deleted:
            cur.execute(
                "UPDATE ssf_streams SET deleted = 1, next_seq = %s, snapshot = %s "
                "WHERE stream_id = %s",
                (self._next_seq[stream_id], self._codec.freeze(current), stream_id),
            )
            self._streams.pop(stream_id, None)
            self._dirty.discard(stream_id)

    def _fold(
        self, cur: Cursor, event: LedgerEvent
    ) -> tuple[BaseAggregate[str], list[dict[str, Any]]] | None:
        """The aggregate's state after ``event``, from this projection's own copy, and
        (for a Mandate) its ``authorization_details`` before it."""
        if isinstance(event, LedgerCreated):
            aggregate = cast("BaseAggregate[str] | None", event.mutate(None))
            assert aggregate is not None
            cur.execute(
                "INSERT INTO signal_state (aggregate_id, snapshot) VALUES (%s, %s)",
                (aggregate.id, self._codec.freeze(aggregate)),
            )
            return aggregate, []
        cur.execute(
            "SELECT snapshot FROM signal_state WHERE aggregate_id = %s", (event.originator_id,)
        )
        row = cur.fetchone()
        if row is None:
            return None
        aggregate = self._codec.thaw(bytes(row["snapshot"]))
        if event.originator_version <= aggregate.version:
            return None
        prior = (
            list(aggregate.authorization_details) if isinstance(aggregate, ExecutionMandate) else []
        )
        event.mutate(aggregate)
        cur.execute(
            "UPDATE signal_state SET snapshot = %s WHERE aggregate_id = %s",
            (self._codec.freeze(aggregate), aggregate.id),
        )
        return aggregate, prior

    def _append(self, stream_id: str, stream: Stream, signal: Signal, position: int) -> None:
        claims = set_claims(
            signal, issuer=self._issuer, aud=stream.aud, stream_id=stream_id, position=position
        )
        seq = self._next_seq[stream_id]
        self._rows.append(
            (
                stream_id,
                seq,
                claims["jti"],
                signal.event_type,
                position,
                micros(signal.occurred_at),
            )
        )
        alg = str(stream.config.get("signing_alg", "ES256"))
        self._unsigned.append((orjson.dumps(claims), alg, signal.occurred_at))
        self._next_seq[stream_id] = seq + 1
        self._advanced.add(stream_id)

    def _signed_rows(self) -> list[tuple[object, ...]]:
        """The batch's rows with their SETs, signed per (algorithm, instant) group."""
        groups: dict[tuple[str, datetime], list[int]] = {}
        for index, (_, alg, occurred_at) in enumerate(self._unsigned):
            groups.setdefault((alg, occurred_at), []).append(index)
        tokens: list[str] = [""] * len(self._unsigned)
        for (alg, occurred_at), indexes in groups.items():
            signed = self._signer.sign_compact_many(
                {"typ": SET_TYP},
                [self._unsigned[i][0] for i in indexes],
                alg=alg,
                now=occurred_at,
            )
            for i, token in zip(indexes, signed, strict=True):
                tokens[i] = token
        self._signed = [
            (str(row[0]), cast("int", row[1]), token)
            for row, token in zip(self._rows, tokens, strict=True)
        ]
        return [(*row[:5], token, row[5]) for row, token in zip(self._rows, tokens, strict=True)]


_SET_COLUMNS = (
    "stream_id",
    "seq",
    "jti",
    "event_type",
    "cause_position",
    "set_jwt",
    "created_at",
)


def _owner_key(stream: Stream) -> str:
    return Actor.from_json(stream.owner).key


def announced_through(cur: Cursor, stream_id: str, status: str) -> int | None:
    """The highest ``seq`` a stream with ``status`` delivers now: None (no bound) when it
    is enabled; else the ``seq`` of its last ``stream-updated`` SET if that announced this
    status (a transmitter-initiated pause or disable, told to the receiver before
    holding), and 0 (hold everything) if the receiver set the status itself."""
    if status == StreamStatus.ENABLED.value:
        return None
    cur.execute(
        "SELECT seq, set_jwt FROM set_log WHERE stream_id = %s AND event_type = %s "
        "ORDER BY seq DESC LIMIT 1",
        (stream_id, STREAM_UPDATED),
    )
    row = cur.fetchone()
    if row is None or _announced_status(str(row["set_jwt"])) != status:
        return 0
    return int(row["seq"])


def _announced_status(set_jwt: str) -> str | None:
    """The ``status`` a (signed, self-written) ``stream-updated`` SET announces."""
    try:
        payload = set_jwt.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        status = claims["events"][STREAM_UPDATED]["status"]
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return None
    return status if isinstance(status, str) else None


def sets_caused_between(
    database: Database, first: int, last: int, *, positions: Collection[int] | None = None
) -> Iterator[dict[str, Any]]:
    """The SETs still in the log whose cause lies at positions ``first`` to ``last`` (only
    at ``positions``, when given), in cause, stream and ``seq`` order, read a page at a
    time: ``{stream_id, seq, jti, event_type, cause_position, set}`` (evidence bundles)."""
    after: tuple[int, str, int] = (first - 1, "", 0)
    while True:
        rows = database.fetchall(
            "SELECT stream_id, seq, jti, event_type, cause_position, set_jwt FROM set_log "
            "WHERE cause_position <= %s AND (cause_position > %s OR (cause_position = %s "
            "AND (stream_id > %s OR (stream_id = %s AND seq > %s)))) "
            "ORDER BY cause_position, stream_id, seq LIMIT 1000",
            (last, after[0], after[0], after[1], after[1], after[2]),
        )
        for row in rows:
            if positions is None or int(row["cause_position"]) in positions:
                yield {
                    "stream_id": str(row["stream_id"]),
                    "seq": int(row["seq"]),
                    "jti": str(row["jti"]),
                    "event_type": str(row["event_type"]),
                    "cause_position": int(row["cause_position"]),
                    "set": str(row["set_jwt"]),
                }
        if len(rows) < 1000:
            return
        tail = rows[-1]
        after = (int(tail["cause_position"]), str(tail["stream_id"]), int(tail["seq"]))
