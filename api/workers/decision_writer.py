"""The decision log writer: every decision is recorded, and decisions do not wait for the
disk (SPEC 7.4).

The decision path hands its records to ``record`` (on the event loop): they are appended
to a queue in memory and the answer goes out. A writer thread drains the queue in batches,
turns the records into rows (the JCS digest of each request, the JSON of its members) and
stores each batch in one transaction (``COPY`` on PostgreSQL: a group commit), so a record
is committed within ``DECISION_LOG_FLUSH_MS`` of its decision: a batch is taken once its
oldest record has waited a quarter of the window (or once it is full), leaving the rest for
the commit.

The queue is bounded, by count (``DECISION_LOG_QUEUE_SIZE``) and by age: while the oldest
record not yet committed is older than the flush window (the store is slow or unreachable),
or the queue is full, ``record`` returns a future and the answer waits for the writer to
catch up (backpressure). Records are never dropped: a failed batch is written again, with
growing pauses, until it is stored (``ON CONFLICT DO NOTHING``: a batch whose commit
outcome was unknown is not stored twice); after a few failures row by row, a record the
store cannot hold being stored without the request's members. So a crash loses at most
the records of decisions answered within the last flush window.

``DECISION_LOG_MODE=sync``: each answer waits until its records are committed (batches are
then taken at once; decisions answered together still share a commit). ``off`` records
nothing (benchmark baselines and development only).

On shutdown (the app's lifespan) ``stop`` writes everything still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from projections.decision_log import DecisionLog, DecisionRecord, Row

log = logging.getLogger("mission_ledger.decision_log")

Mode = Literal["async", "sync", "off"]

#: Records per transaction at most.
BATCH_SIZE = 5_000
#: The share of the flush window a batch waits for more records before it is taken: the rest
#: is the writer's headroom for the commit before answers are held back. A quarter keeps
#: batches large under load (every record arriving during a commit joins the next batch)
#: while a writer slowed by the interpreter lock or a shared disk still commits in time.
LINGER_SHARE = 0.25
#: Pauses between attempts to write a failed batch: doubling from the first to the last.
RETRY_FIRST, RETRY_LAST = 0.05, 2.0
#: After this many failed attempts a batch is written row by row (``write_separately``): a
#: record the store cannot hold must not hold up every decision after it.
SEPARATELY_AFTER = 3


class DecisionRecorder:
    """What both decision log writers share (this module's thread, ``decision_process``'s
    writer process): the mode, the counters, and the answers held back while the writer is
    behind. The decision path and the app's lifespan use only what is defined here."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []  # answers held back (event loop only)
        #: Counters for the metrics endpoint.
        self.written = 0
        self.batches = 0
        self.failed_attempts = 0
        self.held_back = 0
        self.restarts = 0  # writer processes started again after one ended (process only)
        self.starved = 0  # writer processes replaced because they were starved (process only)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def unwritten(self) -> int:
        """Records handed over and not yet committed."""
        raise NotImplementedError

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop whose answers wait on this writer (the app's)."""
        self._loop = loop

    def start(self) -> None:
        raise NotImplementedError

    def record(self, records: Sequence[DecisionRecord]) -> asyncio.Future[None] | None:
        """Queue the records of one answer (on the event loop). Returns what the answer
        must wait for first, if anything: in sync mode the commit of these records; when
        the writer is behind, its catching up."""
        raise NotImplementedError

    async def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop. A store unreachable for ``timeout`` seconds
        loses what is left (logged as an error)."""
        raise NotImplementedError

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "attach() the event loop first"
        return self._loop

    def _answer_now_or_hold(self, behind: bool) -> asyncio.Future[None] | None:
        """An async-mode answer's wait: none unless the writer is ``behind``."""
        if not behind:
            if self._waiters:  # the writer has caught up since they were held back
                self._release()
            return None
        self.held_back += 1
        waiter = self._running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def _release(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class _Entry:
    """The records of one answer, when they were handed over, and (sync mode) the future
    the answer waits on."""

    admitted: float  # time.monotonic()
    records: Sequence[DecisionRecord]
    committed: asyncio.Future[None] | None


class DecisionWriter(DecisionRecorder):
    def __init__(
        self,
        store: DecisionLog,
        *,
        mode: Mode = "async",
        flush_ms: int = 100,
        queue_size: int = 10_000,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        super().__init__(mode)
        self._store = store
        self._window = flush_ms / 1000
        self._linger = 0.0 if mode == "sync" else self._window * LINGER_SHARE
        self._capacity = queue_size
        self._batch_size = batch_size
        #: Queued records that make the writer take a batch without lingering.
        self._flush_at = min(batch_size, queue_size)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Entry] = deque()
        self._queued = 0  # records in the queue
        self._in_flight = 0  # records taken by the writer, not yet committed
        self._in_flight_since: float | None = None  # admission of the oldest of them
        self._stopping = False
        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def unwritten(self) -> int:
        return self._queued + self._in_flight

    def start(self) -> None:
        if not self.enabled:
            return
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    async def close(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """``close`` from a thread other than the event loop's."""
        thread = self._thread
        if thread is None:
            return
        with self._wake:
            self._stopping = True
            self._wake.notify()
        thread.join(timeout)
        if thread.is_alive():
            self._abandon.set()
            thread.join(5)
        self._thread = None

    # ------------------------------------------------------------------ the decision path

    def record(self, records: Sequence[DecisionRecord]) -> asyncio.Future[None] | None:
        if not self.enabled or not records:
            return None
        loop = self._running_loop()
        committed = loop.create_future() if self.mode == "sync" else None
        now = time.monotonic()
        with self._wake:
            first = not self._queue
            self._queue.append(_Entry(now, records, committed))
            self._queued += len(records)
            if first or self._queued >= self._flush_at:
                self._wake.notify()
            behind = committed is None and self._behind(now)
        if committed is not None:
            return committed
        return self._answer_now_or_hold(behind)

    def _behind(self, now: float) -> bool:
        """Whether answers must wait (call with the lock held): the queue is full, or the
        oldest record not yet committed has waited longer than the flush window."""
        if self._queued + self._in_flight >= self._capacity:
            return True
        oldest = self._in_flight_since
        if oldest is None and self._queue:
            oldest = self._queue[0].admitted
        return oldest is not None and now - oldest > self._window

    def _committed(self, futures: list[asyncio.Future[None]]) -> None:
        """On the event loop, after each commit: release the answers waiting on it."""
        for future in futures:
            if not future.done():
                future.set_result(None)
        if not self._waiters:
            return
        with self._lock:
            behind = self._behind(time.monotonic())
        if not behind:  # else the next commit looks again
            self._release()

    # ------------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            rows: list[Row] = [record.row() for entry in batch for record in entry.records]
            if not self._write(rows):
                return
            with self._lock:
                self._in_flight = 0
                self._in_flight_since = None
            self.written += len(rows)
            self.batches += 1
            futures = [entry.committed for entry in batch if entry.committed is not None]
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._committed, futures)

    def _next_batch(self) -> list[_Entry] | None:
        """Wait for records, and for the oldest of them to have waited ``linger`` (or for a
        full batch, or shutdown); take a batch. None when stopped and everything is written."""
        with self._wake:
            while not self._queue:
                if self._stopping:
                    return None
                self._wake.wait()
            while not self._stopping and self._queued < self._flush_at:
                delay = self._queue[0].admitted + self._linger - time.monotonic()
                if delay <= 0:
                    break
                self._wake.wait(delay)
            batch: list[_Entry] = []
            taken = 0
            while self._queue and (
                not batch or taken + len(self._queue[0].records) <= self._batch_size
            ):
                entry = self._queue.popleft()
                batch.append(entry)
                taken += len(entry.records)
            self._queued -= taken
            self._in_flight = taken
            self._in_flight_since = batch[0].admitted
            return batch

    def _write(self, rows: list[Row]) -> bool:
        """Store the batch, however many attempts it takes; False only when abandoned at
        shutdown."""
        if store_batch(self._store, rows, repeated=False, failed=self._failed):
            return True
        log.error(
            "decision log: %d records not written at shutdown (the store is unreachable)",
            len(rows) + self._queued,
        )
        return False

    def _failed(self, pause: float) -> bool:
        self.failed_attempts += 1
        return self._abandon.wait(pause)


def store_batch(
    store: DecisionLog, rows: list[Row], *, repeated: bool, failed: Callable[[float], bool]
) -> bool:
    """Store ``rows``, however many attempts it takes. After each failed attempt ``failed``
    is called with the pause to make before the next (growing from ``RETRY_FIRST`` to
    ``RETRY_LAST``); it makes it and answers whether to give up (shutdown with the store
    unreachable): then False. ``repeated``: the rows may be stored already (sent again after
    a writer process died)."""
    pause = RETRY_FIRST
    attempts = 0
    while True:
        try:
            if attempts < SEPARATELY_AFTER:
                store.write(rows, repeated=repeated or attempts > 0)
            else:
                store.write_separately(rows)
            return True
        except Exception:
            log.exception("decision log: writing %d records failed; trying again", len(rows))
        attempts += 1
        if failed(pause):
            return False
        pause = min(pause * 2, RETRY_LAST)
