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

A governance write that causes SETs (a revoke, a suspension, a narrowing) may wait, within
a bound, until they are sent: ``wait_sent(position, timeout)`` returns once every batch up
to the write's position is handed to the channels and every subscriber that was caught up
when its SETs arrived has had them written to its connection (a subscriber already behind,
paging from the store or stuck on a slow client, is not waited for; a closed one or one
whose stream stops delivering is let go). Nothing here blocks the follower or a
subscriber: a write only waits, and the buffers stay bounded (docs/decisions/0014).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
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
#: Outcomes of ``SseHub.wait_sent`` (the labels of ``mission_ledger_signal_waits_total``).
SENT, TIMEOUT, NO_SUBSCRIBERS, DISABLED = "sent", "timeout", "no_subscribers", "disabled"
ENABLED = StreamStatus.ENABLED.value


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


class Subscription:
    """One SSE subscriber of this process (touched only on the event loop)."""

    __slots__ = ("owed", "sent")

    def __init__(self) -> None:
        #: The ``seq`` of the last frame its connection took (None: still starting).
        self.sent: int | None = None
        #: The ``seq`` it is to be sent for the writes waiting in ``wait_sent``.
        self.owed = 0


@dataclass(eq=False)
class _SendWait:
    """One ``wait_sent``: the subscribers it still waits for, and the seq each must reach
    (None until the batches up to ``position`` are handed to the channels)."""

    position: int
    done: asyncio.Event = field(default_factory=asyncio.Event)
    pending: dict[Subscription, int] | None = None


class Durations:
    """Durations counted into fixed buckets by plain arithmetic on the hot path (the metrics
    endpoint turns them into a Prometheus histogram when scraped)."""

    #: Upper bounds in seconds (``+Inf`` is added at scrape time).
    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BUCKETS) + 1)  # the last one: above every bound
        self.total = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass
class SentWaits:
    """What ``wait_sent`` did, for the metrics endpoint."""

    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    durations: Durations = field(default_factory=Durations)


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
        self.subscriptions: set[Subscription] = set()  # its SSE subscribers (not long polls)

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
        # On the event loop: every batch up to ``_handed`` is handed to the channels; the
        # subscribers that owe a waiting write a frame; the writes waiting.
        self._handed = 0
        self._owing: set[Subscription] = set()
        self._send_waits: list[_SendWait] = []
        self.sent_waits = SentWaits()

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
        self._scanned = self._batch_high = self._handed = position
        return position

    #: The events it reads (the log follower reads only those some read model reads).
    topics = STREAM_TOPICS

    def apply(self, item: Item) -> None:
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
            self._loop.call_soon_threadsafe(
                self._status_changed, channel, info.status, info.deleted
            )

    def end_batch(self, end: int) -> None:
        """Hand every SET the events up to ``end`` caused to the channels of their
        streams."""
        self._batch_high = max(self._batch_high, end)
        low, high = self._scanned, self._batch_high
        if high <= low or self._loop is None:
            self._scanned = high
            self._handed = max(self._handed, high)  # no event loop yet: nobody waits
            return
        with self._lock:
            listening = set(self._channels)
        grouped: dict[str, list[tuple[int, bytes]]] = {}
        if listening:
            for stream_id, seq, set_jwt in sorted(self._batch_rows(low, high)):
                if stream_id in listening:
                    grouped.setdefault(stream_id, []).append((seq, frame(seq, set_jwt)))
        self._scanned = high  # only now: a failed read is retried with the next batch
        # Even with nothing to hand over: a write waiting in ``wait_sent`` learns that its
        # position has been through here.
        self._loop.call_soon_threadsafe(self._publish, grouped, high)

    def _batch_rows(self, low: int, high: int) -> Sequence[tuple[str, int, str]]:
        """(stream, seq, SET) of every SET caused by the events in (``low``, ``high``]."""
        published = None if self._signals is None else self._signals.published
        if published is not None and (published.start, published.end) == (low, high):
            return published.rows  # this process wrote exactly these (committed)
        # another replica did (or several batches' worth): read them back once
        return tuple(
            (str(row["stream_id"]), int(row["seq"]), str(row["set_jwt"]))
            for row in self._db.fetchall(
                "SELECT stream_id, seq, set_jwt FROM set_log "
                "WHERE cause_position > %s AND cause_position <= %s",
                (low, high),
            )
        )

    def _publish(self, grouped: dict[str, list[tuple[int, bytes]]], high: int) -> None:
        """On the event loop: hand each stream's frames to its channel, if still joined;
        the subscribers caught up to them owe them to the writes waiting."""
        for stream_id, frames in grouped.items():
            channel = self._channels.get(stream_id)
            if channel is None:
                continue
            channel.publish(frames)
            if channel.status == ENABLED and not channel.deleted:
                first, last = frames[0][0], frames[-1][0]
                for subscription in channel.subscriptions:
                    sent = subscription.sent
                    if sent is not None and first - 1 <= sent < last:
                        subscription.owed = last
                        self._owing.add(subscription)
        self._handed = max(self._handed, high)
        for wait in self._send_waits:
            if wait.pending is None and wait.position <= self._handed:
                self._take_stock(wait)

    def _status_changed(self, channel: Channel, status: str, deleted: bool) -> None:
        """On the event loop. A stream that stops delivering owes no waiting write."""
        channel.set_status(status, deleted)
        if status != ENABLED or deleted:
            for subscription in channel.subscriptions:
                self._release(subscription)

    # ------------------------------------------------------------------ writes waiting

    async def wait_sent(self, position: int, timeout: float) -> str:
        """Wait, at most ``timeout`` seconds, until the SETs caused by the events up to
        ``position`` are written to every SSE subscriber of this process that was caught
        up when they arrived. Returns the outcome (also counted, with the time waited, in
        ``sent_waits``): ``sent``; ``timeout``; ``no_subscribers`` (none here: answers at
        once); ``disabled`` (``timeout`` 0). Never raises for a timeout: the write is
        committed either way, the SETs are then delivered as usual."""
        if timeout <= 0:
            outcome = DISABLED
        elif not self.subscribers:
            outcome = NO_SUBSCRIBERS
        else:
            loop = asyncio.get_running_loop()
            started = loop.time()
            wait = _SendWait(position)
            self._send_waits.append(wait)
            if position <= self._handed:
                self._take_stock(wait)
            try:
                async with asyncio.timeout(timeout):
                    await wait.done.wait()
                outcome = SENT
            except TimeoutError:
                outcome = TIMEOUT
                # Too slow to take the frames in time: behind from now on, so no later
                # write waits for them until they have caught up again.
                self._owing.difference_update(wait.pending or ())
            finally:
                self._send_waits.remove(wait)
            self.sent_waits.durations.observe(loop.time() - started)
        self.sent_waits.outcomes[outcome] += 1
        return outcome

    def _take_stock(self, wait: _SendWait) -> None:
        """The batches up to the wait's position are handed over: it waits for the
        subscribers that owe a frame now (owing one of a later batch only waits longer)."""
        wait.pending = {subscription: subscription.owed for subscription in self._owing}
        if not wait.pending:
            wait.done.set()

    def _progress(self, subscription: Subscription, seq: int) -> None:
        """A subscriber's connection took the frame ``seq``."""
        subscription.sent = seq
        if seq >= subscription.owed:
            self._owing.discard(subscription)
        for wait in self._send_waits:
            target = None if wait.pending is None else wait.pending.get(subscription)
            if target is not None and seq >= target:
                self._settle(wait, subscription)

    def _release(self, subscription: Subscription) -> None:
        """A subscriber that left, or whose stream stopped delivering: not waited for."""
        self._owing.discard(subscription)
        for wait in self._send_waits:
            if wait.pending and subscription in wait.pending:
                self._settle(wait, subscription)

    @staticmethod
    def _settle(wait: _SendWait, subscription: Subscription) -> None:
        assert wait.pending is not None
        del wait.pending[subscription]
        if not wait.pending:
            wait.done.set()

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

    async def _start(self, stream_id: str, last_event_id: int | None) -> tuple[int, bytes | None]:
        """Where a new subscriber starts: its cursor, and the ``resync`` event to send first
        when its ``Last-Event-ID`` is not in the retained log (None: it is)."""
        oldest, next_seq = await asyncio.to_thread(self._bounds, stream_id)
        first = oldest if oldest is not None else next_seq
        if last_event_id is None:
            return first - 1, None
        if first - 1 <= last_event_id <= next_seq - 1:
            return last_event_id, None
        cursor = first - 1
        why = (
            "the Last-Event-ID is not an event id"
            if last_event_id == UNKNOWN_CURSOR
            else f"cursor {last_event_id} is not in the retained log"
        )
        payload = json.dumps({"reason": why, "oldest": first})
        return cursor, f"id: {cursor}\nevent: resync\ndata: {payload}\n\n".encode()

    async def events(
        self, stream_id: str, last_event_id: int | None, lease: Lease | None = None
    ) -> AsyncIterator[bytes]:
        """The SSE body of one subscriber: ``retry``, a ``resync`` when its cursor is not
        in the log, then every SET after its cursor, in order, live; with a ``lease``, an
        ``unauthorized`` event and the end once the subscriber's credential lapses."""
        channel = self.join(stream_id)
        waiter = asyncio.Event()
        channel.waiters.add(waiter)
        subscription = Subscription()
        channel.subscriptions.add(subscription)
        self.subscribers += 1
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            cursor, resync = await self._start(stream_id, last_event_id)
            if resync is not None:
                yield resync
            subscription.sent = cursor
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
                            yield data  # resumed once the connection took it
                            cursor = seq
                            self._progress(subscription, seq)
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
            channel.subscriptions.discard(subscription)
            self._release(subscription)
            self.leave(channel, waiter)
