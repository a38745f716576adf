"""The log follower: one background thread per process that tails the ledger.

It reads the notification log by position (so a lost wake-up only delays, never
loses, an event) and feeds, in order:

* **durable projections** (tables in the store): each batch is applied in one
  transaction together with the projection's tracking row, locked ``FOR UPDATE`` on
  PostgreSQL, so several replicas can run the same projection and every event is
  applied exactly once, across crashes and restarts;
* **live consumers** (in-memory indexes of this process), which are bootstrapped at
  start-up and then updated in place.

Wake-ups: local writes ring the in-process doorbell (commit listeners); on
PostgreSQL a listener thread turns ``NOTIFY ledger_events`` into the same doorbell;
and a periodic poll catches anything else (writes by other processes on SQLite, a
dropped LISTEN connection). A write whose events no read model here reads (a Meter's,
under metering load: each group of the Meter writer is one) does not wake the thread:
when it continues the log from where the read models are, the positions move over it
at once, without reading it (``_pass_over``); else the next wake-up covers it, at the
latest the poll's (a ``wait(position)`` rings the doorbell itself).

``wait(position)`` / ``await wait_async(position)`` block until every read model of
this process includes ``position``: the basis of read-your-writes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from eventsourcing.persistence import Notification

from ledger.application import Ledger
from ledger.domain.events import LedgerEvent
from ledger.persistence.database import Cursor, Dialect
from ledger.persistence.notify import payload_topics

log = logging.getLogger("mission_ledger.follower")

#: A durable read model's batch transaction (and its tracking row's update) is skipped for a
#: batch that holds no event it reads, until its row trails the log by this many positions.
#: Most batches under metering load hold only Meter events, which one read model reads:
#: without this, each of the others would commit a transaction (an fsync) per batch to move a
#: position. A row that trails only makes a restart re-read events the model ignores.
TRACKING_SLACK = 10_000


class Item:
    """One event of the log, with its position and stored topic. The event is decoded when
    first read: read models look at the topic first, and most skip most events (under
    metering load, most events are a Meter's, which only the Meter writer reads)."""

    __slots__ = ("_decode", "_event", "position", "topic")

    def __init__(
        self,
        position: int,
        topic: str,
        event: LedgerEvent | None = None,
        *,
        decode: Callable[[], LedgerEvent] | None = None,
    ) -> None:
        self.position = position
        self.topic = topic
        self._event = event
        self._decode = decode

    @property
    def event(self) -> LedgerEvent:
        if self._event is None:
            assert self._decode is not None
            self._event = self._decode()
        return self._event


class DurableProjection(ABC):
    """A read model stored beside the events and tracked in ``projection_tracking``."""

    #: Unique, stable name (the tracking row's key).
    name: str
    #: Stored topics this projection reads; other events only advance its tracking.
    topics: frozenset[str]

    @abstractmethod
    def apply(self, cur: Cursor, item: Item) -> None:
        """Update the read model for one event, inside the batch transaction."""

    def begin_batch(self, cur: Cursor, tracked: int) -> None:  # noqa: B027 - an optional hook
        """Called in the batch transaction before its first event (load shared state);
        ``tracked`` is the position the committed rows reflect (-1 during a rebuild)."""

    def end_batch(self, cur: Cursor) -> None:  # noqa: B027 - an optional hook
        """Called in the batch transaction after its last event (write shared state)."""

    def committed(self, start: int, end: int, *, applied: bool) -> None:  # noqa: B027
        """Called after a batch transaction of this process committed, moving the tracking
        position from ``start`` to ``end``; ``applied``: this read model's events of
        (``start``, ``end``] went through ``begin_batch``/``apply``/``end_batch`` in it
        (False: the range held none). Not called when another replica applied the range."""

    @abstractmethod
    def reset(self, cur: Cursor) -> None:
        """Delete every row of the read model (for a rebuild from position 0)."""


@dataclass(frozen=True, eq=False)  # compared by identity: each waiter is removed by itself
class _Waiter:
    """An ``await wait_async(position)`` in some event loop."""

    position: int
    core: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


@dataclass
class ReadModelTimings:
    """Cumulative time one read model of this process spent on the log's batches."""

    batches: int = 0
    #: Applying (for a durable one: from holding the tracking lock to the commit).
    apply_seconds: float = 0.0
    #: Waiting for the tracking lock while another replica applied the same events.
    lock_wait_seconds: float = 0.0

    def add(self, applying: float, waiting: float) -> None:
        self.batches += 1
        self.apply_seconds += applying
        self.lock_wait_seconds += waiting


class LiveConsumer(Protocol):
    """An in-memory read model of this process."""

    def bootstrap(self, ledger: Ledger) -> int:
        """Load the current state; return the log position it reflects."""
        ...

    def apply(self, item: Item) -> None: ...

    # Optionally:
    # * ``topics``: the stored topics it reads (a ``frozenset``, read before every read of
    #   the log, so it may change), or ``None`` for every event (also when absent). The
    #   follower reads from the store only the events some read model reads.
    # * ``end_batch(end)``, called after each batch with the position it reached: every
    #   event up to ``end`` that the consumer reads has been applied (every durable read
    #   model of the batch is committed by then). A batch may hold no event for it at all.


class LogFollower:
    def __init__(
        self,
        ledger: Ledger,
        *,
        durable: Sequence[DurableProjection] = (),
        live: Sequence[LiveConsumer] = (),
        trailing_durable: Sequence[DurableProjection] = (),
        trailing_live: Sequence[LiveConsumer] = (),
        listen_dsn: dict[str, Any] | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 500,
    ) -> None:
        """``durable`` and ``live`` read models make up the *core position* (what writes
        wait for); the ``trailing_*`` ones (the signal log and the SSE hub) are applied after
        it has advanced, so a write's answer does not wait for them."""
        self._ledger = ledger
        self._db = ledger.database
        self._durable = [*durable, *trailing_durable]
        self._durable_topics = frozenset[str]().union(*(p.topics for p in self._durable))
        self._live = [*live, *trailing_live]
        self._core_durable = len(durable)
        self._core_live = len(live)
        self._live_positions: list[int] = []
        #: The tracking position each durable read model had when this process last read or
        #: wrote it (what ``TRACKING_SLACK`` is measured from).
        self._tracked: dict[str, int] = {}
        self._listen_dsn = listen_dsn
        # A channel of this follower's own: stop() notifies it to end the LISTEN wait at once.
        self._wake_channel = f"ledger_follower_{uuid.uuid4().hex}"
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._bell = threading.Event()
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._position = 0
        self._core_position = 0
        #: ``time.monotonic()`` just before the newest read of the log that reached its head:
        #: every event committed before that instant is applied here (see ``staleness``).
        self._fresh_at = time.monotonic()
        self._async_lock = threading.Lock()
        self._async_waiters: list[_Waiter] = []
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self.started = False
        self.batches_applied = 0
        #: Per read model: time spent applying batches and waiting for the tracking lock
        #: (another replica applying the same batch), for the metrics endpoint.
        self.timings: dict[str, ReadModelTimings] = {
            name: ReadModelTimings()
            for name in [p.name for p in self._durable] + [_live_name(c) for c in self._live]
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bootstrap every read model, catch up once, then follow in the background."""
        self._ensure_tracking_rows()
        self._live_positions = [consumer.bootstrap(self._ledger) for consumer in self._live]
        durable = self._durable_positions()
        self._tracked = {p.name: at for p, at in zip(self._durable, durable, strict=True)}
        self._position = min([*self._live_positions, *durable, self.head()])
        self._core_position = self._position
        self._ledger.commit_listeners.add(self._on_commit)
        self.catch_up()
        follow = threading.Thread(target=self._run, name="ledger-follower", daemon=True)
        self._threads.append(follow)
        if self._listen_dsn is not None and self._db.dialect is Dialect.POSTGRES:
            listen = threading.Thread(target=self._listen, name="ledger-listen", daemon=True)
            self._threads.append(listen)
        for thread in self._threads:
            thread.start()
        self.started = True

    def stop(self) -> None:
        self._stopping.set()
        self._bell.set()
        self._ledger.commit_listeners.remove(self._on_commit)
        if self._listen_dsn is not None and self._db.dialect is Dialect.POSTGRES:
            try:
                self._db.execute(f"NOTIFY {self._wake_channel}")
            except Exception:  # the database is gone: the listener times out on its own
                log.debug("could not wake the LISTEN thread", exc_info=True)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        with self._async_lock:
            waiters, self._async_waiters = self._async_waiters, []
        for waiter in waiters:
            waiter.loop.call_soon_threadsafe(_cancel, waiter.future)

    # ------------------------------------------------------------------ positions

    @property
    def position(self) -> int:
        """Every read model of this process includes every event up to here."""
        return self._position

    @property
    def core_position(self) -> int:
        """The core read models (all but the trailing ones) include every event up to here."""
        return self._core_position

    def _reached(self, position: int, *, core: bool) -> bool:
        return (self._core_position if core else self._position) >= position

    def head(self) -> int:
        return self._ledger.head_position()

    def lag(self) -> int:
        return max(0, self.head() - self._position)

    def staleness(self) -> float:
        """Seconds since this replica last confirmed that it had applied everything in the
        store (0 right after a read that reached the head). Grows while the follower cannot
        read the log (store unreachable, follower stuck) or trails it: the decision point
        fails closed on it (SPEC 7.3 "freshness fails closed")."""
        return max(0.0, time.monotonic() - self._fresh_at)

    @property
    def healthy(self) -> bool:
        return self._error is None

    def ring(self) -> None:
        self._bell.set()

    def wait(self, position: int, timeout: float, *, core: bool = False) -> bool:
        """Block until ``position`` is applied here (True) or ``timeout`` passes (False);
        with ``core``, by the core read models only."""
        if self._reached(position, core=core):
            return True
        self._bell.set()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._reached(position, core=core):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    async def wait_async(self, position: int, timeout: float, *, core: bool = False) -> bool:
        if self._reached(position, core=core):
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = _Waiter(position, core, loop, future)
        with self._async_lock:
            self._async_waiters.append(entry)
        if self._reached(position, core=core):  # advanced while registering
            future.cancel()
        self._bell.set()
        try:
            if not future.cancelled():
                await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return self._reached(position, core=core)
        except asyncio.CancelledError:
            if not self._reached(position, core=core):
                raise
        finally:
            with self._async_lock:
                if entry in self._async_waiters:
                    self._async_waiters.remove(entry)
        return True

    # ------------------------------------------------------------------ reading

    def catch_up(self) -> None:
        """Apply everything up to the current head (called by the thread, and at start).

        Only the events some read model reads are read from the store (``_topics``): under
        metering load nearly every event is a Meter's, which none reads, and reading each
        row cost this thread (and the event loop, at the interpreter lock) more than
        everything else it does. Positions advance over the others all the same: the head
        is read first, and a read that returns less than a batch has seen every event up to
        it (writers commit in position order: decision 0003)."""
        while not self._stopping.is_set():
            reading_at = time.monotonic()
            head = self.head()
            if head <= self._position:
                self._fresh_at = max(self._fresh_at, reading_at)
                return
            notifications = self._ledger.recorder.select_notifications(
                start=self._position,
                limit=self._batch_size,
                stop=head,
                topics=self._topics(),
                inclusive_of_start=False,
            )
            full = len(notifications) == self._batch_size
            end = notifications[-1].id if full else head
            self._apply([self._decode(n) for n in notifications], end)
            if not full:
                # That read saw every event committed before ``reading_at``, and all of
                # them are applied now.
                self._fresh_at = max(self._fresh_at, reading_at)
                return

    def _topics(self) -> tuple[str, ...]:
        """The stored topics some read model reads, sorted (empty: every topic)."""
        wanted = self._wanted()
        return () if wanted is None else tuple(sorted(wanted))

    def _wanted(self) -> frozenset[str] | None:
        """The stored topics some read model reads (``None``: every topic). A live read
        model's may change (``LiveConsumer``): read each time."""
        wanted = self._durable_topics
        for consumer in self._live:
            topics: frozenset[str] | None = getattr(consumer, "topics", None)
            if topics is None:
                return None
            wanted = wanted | topics
        return wanted

    def wakes_for(self, topics: frozenset[str] | None) -> bool:
        """Whether a write of events of ``topics`` (``None``: not known) is worth waking
        the thread for: some read model here reads one of them."""
        if topics is None:
            return True
        wanted = self._wanted()
        return wanted is None or not wanted.isdisjoint(topics)

    def _decode(self, notification: Notification) -> Item:
        def decode() -> LedgerEvent:
            event = self._ledger.mapper.to_domain_event(notification)
            assert isinstance(event, LedgerEvent)
            return event

        return Item(position=notification.id, topic=notification.topic, decode=decode)

    def _apply(self, items: list[Item], end: int) -> None:
        """Apply ``items`` (the events read models read, in order) and advance every
        position to ``end``, the last position the batch covers (at or after the last
        item)."""
        for projection in self._durable[: self._core_durable]:
            self._apply_durable(projection, items, end)
        for index in range(self._core_live):
            self._apply_live(index, items, end)
        self._advance(end, core_only=True)
        for projection in self._durable[self._core_durable :]:
            self._apply_durable(projection, items, end)
        for index in range(self._core_live, len(self._live)):
            self._apply_live(index, items, end)
        self.batches_applied += 1
        self._advance(end)

    def _apply_live(self, index: int, items: list[Item], end: int) -> None:
        consumer = self._live[index]
        started = time.perf_counter()
        floor = self._live_positions[index]
        for item in items:
            if item.position > floor:
                consumer.apply(item)
        self._live_positions[index] = max(floor, end)
        end_batch = getattr(consumer, "end_batch", None)
        if end_batch is not None:
            end_batch(end)
        self.timings[_live_name(consumer)].add(time.perf_counter() - started, 0.0)

    def _apply_durable(self, projection: DurableProjection, items: list[Item], end: int) -> None:
        if (
            not any(i.topic in projection.topics for i in items)
            and end - self._tracked.get(projection.name, 0) < TRACKING_SLACK
        ):
            return  # nothing it reads: its tracking row may trail (see TRACKING_SLACK)
        started = time.perf_counter()
        locked = started
        try:
            with self._db.transaction() as cur:
                tracked = _lock_tracking(cur, self._db.dialect, projection.name)
                locked = time.perf_counter()
                self._tracked[projection.name] = tracked
                if end <= tracked:
                    return  # another replica applied this batch already
                topics = projection.topics
                relevant = [i for i in items if i.position > tracked and i.topic in topics]
                if relevant:
                    projection.begin_batch(cur, tracked)
                    for item in relevant:
                        projection.apply(cur, item)
                    projection.end_batch(cur)
                cur.execute(
                    "UPDATE projection_tracking SET position = %s WHERE projection = %s",
                    (end, projection.name),
                )
            self._tracked[projection.name] = end
            projection.committed(tracked, end, applied=bool(relevant))
        finally:
            done = time.perf_counter()
            self.timings[projection.name].add(done - locked, locked - started)

    def _advance(self, position: int, *, core_only: bool = False) -> None:
        with self._cond:
            self._core_position = max(self._core_position, position)
            if not core_only:
                self._position = max(self._position, position)
            self._cond.notify_all()
        with self._async_lock:
            ready = [w for w in self._async_waiters if self._reached(w.position, core=w.core)]
        for waiter in ready:
            waiter.loop.call_soon_threadsafe(_resolve, waiter.future)

    # ------------------------------------------------------------------ threads

    def _on_commit(self, positions: Sequence[int], topics: frozenset[str]) -> None:
        if self.wakes_for(topics):
            self._bell.set()
        else:
            self._pass_over(positions)

    def _pass_over(self, positions: Sequence[int]) -> None:
        """Advance over a write of this process that no read model reads, without reading
        it, when it continues the log from where every read model is: a write's positions
        are consecutive, and later than those of every write committed before it (the
        table lock of decision 0003), so every position up to its last is then applied
        here. Otherwise (another write came between) the next wake-up covers it; so does it
        when a durable read model's tracking row would trail by ``TRACKING_SLACK``."""
        first, last = min(positions), max(positions)
        if last - first + 1 != len(positions):
            return
        if last - min(self._tracked.values(), default=last) >= TRACKING_SLACK:
            self._bell.set()  # a batch, to write the tracking rows that trail that far
            return
        with self._cond:
            if first > min(self._position, self._core_position) + 1:
                return
        self._advance(last)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            self._bell.wait(self._poll_interval)
            self._bell.clear()
            if self._stopping.is_set():
                return
            try:
                self.catch_up()
            except Exception as error:
                self._error = error
                log.exception("log follower failed; retrying in %.1fs", backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                self._bell.set()
            else:
                self._error = None
                backoff = 0.1

    def _listen(self) -> None:
        assert self._listen_dsn is not None
        while not self._stopping.is_set():
            try:
                with psycopg.connect(**self._listen_dsn, autocommit=True) as conn:
                    conn.execute("LISTEN ledger_events")
                    conn.execute(f"LISTEN {self._wake_channel}")
                    self._bell.set()  # catch up on anything missed while disconnected
                    while not self._stopping.is_set():
                        for notify in conn.notifies(timeout=0.5, stop_after=1):
                            if self.wakes_for(payload_topics(notify.payload)):
                                self._bell.set()
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self._stopping.wait(1.0)

    # ------------------------------------------------------------------ tracking

    def _ensure_tracking_rows(self) -> None:
        with self._db.transaction() as cur:
            for projection in self._durable:
                cur.execute(
                    "INSERT INTO projection_tracking (projection, position) VALUES (%s, 0) "
                    "ON CONFLICT (projection) DO NOTHING",
                    (projection.name,),
                )

    def _durable_positions(self) -> list[int]:
        if not self._durable:
            return []
        rows = self._db.fetchall("SELECT projection, position FROM projection_tracking")
        tracked = {row["projection"]: int(row["position"]) for row in rows}
        return [tracked.get(p.name, 0) for p in self._durable]

    def rebuild(self, name: str) -> int:
        """Refill one durable read model from position 0, in a single transaction.

        The tracking row stays locked throughout, so other processes following the log
        wait instead of interleaving newer events with the replay. Returns the position
        the rebuilt model reflects.
        """
        projection = next((p for p in self._durable if p.name == name), None)
        if projection is None:
            msg = f"no read model named {name!r}"
            raise KeyError(msg)
        self._ensure_tracking_rows()
        with self._db.transaction() as cur:
            _lock_tracking(cur, self._db.dialect, name)
            projection.reset(cur)
            position = 0
            while True:
                notifications = self._ledger.recorder.select_notifications(
                    start=position, limit=self._batch_size, inclusive_of_start=False
                )
                items = [self._decode(n) for n in notifications]
                relevant = [i for i in items if i.topic in projection.topics]
                if relevant:
                    projection.begin_batch(cur, -1)
                    for item in relevant:
                        projection.apply(cur, item)
                    projection.end_batch(cur)
                if items:
                    position = items[-1].position
                if len(notifications) < self._batch_size:
                    break
            cur.execute(
                "UPDATE projection_tracking SET position = %s WHERE projection = %s",
                (position, name),
            )
        return position


def _live_name(consumer: LiveConsumer) -> str:
    return str(getattr(consumer, "name", type(consumer).__name__))


def _lock_tracking(cur: Cursor, dialect: Dialect, name: str) -> int:
    select = "SELECT position FROM projection_tracking WHERE projection = %s"
    if dialect is Dialect.POSTGRES:
        select = "SELECT position FROM projection_tracking WHERE projection = %s FOR UPDATE"
    cur.execute(select, (name,))
    row = cur.fetchone()
    if row is None:
        cur.execute(
            "INSERT INTO projection_tracking (projection, position) VALUES (%s, 0)", (name,)
        )
        return 0
    return int(row["position"])


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cancel(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.cancel()
