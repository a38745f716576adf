"""Fair retries for commands that lose optimistic-concurrency races.

A command loads, decides and saves; when another command committed to the same
aggregate first, the store's unique key rejects the save and the command retries from
a fresh load. Without help, a command that touches many aggregates (a Mission revoke
that cascades to every Mandate in its tree) can lose every retry to a stream of small
commands (issuances appending to the same tree), and a revoke that fails under load is
exactly what an authorization system must never do.

Two measures keep every command making progress:

* ``WriteGate``: every attempt of a command (``LedgerBase.execute``) in this process
  runs holding the gate *shared*; a command that has lost ``ESCALATE_AFTER`` races
  takes it *exclusively* for its remaining attempts, so no other command attempt in this
  process starts until it has committed. Waiting exclusive holders block new shared
  holders (writer preference), so the starving command cannot be overtaken again by
  commands of this process. (Writes outside ``execute``, such as the scheduler's
  clock-driven transitions, do not take the gate; they are rare.)
* ``backoff``: a jittered, exponentially growing pause before each retry until the
  command escalates (never while it holds the gate exclusively, which would stall every
  writer here), spreading out contenders in *other* processes, which the gate cannot
  see. Against another replica's stream of writes, a command can still run out of
  attempts and answer 409 ``conflict``.

A thread holding the gate must not wait for another thread's command (writers
preferred: that would deadlock), and commands do not nest.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ESCALATE_AFTER = 2
BACKOFF_BASE_SECONDS = 0.001
BACKOFF_CAP_SECONDS = 0.05


class WriteGate:
    """A writer-preferring shared/exclusive gate around command attempts (reentrant
    per thread, so a thread holding it in either mode passes straight through)."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0
        self._held = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        if self.held:
            yield
            return
        with self._condition:
            while self._exclusive or self._exclusive_waiting:
                self._condition.wait()
            self._shared += 1
        with self._holding(self._leave_shared):
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        if self.held:
            raise RuntimeError("the write gate cannot be escalated while held")
        with self._condition:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._condition.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        with self._holding(self._leave_exclusive):
            yield

    @contextmanager
    def _holding(self, leave: Callable[[], None]) -> Iterator[None]:
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._condition:
                leave()

    def _leave_shared(self) -> None:
        self._shared -= 1
        if self._shared == 0:
            self._condition.notify_all()

    def _leave_exclusive(self) -> None:
        self._exclusive = False
        self._condition.notify_all()

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the gate (in either mode)."""
        return bool(getattr(self._held, "depth", 0))


def backoff(conflicts: int, *, rng: random.Random | None = None) -> float:
    """Sleep a random ("full jitter") pause before retry number ``conflicts``; returns
    the pause in seconds."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** max(conflicts - 1, 0)))
    pause = (rng or random).uniform(0.0, ceiling)
    time.sleep(pause)
    return pause
