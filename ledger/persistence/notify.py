"""In-process commit listeners: the doorbell that wakes log followers after a write."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

CommitListener = Callable[[Sequence[int]], None]


class CommitListeners:
    """Callbacks run after each committed write with the positions it recorded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[CommitListener] = []

    def add(self, listener: CommitListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: CommitListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def fire(self, positions: Sequence[int]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(positions)
