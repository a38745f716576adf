"""Garbage-collector policy of a long-running replica: keep full collections short.

CPython's full (generation 2) collection walks every tracked object. A replica holds
many long-lived ones (the evaluation index, the signal log's streams, every SSE
subscriber's state), so a full collection paused all threads for 100-250 ms under
bench.revocation, now and then, on the decision and delivery paths alike.

The policy: freeze what is alive after start-up and again on every scheduler tick
(``gc.freeze``: frozen objects are skipped by collections, but still freed by reference
counting as usual), after collecting what is younger than the last tick, so a full
collection only ever walks what was allocated since then. Cyclic garbage among frozen
objects is not found until it is unfrozen, so every ``full_every_seconds`` everything is
unfrozen and collected once (one longer pause per interval, by default an hour).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable


class GcPolicy:
    def __init__(
        self, *, full_every_seconds: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._full_every = full_every_seconds
        self._monotonic = monotonic
        self._last_full = monotonic()
        self._lock = threading.Lock()
        #: Full collections of everything (frozen included) run by the policy.
        self.full_collections = 0

    def start(self) -> None:
        """After start-up: collect once, then freeze what survived (the bootstrapped state)."""
        with self._lock:
            gc.collect()
            gc.freeze()
            self._last_full = self._monotonic()

    def tick(self) -> None:
        """Every scheduler tick: freeze the survivors; now and then collect everything."""
        with self._lock:
            now = self._monotonic()
            if now - self._last_full >= self._full_every:
                gc.unfreeze()
                self._last_full = now
                self.full_collections += 1
            # Cheap unless after an unfreeze: only what is younger than the last tick is
            # walked. Garbage cycles among those are freed now, not frozen for an hour.
            gc.collect()
            gc.freeze()

    def stop(self) -> None:
        """Hand the frozen objects back to the collector (for tests and embedded use)."""
        with self._lock:
            gc.unfreeze()

    @staticmethod
    def frozen() -> int:
        return gc.get_freeze_count()
