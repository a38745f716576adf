"""In-process commit listeners: the doorbell that wakes log followers after a write.

A write rings it with the positions it recorded and the stored topics of its events, so
that a follower none of whose read models reads those topics (a Meter's events, under
metering load) need not wake for it. On PostgreSQL the same topics travel as the payload
of the ``NOTIFY`` that wakes the other processes (``doorbell_payload``, read back by
``payload_topics``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

CommitListener = Callable[[Sequence[int], frozenset[str]], None]
"""Called after a committed write with its positions and its events' stored topics."""

#: PostgreSQL refuses a ``NOTIFY`` payload of 8,000 bytes or more; a longer list of topics
#: is sent as no payload, which listeners read as "any topic".
MAX_PAYLOAD = 7_999
_SEPARATOR = " "  # a stored topic (``module:Class.Event``) holds no space


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

    def fire(self, positions: Sequence[int], topics: frozenset[str]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(positions, topics)


def doorbell_payload(topics: Iterable[str]) -> str:
    """The ``NOTIFY`` payload naming a write's distinct topics ("" when too long)."""
    payload = _SEPARATOR.join(sorted(set(topics)))
    return payload if len(payload.encode()) <= MAX_PAYLOAD else ""


def payload_topics(payload: str) -> frozenset[str] | None:
    """The topics a ``NOTIFY`` payload names; ``None`` when it names none (a payload too
    long to send, a writer of an earlier release, a wake-up of another kind): any topic."""
    return frozenset(payload.split(_SEPARATOR)) if payload else None
