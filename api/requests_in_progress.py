"""How many HTTP requests the server is working on, open event streams excepted.

The HTTP server (``mission-ledger serve``: uvicorn) keeps one task per request from the
moment its headers are read until its response is sent, including requests read but not
yet started; ``attach`` gives that set. Event streams (SSF and console SSE) stay open for
as long as a subscriber listens and use no CPU while they wait, so they are counted apart
(``streaming``) and not counted as work.

A DPoP decision that is the only request in progress has its signature checked on the event
loop: nothing else could use the loop meanwhile, and a round trip to the checker process
costs more than the check (decision 0023, "Alone"). Without an attached server (the app
served by another ASGI server, or in tests through an in-process transport) nothing is
known and no request counts as alone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sized
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class RequestsInProgress:
    def __init__(self) -> None:
        self._tasks: Sized | None = None
        self._streams = 0

    def attach(self, tasks: Sized) -> None:
        """The HTTP server's requests in progress (a live collection: read, never copied)."""
        self._tasks = tasks

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """For as long as an event stream is open (it is not work in progress)."""
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    async def stream(self, events: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """``events``, counted as an open stream while they flow."""
        with self.streaming():
            try:
                async for event in events:
                    yield event
            finally:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()

    def alone(self) -> bool:
        """Whether the request asking is the only one in progress (False when unknown)."""
        return self._tasks is not None and len(self._tasks) - self._streams <= 1
