"""A Server-Sent Events parser following the WHATWG HTML "event stream interpretation"
(§9.2.6): CR, LF or CRLF line ends, a leading BOM ignored, ``:`` comments, one space after
the colon stripped, ``data`` lines joined with LF, ``event`` reset after each dispatch,
``id`` persisting across events (ignored when it contains NUL), ``retry`` digits only, and
an empty data buffer dispatching nothing (but still moving the last event id)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    id: str


class SseParser:
    """Feed decoded text in any chunking; collect complete events."""

    def __init__(self) -> None:
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self._pending = ""
        self._first = True
        self._data: list[str] = []
        self._type = ""
        self._cr_seen = False

    def feed(self, text: str) -> Iterator[Event]:
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        if self._cr_seen and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._cr_seen = False
        buffer = self._pending + text
        start = 0
        index = 0
        while index < len(buffer):
            char = buffer[index]
            if char in "\r\n":
                line = buffer[start:index]
                if char == "\r":
                    if index + 1 < len(buffer):
                        if buffer[index + 1] == "\n":
                            index += 1
                    else:
                        self._cr_seen = True
                start = index + 1
                event = self._line(line)
                if event is not None:
                    yield event
            index += 1
        self._pending = buffer[start:]

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Event(kind or "message", "\n".join(data), self.last_event_id)
