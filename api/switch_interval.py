"""The interpreter's thread switch interval while the server runs (CPython's default is
5 ms).

The server's threads (the Meter writer, the log follower, the scheduler, the decision log's
writer thread when ``DECISION_LOG_WRITER=thread``) share the interpreter lock with the event
loop. When one of them wants the lock, the loop gives it up only after the switch interval,
and a decision in progress then waits until that thread lets go: at 5 ms per hand-over the
server-side p99 of decisions was 15-20 ms under load with a decision log writer thread, and
metered permits (the Meter writer saving usage reports) answered half as fast as plain
ones. 0.5 ms bounds each pause to that. Set when the app starts, restored when it stops.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager

from fastapi import FastAPI

SWITCH_INTERVAL = 0.0005


@contextmanager
def short_switch_interval() -> Iterator[None]:
    """``SWITCH_INTERVAL`` (or the interval already set, when shorter) until the end."""
    before = sys.getswitchinterval()
    if before > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def with_short_switch_interval(lifespan: Lifespan) -> Lifespan:
    """``lifespan`` run inside ``short_switch_interval``."""

    @asynccontextmanager
    async def shortened(app: FastAPI) -> AsyncIterator[None]:
        with short_switch_interval():
            async with lifespan(app):
                yield

    return shortened
