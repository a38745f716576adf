"""Per-process fan-out of SETs to Server-Sent Events subscribers.

The hub is a live consumer of the log follower. After each batch the follower has
applied (so every SET caused by it is committed, by this replica or another), the hub
reads those SETs once from the durable SET log and hands them, pre-encoded as SSE
frames, to the channel of their stream in the event loop; each subscriber of that
stream then writes them from the channel's buffer. Database load is one query per
batch, whatever the number of subscribers.

A subscriber resumes from a cursor (``Last-Event-ID`` = the stream's ``seq``): it
joins its channel *first*, then reads the backlog from the database, then follows the
buffer, sending only ``seq`` greater than its cursor. Every SET is therefore either in
the backlog read or published into the buffer afterwards: nothing is lost, nothing
sent twice. Paused (and disabled) streams send nothing until enabled again; held SETs
then flow in order. A pause or disable the transmitter initiated is told first: its
``stream-updated`` SET, and every SET before it, still goes out
(``projections.signals.announced_through``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger.application import Ledger
from ledger.domain.streams import Stream, StreamStatus
from ledger.persistence.database import Database
from projections.aggregate_tables import event_topics
from projections.follower import Item
from projections.signals import SignalLog, announced_through

STREAM_TOPICS = event_topics(Stream)
#: Recent frames kept per stream with subscribers here (a subscriber further behind pages
#: from the store): bounds memory at ~256 x 0.7 KiB per subscribed stream.
BUFFER = 256
PAGE = 500
RETRY_MS = 3000
#: A ``Last-Event-ID`` that is not an event id (a client's bug, or another server's id):
#: answered like a cursor outside the log, with ``event: resync``.
UNKNOWN_CURSOR = -1


def frame(seq: int, set_jwt: str) -> bytes:
    """One SSE event: ``id`` = the stream cursor, ``event: set``, ``data`` = the compact SET."""
    return f"id: {seq}\nevent: set\ndata: {set_jwt}\n\n".encode()


def closing_frame(reason: str) -> bytes:
    """The last event of a subscription whose credential lapsed (the stream then ends)."""
    return f"event: unauthorized\ndata: {json.dumps({'reason': reason})}\n\n".encode()


class Lease(Protocol):
    """The credential a subscription was opened with: checked before every SET it sends
    and at least every ``recheck_in()`` seconds while it waits."""

    def lapsed(self) -> str | None:
        """Why the credential no longer admits the subscriber (revoked, expired), or None."""

    def recheck_in(self) -> float:
        """Seconds until the next check is due."""


class Channel:
    """One stream's subscribers in this process (touched only on the event loop)."""

    def __init__(self, stream_id: str, status: str) -> None:
        self.stream_id = stream_id
        self.status = status
        #: The highest seq a paused or disabled stream still sends (None: not yet read).
        self.through: int | None = None
        self.changes = 0  # stream events seen, so a read racing one is not kept
        self.deleted = False
        self.buffer: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=BUFFER)
        self.waiters: set[asyncio.Event] = set()

    def publish(self, rows: Sequence[tuple[int, bytes]]) -> None:
        for row in rows:
            if self.buffer and row[0] > self.buffer[-1][0] + 1:
                # A gap (a batch this process could not hand over): the buffer must stay
                # contiguous, so subscribers behind it page the missing SETs from the store.
                self.buffer.clear()
            if not self.buffer or row[0] > self.buffer[-1][0]:
                self.buffer.append(row)
        self._wake()

    def set_status(self, status: str, deleted: bool) -> None:
        self.through = None  # a stream event may have announced a new status
        self.changes += 1
        self.status = status
        self.deleted = deleted
        self._wake()

    def _wake(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    def after(self, cursor: int) -> list[tuple[int, bytes]] | None:
        """Buffered frames after ``cursor``, or None if the buffer does not reach back."""
        if not self.buffer:
            return None
        if cursor + 1 < self.buffer[0][0]:
            return None
        return [row for row in self.buffer if row[0] > cursor]


@dataclass
class StreamInfo:
    status: str
    deleted: bool


class SseHub:
    name = "sse_hub"  # for the follower's per-read-model metrics

    def __init__(self, database: Database, signals: SignalLog | None = None) -> None:
        """With ``signals`` (this process's signal log), the SETs of a batch this process
        committed itself are taken from it instead of being read back from the store."""
        self._db = database
        self._signals = signals
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, Channel] = {}
        self._streams: dict[str, StreamInfo] = {}
        self._scanned = 0
        self._batch_high = 0
        self.subscribers = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ------------------------------------------------------------------ live consumer

    def bootstrap(self, ledger: Ledger) -> int:
        with ledger.database.snapshot() as cur:
            cur.execute("SELECT position FROM projection_tracking WHERE projection = 'signal_log'")
            row = cur.fetchone()
            cur.execute("SELECT stream_id, status, deleted FROM ssf_streams")
            streams = cur.fetchall()
        with self._lock:
            self._streams = {
                str(r["stream_id"]): StreamInfo(str(r["status"]), bool(r["deleted"]))
                for r in streams
            }
        position = 0 if row is None else int(row["position"])
        self._scanned = self._batch_high = position
        return position

    def apply(self, item: Item) -> None:
        self._batch_high = max(self._batch_high, item.position)
        if item.topic not in STREAM_TOPICS:
            return
        event = item.event
        stream_id = event.originator_id.removeprefix("stream:")
        with self._lock:
            info = self._streams.setdefault(stream_id, StreamInfo("enabled", deleted=False))
            if isinstance(event, Stream.StatusChanged):
                info.status = event.status
            elif isinstance(event, Stream.Deleted):
                info.deleted = True
            channel = self._channels.get(stream_id)
        if channel is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(channel.set_status, info.status, info.deleted)

    def end_batch(self) -> None:
        """Hand every SET the batch caused to the channels of its streams."""
        low, high = self._scanned, self._batch_high
        with self._lock:
            listening = set(self._channels)
        if not listening or high <= low or self._loop is None:
            self._scanned = high
            return
        published = None if self._signals is None else self._signals.published
        if published is not None and (published.start, published.end) == (low, high):
            rows = published.rows  # this process wrote exactly these (committed)
        else:  # another replica did (or several batches' worth): read them back once
            rows = tuple(
                (str(row["stream_id"]), int(row["seq"]), str(row["set_jwt"]))
                for row in self._db.fetchall(
                    "SELECT stream_id, seq, set_jwt FROM set_log "
                    "WHERE cause_position > %s AND cause_position <= %s",
                    (low, high),
                )
            )
        self._scanned = high  # only now: a failed read is retried with the next batch
        grouped: dict[str, list[tuple[int, bytes]]] = {}
        for stream_id, seq, set_jwt in sorted(rows):
            if stream_id in listening:
                grouped.setdefault(stream_id, []).append((seq, frame(seq, set_jwt)))
        if grouped:
            self._loop.call_soon_threadsafe(self._publish, grouped)

    def _publish(self, grouped: dict[str, list[tuple[int, bytes]]]) -> None:
        """On the event loop: hand each stream's frames to its channel, if still joined."""
        for stream_id, frames in grouped.items():
            channel = self._channels.get(stream_id)
            if channel is not None:
                channel.publish(frames)

    # ------------------------------------------------------------------ subscribers

    def join(self, stream_id: str) -> Channel:
        with self._lock:
            channel = self._channels.get(stream_id)
            if channel is None:
                info = self._streams.get(stream_id, StreamInfo("enabled", deleted=False))
                channel = Channel(stream_id, info.status)
                channel.deleted = info.deleted
                self._channels[stream_id] = channel
            return channel

    def leave(self, channel: Channel, waiter: asyncio.Event) -> None:
        channel.waiters.discard(waiter)
        with self._lock:
            if not channel.waiters and self._channels.get(channel.stream_id) is channel:
                del self._channels[channel.stream_id]

    def _page(self, stream_id: str, cursor: int) -> list[tuple[int, bytes]]:
        rows = self._db.fetchall(
            "SELECT seq, set_jwt FROM set_log WHERE stream_id = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (stream_id, cursor, PAGE),
        )
        return [(int(r["seq"]), frame(int(r["seq"]), str(r["set_jwt"]))) for r in rows]

    def _through(self, stream_id: str, status: str) -> int | None:
        with self._db.snapshot() as cur:
            return announced_through(cur, stream_id, status)

    async def _deliverable(self, channel: Channel) -> int | None:
        """The highest seq the channel's stream sends now (None: every SET)."""
        if channel.status == StreamStatus.ENABLED.value:
            return None
        if channel.through is None:
            changes = channel.changes
            through = await asyncio.to_thread(self._through, channel.stream_id, channel.status)
            if channel.changes != changes:  # changed meanwhile: read again next time round
                return 0
            channel.through = through
        return channel.through

    def _bounds(self, stream_id: str) -> tuple[int | None, int]:
        """(oldest retained seq or None if empty, next seq to be written), read in one
        snapshot: read apart, a batch committed in between would make an empty log look
        like one whose SETs were all pruned, and the new subscriber would skip one."""
        with self._db.snapshot() as cur:
            cur.execute(
                "SELECT min(seq) AS oldest, max(seq) AS newest FROM set_log WHERE stream_id = %s",
                (stream_id,),
            )
            row = cur.fetchone()
            cur.execute("SELECT next_seq FROM ssf_streams WHERE stream_id = %s", (stream_id,))
            stream = cur.fetchone()
        next_seq = 1 if stream is None else int(stream["next_seq"])
        oldest = None if row is None or row["oldest"] is None else int(row["oldest"])
        return oldest, next_seq

    async def events(
        self, stream_id: str, last_event_id: int | None, lease: Lease | None = None
    ) -> AsyncIterator[bytes]:
        """The SSE body of one subscriber: ``retry``, a ``resync`` when its cursor is not
        in the log, then every SET after its cursor, in order, live; with a ``lease``, an
        ``unauthorized`` event and the end once the subscriber's credential lapses."""
        channel = self.join(stream_id)
        waiter = asyncio.Event()
        channel.waiters.add(waiter)
        self.subscribers += 1
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            oldest, next_seq = await asyncio.to_thread(self._bounds, stream_id)
            first = oldest if oldest is not None else next_seq
            if last_event_id is None:
                cursor = first - 1
            elif last_event_id < first - 1 or last_event_id > next_seq - 1:
                cursor = first - 1
                why = (
                    "the Last-Event-ID is not an event id"
                    if last_event_id == UNKNOWN_CURSOR
                    else f"cursor {last_event_id} is not in the retained log"
                )
                payload = json.dumps({"reason": why, "oldest": first})
                yield f"id: {cursor}\nevent: resync\ndata: {payload}\n\n".encode()
            else:
                cursor = last_event_id
            while not channel.deleted:
                waiter.clear()
                through = await self._deliverable(channel)
                if through is None or cursor < through:
                    frames = channel.after(cursor)
                    if frames is None:
                        frames = await asyncio.to_thread(self._page, stream_id, cursor)
                    start = cursor
                    for seq, data in frames:
                        if through is not None and seq > through:
                            break
                        if seq > cursor:
                            # Checked before every SET: the key directory applies a
                            # revocation before the hub is handed any later SET.
                            reason = None if lease is None else lease.lapsed()
                            if reason is not None:
                                yield closing_frame(reason)
                                return
                            yield data
                            cursor = seq
                    if len(frames) >= PAGE and cursor > start:
                        continue
                if lease is None:
                    await waiter.wait()
                    continue
                reason = lease.lapsed()
                if reason is not None:
                    yield closing_frame(reason)
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), lease.recheck_in())
        finally:
            self.subscribers -= 1
            self.leave(channel, waiter)
