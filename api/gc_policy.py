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

The youngest generation is collected every ``young_threshold`` allocations instead of
CPython's 700: a decision or a Meter group allocates hundreds of objects, almost all freed
by reference counting, so at 700 the collector ran every few requests and mostly walked
live objects it then promoted. Under metered load it ran ≈ 700 young and 60 middle
collections a run where 50,000 gives 4 and none, and the collector's time fell from
0.52-0.59 s to 0.19-0.21 s (≈ 8 µs a request; decision 0013, "Revisited"). Garbage cycles
among young objects wait a little longer to be freed.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable


class GcPolicy:
    def __init__(
        self,
        *,
        full_every_seconds: float,
        young_threshold: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._full_every = full_every_seconds
        self._young_threshold = young_threshold
        self._thresholds_before: tuple[int, int, int] | None = None
        self._monotonic = monotonic
        self._last_full = monotonic()
        self._lock = threading.Lock()
        #: Full collections of everything (frozen included) run by the policy.
        self.full_collections = 0

    def start(self) -> None:
        """After start-up: collect once, then freeze what survived (the bootstrapped state);
        from now on the youngest generation is collected every ``young_threshold``
        allocations (when given)."""
        with self._lock:
            if self._young_threshold is not None and self._thresholds_before is None:
                self._thresholds_before = gc.get_threshold()
                _, middle, oldest = self._thresholds_before
                gc.set_threshold(self._young_threshold, middle, oldest)
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
        """Hand the frozen objects back to the collector and restore its thresholds (for
        tests and embedded use)."""
        with self._lock:
            gc.unfreeze()
            if self._thresholds_before is not None:
                gc.set_threshold(*self._thresholds_before)
                self._thresholds_before = None

    @staticmethod
    def frozen() -> int:
        return gc.get_freeze_count()
