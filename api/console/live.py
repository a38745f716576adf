"""Live Mission pages: a live consumer of the log follower wakes the pages watching a
Mission when one of its events (or of its Mandates') has been applied here, and each page's
Server-Sent Events stream then says ``changed`` (nothing else: the page fetches its new
state with the person's own session, through the same checks as any page)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from ledger.application import Ledger
from projections.follower import Item


class MissionWatch:
    name = "console_watch"  # for the follower's per-read-model metrics

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def bootstrap(self, ledger: Ledger) -> int:
        """Nothing to load: only changes from now on matter."""
        return ledger.head_position()

    @property
    def topics(self) -> frozenset[str] | None:
        """Every event while a page watches (a Mission's page shows its Mandates and its
        Meter's usage too), none otherwise: the log follower then reads only what other
        read models read (under metering load, nearly every event is a Meter's)."""
        return None if self._watchers else frozenset()

    def apply(self, item: Item) -> None:
        if not self._watchers:
            # Nobody watches (the usual case): no need to decode the event. Under metering
            # load most events are a Meter's, and decoding each cost the follower more than
            # everything else it does. (A page that starts watching now wants what follows.)
            return
        event = item.event
        mission_id = event.originator_id
        if not mission_id.startswith("msn_"):
            mission_id = getattr(event, "mission_id", None) or ""
        with self._lock:
            waiters = tuple(self._watchers.get(mission_id, ()))
        if waiters and self._loop is not None:
            self._loop.call_soon_threadsafe(_wake, waiters)

    @contextlib.contextmanager
    def watching(self, mission_id: str) -> Iterator[asyncio.Event]:
        """An event set (on the event loop) whenever the Mission changes."""
        changed = asyncio.Event()
        with self._lock:
            self._watchers.setdefault(mission_id, set()).add(changed)
        try:
            yield changed
        finally:
            with self._lock:
                waiters = self._watchers.get(mission_id)
                if waiters is not None:
                    waiters.discard(changed)
                    if not waiters:
                        del self._watchers[mission_id]

    @property
    def watchers(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._watchers.values())


def _wake(waiters: tuple[asyncio.Event, ...]) -> None:
    for waiter in waiters:
        waiter.set()


async def mission_changes(
    watch: MissionWatch,
    mission_id: str,
    *,
    changed_since_page: Callable[[], Awaitable[bool]],
    signed_in: Callable[[], Awaitable[bool]],
    recheck_seconds: float,
) -> AsyncIterator[dict[str, str]]:
    """The SSE events of one open Mission page: ``changed`` after every change (at once if
    the Mission changed between the page's rendering and this stream's start), and
    ``signed-out`` (then the end) once the session is over."""
    payload = json.dumps({"mission": mission_id})
    with watch.watching(mission_id) as changed:
        if await changed_since_page():
            yield {"event": "changed", "data": payload}
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), recheck_seconds)
            if not await signed_in():
                yield {"event": "signed-out", "data": "{}"}
                return
            if changed.is_set():
                changed.clear()
                yield {"event": "changed", "data": payload}
