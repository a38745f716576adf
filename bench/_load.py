"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

httpx costs tens of microseconds of client CPU per request, which on a 2-core machine
would measure the client, not the server. This sends prebuilt request bytes over N
persistent connections, back to back, and records per-request latency and the
server's ``Server-Timing`` duration when present.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

FollowUp = Callable[[bytes], bytes | None]
"""Given a raw answer, the request to send next on the same connection as part of the same
operation (``None``: the operation failed; ``b""``: nothing to send this time)."""

Flusher = Callable[[], bytes | None]
"""Called by a background connection: the request to send now (``None``: nothing yet)."""

_TIMING = re.compile(rb"server-timing: [a-z]+;dur=([0-9.]+)", re.IGNORECASE)
_LENGTH = re.compile(rb"content-length: *([0-9]+)", re.IGNORECASE)


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def build_request(
    method: str, path: str, host: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = _LENGTH.search(head)
    if match is None:
        msg = "responses without Content-Length are not supported by this client"
        raise RuntimeError(msg)
    body = await reader.readexactly(int(match[1]))
    return status, head + body


async def _connection(
    host: str,
    port: int,
    requests: Sequence[bytes],
    deadline: float,
    result: LoadResult,
    once: Iterator[bytes] | None,
    follow: FollowUp | None,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    rng = random.Random()
    try:
        while time.perf_counter() < deadline:
            if once is None:
                request = requests[rng.randrange(len(requests))]
            else:
                request = next(once, b"")
                if not request:
                    return
            started = time.perf_counter()
            writer.write(request)
            status, raw = await _read_response(reader)
            if follow is not None and status < 400:
                then = follow(raw)
                if then is None:
                    status = 599  # the operation failed (e.g. a denial where a permit was due)
                elif then:
                    writer.write(then)
                    status, _ = await _read_response(reader)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 400:
                result.errors += 1
            timing = _TIMING.search(raw)
            if timing is not None:
                result.server_ms.append(float(timing[1]))
    finally:
        writer.close()
        await writer.wait_closed()


async def _background(
    host: str, port: int, flusher: Flusher, deadline: float, result: LoadResult
) -> None:
    """A connection of its own that sends what ``flusher`` has ready, as a client library's
    background thread would (its requests are not operations; a failed one is an error)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            request = flusher()
            if request is None:
                await asyncio.sleep(0.002)
                continue
            writer.write(request)
            status, _ = await _read_response(reader)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status >= 400:
                result.errors += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def _run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    seconds: float,
    *,
    each_once: bool,
    follow: FollowUp | None,
    flusher: Flusher | None = None,
) -> LoadResult:
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    once = iter(requests) if each_once else None
    background = [] if flusher is None else [_background(host, port, flusher, deadline, result)]
    await asyncio.gather(
        *(
            _connection(host, port, requests, deadline, result, once, follow)
            for _ in range(connections)
        ),
        *background,
    )
    result.seconds = time.perf_counter() - started
    return result


def drive(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    seconds: float,
    each_once: bool = False,
    follow: FollowUp | None = None,
    flusher: Flusher | None = None,
) -> LoadResult:
    """Send ``requests`` (chosen at random) for ``seconds`` over ``connections``; with
    ``each_once``, each request once, in order, until they run out or the time is up
    (requests that must not be replayed, such as DPoP proofs). With ``follow``, each request
    is followed on its connection by the request ``follow`` makes of its answer, and the pair
    counts as one operation (one latency, one of ``requests``). With ``flusher``, one more
    connection sends in the background whatever ``flusher`` has ready."""
    return asyncio.run(
        _run(
            host,
            port,
            requests,
            connections,
            seconds,
            each_once=each_once,
            follow=follow,
            flusher=flusher,
        )
    )
