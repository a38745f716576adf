"""The dispatcher shared by the outbound delivery workers (SSF push, access-request
callbacks): one thread that looks for due work and hands each item to a small pool of
delivery threads, at most one per key in this process.

It wakes whenever the log follower has applied a batch (its read models read the log:
a write the follower only passed over, such as a Meter's, makes no work here), every
``interval`` seconds (for retries that became due), and on ``ring()``. A subclass says
what is due (``due_work``: ``(key, argument)`` pairs) and does one item (``work``:
True to look again at once, e.g. a burst ended with more to send).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

log = logging.getLogger("mission_ledger.dispatch")


class AppliesBatches(Protocol):
    """The log follower, as a dispatcher watches it."""

    @property
    def batches_applied(self) -> int: ...


class Dispatcher(ABC):
    #: Thread names (``<name>-dispatch``, ``<name>_N``).
    thread_name = "delivery"

    def __init__(
        self,
        *,
        follower: AppliesBatches | None,
        interval: float,
        timeout: float,
        concurrency: int,
    ) -> None:
        self._follower = follower
        self.interval = interval
        #: Seconds for each HTTP request (connect, write, read); read per request.
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self._bell = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._inflight: set[str] = set()
        self._futures: set[Future[None]] = set()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None

    @abstractmethod
    def due_work(self) -> list[tuple[str, Any]]:
        """``(key, argument)`` of each item due now."""

    @abstractmethod
    def work(self, key: str, argument: Any) -> bool:
        """Do one item; True to look for work again at once."""

    def opened(self) -> None:  # noqa: B027 - an optional hook
        """Called by ``start`` before the threads run (open clients)."""

    def closed(self) -> None:  # noqa: B027 - an optional hook
        """Called by ``stop`` once the threads are done (close clients)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.opened()
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=self.thread_name
        )
        self._thread = threading.Thread(
            target=self._run, name=f"{self.thread_name}-dispatch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop dispatching, let in-flight items finish (bounded by the HTTP timeout)."""
        self._stopping.set()
        self._bell.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                pending = set(self._futures)
            wait_futures(pending, timeout=self.timeout + 1)
            self._executor = None
        self.closed()

    def ring(self) -> None:
        """Look for work now (instead of at the next batch or interval)."""
        self._bell.set()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # ------------------------------------------------------------------ dispatch

    def _run(self) -> None:
        seen = -1
        last_scan = 0.0
        while not self._stopping.is_set():
            self._bell.wait(0.05)
            if self._stopping.is_set():
                return
            rung = self._bell.is_set()
            self._bell.clear()
            position = self._follower.batches_applied if self._follower is not None else seen
            now = time.monotonic()
            if not (rung or position != seen or now - last_scan >= self.interval):
                continue
            seen, last_scan = position, now
            try:
                self.dispatch()
            except Exception:
                log.exception("%s dispatch failed", self.thread_name)

    def dispatch(self) -> int:
        """Hand every due item not already being worked on here to the pool."""
        executor = self._executor
        submitted = 0
        for key, argument in self.due_work():
            if not self.claim(key, limit=True):
                continue
            if executor is None or self._stopping.is_set():
                self.release(key)
                break
            future = executor.submit(self._work, key, argument)
            with self._lock:
                self._futures.add(future)
            future.add_done_callback(self._forget)
            submitted += 1
        return submitted

    def claim(self, key: str, *, limit: bool = False) -> bool:
        """Mark ``key`` in flight here; False when it already is (or, with ``limit``, when
        the pool is full)."""
        with self._lock:
            if key in self._inflight or (limit and len(self._inflight) >= self.concurrency):
                return False
            self._inflight.add(key)
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._inflight.discard(key)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _work(self, key: str, argument: Any) -> None:
        again = False
        try:
            again = self.work(key, argument)
        except Exception:
            log.exception("%s of %s failed", self.thread_name, key)
        finally:
            self.release(key)
            if again:
                self._bell.set()
