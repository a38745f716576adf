"""Revocation fan-out over SSE: from the revoke request to the last subscriber holding the
verified SET, against a bare in-process broadcast (the floor), and a reconnect storm.

Run: ``python -m bench.revocation`` (``--help`` for options).

Two replicas A and B (``mission-ledger serve``) share one fresh PostgreSQL database. N SSF
streams with SSE delivery (default 1,000, one per subscriber, all owned by one ``pep``
key) are subscribed by N connections held by this one client process (raw asyncio
protocols on uvloop), half on A, half on B. Each trial revokes one Mission through A
(Missions are approved before the streams exist, so only the revocations reach them);
every stream gets its own lifecycle-change SET, and every subscriber verifies its SET's
ES256 signature (keys from the JWKS) in its receive callback and checks ``aud``, the
Mission id, ``state`` and (after the trial) ``txn``. Latency = arrival of the last
verified SET - the instant before the revoke request was written.

The floor, interleaved trial by trial in the same run and the same event loop: an
in-process asyncio server holding N more connections from the same receiver code writes
the same SETs (the ones the trial just delivered, one per connection, framed and
chunked as the service frames them) to all of them at once; timed the same way.

The reconnect storm: every subscriber drops its connection; more revocations are made
while nobody listens; all N reconnect at once, each to the *other* replica, with
``Last-Event-ID`` = the last id it received, and one more revocation is made while they
reconnect. Every subscriber must receive exactly the missed SETs and the new one, in
order, with no duplicate and no ``resync``. A last live revocation checks delivery after
the storm. At the end, every subscriber's whole sequence (ids and Missions) must equal
the sequence of revocations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from api.workers.sse_hub import frame
from bench._fleet import (
    RESOURCE,
    AsyncHttp,
    Es256Verifier,
    Fleet,
    InvalidToken,
    create_mission,
    fleet,
    install_sigterm_handler,
    progress,
)
from bench._load import percentile
from bench._support import PostgresUnavailable, load_average, machine_description, table
from ledger.domain.sets import SET_TYP, write_txn
from ledger.domain.streams import LIFECYCLE_CHANGE

TARGET_P99_MS = 250.0
PEP = "bench-pep"
AGENT = "bench-agent"
KEY_NAMES = {"agent": AGENT, "approver": "bench-approver", "operator": "bench-operator", "pep": PEP}
SSE_METHOD = "urn:mission-ledger:delivery:sse"
CONNECT_PARALLEL = 100
RECONNECT_ATTEMPTS = 5


# ---------------------------------------------------------------------- bookkeeping


class Trials:
    """Which Mission each trial revokes, and when each subscriber held its verified SET."""

    def __init__(self, subscribers: int) -> None:
        self.subscribers = subscribers
        self.trial_of: dict[str, int] = {}
        self.arrivals: dict[int, dict[int, float]] = {}
        self.tokens: dict[int, dict[int, str]] = {}
        #: (txn, Mission version) of the SETs each trial's revocation raised.
        self.txns: dict[int, set[tuple[str, int]]] = {}
        self.deadline_hit: dict[int, int] = {}
        self._done: dict[int, asyncio.Event] = {}

    def expect(self, trial: int, mission: str) -> asyncio.Event:
        self.trial_of[mission] = trial
        self.arrivals[trial] = {}
        self.tokens[trial] = {}
        self.txns[trial] = set()
        self._done[trial] = asyncio.Event()
        return self._done[trial]

    def done(self, trial: int) -> asyncio.Event:
        return self._done[trial]

    def one_txn(self, trial: int, mission: str, issuer: str) -> bool:
        """Every SET of the trial carries the revocation's ``txn`` (that of the write whose
        first event is the Mission's version the SETs report)."""
        return len(self.txns[trial]) <= 1 and all(
            txn == write_txn(issuer, mission, version) for txn, version in self.txns[trial]
        )

    def arrived(
        self, trial: int, subscriber: int, at: float, token: str, txn: tuple[str, int]
    ) -> None:
        arrivals = self.arrivals[trial]
        if subscriber in arrivals:
            return  # a duplicate: counted by the inbox, the first arrival stands
        arrivals[subscriber] = at
        self.tokens[trial][subscriber] = token
        self.txns[trial].add(txn)
        if len(arrivals) >= self.subscribers:
            self._done[trial].set()


@dataclass
class Inbox:
    """Everything one subscriber received, across its connections."""

    index: int
    trials: Trials
    verifier: Es256Verifier
    aud: str
    seqs: list[int] = field(default_factory=list)
    missions: list[str] = field(default_factory=list)
    resyncs: int = 0
    invalid: list[str] = field(default_factory=list)
    unexpected: int = 0
    duplicates: int = 0
    gaps: int = 0

    @property
    def last_id(self) -> int | None:
        return self.seqs[-1] if self.seqs else None

    def on_event(self, kind: str, event_id: str | None, data: str) -> None:
        if kind == "resync":
            self.resyncs += 1
            return
        if kind != "set":
            return
        seq = int(event_id) if event_id is not None and event_id.isdigit() else -1
        try:
            header, claims = self.verifier.verify(data)
        except InvalidToken as error:
            self.invalid.append(str(error))
            return
        at = time.perf_counter()
        if self.seqs and seq <= self.seqs[-1]:
            self.duplicates += 1
            return
        if seq != (self.seqs[-1] if self.seqs else 0) + 1:
            self.gaps += 1
        self.seqs.append(seq)
        payload = claims.get("events", {}).get(LIFECYCLE_CHANGE)
        mission = payload.get("mission", {}).get("id") if isinstance(payload, dict) else None
        self.missions.append(str(mission))
        trial = self.trials.trial_of.get(str(mission))
        if (
            trial is None
            or header.get("typ") != SET_TYP
            or claims.get("aud") != self.aud
            or not isinstance(payload, dict)
            or payload.get("state") != "revoked"
        ):
            self.unexpected += 1
            return
        version = int(payload.get("version", -1))
        self.trials.arrived(trial, self.index, at, data, (str(claims.get("txn")), version))


class SseConnection(asyncio.Protocol):
    """One SSE subscription: sends the GET, decodes the (chunked) response and hands each
    event to the inbox, synchronously in the receive callback."""

    def __init__(self, inbox: Inbox, request: bytes) -> None:
        self.inbox = inbox
        self.request = request
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[int] = loop.create_future()  # the status code
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error = ""
        self._buf = bytearray()
        self._sse = bytearray()
        self._head_done = False
        self._chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.error = self.error or f"closed before the stream started ({exc})"
            self.ready.set_result(0)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            status = int(head[9:12])
            self._head_done = True
            self._chunked = "transfer-encoding: chunked" in head.lower()
            if status != 200:
                self.error = f"HTTP {status}: {head.splitlines()[0]} {bytes(self._buf[:300])!r}"
                self.ready.set_result(status)
                assert self.transport is not None
                self.transport.close()
                return
        if self._chunked:
            self._dechunk()
        else:
            self._feed(bytes(self._buf))
            self._buf.clear()

    def _dechunk(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            if size == 0:
                del buf[: end + 2]
                return
            if len(buf) < end + 2 + size + 2:
                return
            payload = bytes(buf[end + 2 : end + 2 + size])
            del buf[: end + 2 + size + 2]
            self._feed(payload)

    def _feed(self, payload: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(200)  # the first body bytes: the ``retry`` line
        self._sse += payload.replace(b"\r\n", b"\n")
        while True:
            end = self._sse.find(b"\n\n")
            if end < 0:
                return
            block = bytes(self._sse[:end]).decode()
            del self._sse[: end + 2]
            kind, event_id, data = "message", None, []
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data.append(value)
            if data:
                self.inbox.on_event(kind, event_id, "\n".join(data))

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def sse_request(port: int, path: str, key: str, last_id: int | None) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {key}",
        "Accept: text/event-stream",
        "Cache-Control: no-store",
    ]
    if last_id is not None:
        lines.append(f"Last-Event-ID: {last_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _fixed(request: bytes) -> Callable[[Inbox], bytes]:
    return lambda _inbox: request


def _factory(connection: SseConnection) -> Callable[[], SseConnection]:
    return lambda: connection


@dataclass
class ConnectReport:
    opened: int = 0
    seconds: float = 0.0
    retries: int = 0
    failures: list[str] = field(default_factory=list)


async def connect_all(
    targets: Sequence[tuple[Inbox, int, Callable[[Inbox], bytes]]],
    *,
    parallel: int,
    timeout: float,
    attempts: int = 1,
) -> tuple[list[SseConnection | None], ConnectReport]:
    """Open one subscription per (inbox, port, request factory), ``parallel`` at a time,
    each retried up to ``attempts`` times; waits until each stream has started."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    report = ConnectReport()
    started = time.perf_counter()

    async def one(inbox: Inbox, port: int, build: Callable[[Inbox], bytes]) -> SseConnection | None:
        reason = ""
        for attempt in range(attempts):
            if attempt:
                report.retries += 1
                await asyncio.sleep(0.25 * attempt)
            async with gate:
                connection = SseConnection(inbox, build(inbox))
                try:
                    await loop.create_connection(_factory(connection), "127.0.0.1", port)
                    status = await asyncio.wait_for(connection.ready, timeout)
                except (OSError, TimeoutError) as error:
                    reason = f"{type(error).__name__}: {error}"
                    connection.drop()
                    continue
            if status == 200:
                report.opened += 1
                return connection
            reason = connection.error
        report.failures.append(f"subscriber {inbox.index} on port {port}: {reason}")
        return None

    connections = await asyncio.gather(*(one(*target) for target in targets))
    report.seconds = time.perf_counter() - started
    return list(connections), report


# ---------------------------------------------------------------------- the floor


class FloorServer:
    """An in-process SSE "server": accepts ``GET /floor/<n>`` and, on ``broadcast``, writes
    one pre-encoded frame to every connection, chunked as uvicorn chunks a body part."""

    HEAD = (
        b"HTTP/1.1 200 OK\r\nserver: floor\r\ncache-control: no-store\r\n"
        b"connection: keep-alive\r\nx-accel-buffering: no\r\n"
        b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
    )

    def __init__(self) -> None:
        self.connections: dict[int, asyncio.Transport] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _FloorConnection(self), "127.0.0.1", 0, backlog=4096
        )
        self.port = int(self.server.sockets[0].getsockname()[1])

    def broadcast(self, frames: dict[int, bytes]) -> None:
        for index, transport in self.connections.items():
            data = frames[index]
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    async def stop(self) -> None:
        for transport in self.connections.values():
            transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class _FloorConnection(asyncio.Protocol):
    def __init__(self, floor: FloorServer) -> None:
        self.floor = floor
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.buf is None:
            return
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        path = self.buf.split(b" ", 2)[1].decode()
        index = int(path.rsplit("/", 1)[1])
        retry = b"retry: 3000\n\n"
        self.transport.write(self.floor.HEAD + b"%x\r\n%b\r\n" % (len(retry), retry))
        self.floor.connections[index] = self.transport


# ---------------------------------------------------------------------- one trial


@dataclass
class TrialResult:
    trial: int
    kind: str  # "server" or "floor"
    last_ms: float
    median_ms: float
    last_a_ms: float = float("nan")
    last_b_ms: float = float("nan")
    response_ms: float = float("nan")
    missing: int = 0
    late: int = 0
    txn_ok: bool = True
    latencies_ms: list[float] = field(default_factory=list)


def _summarise(
    trials: Trials, trial: int, t0: float, kind: str, on_a: Callable[[int], bool]
) -> TrialResult:
    arrivals = trials.arrivals[trial]
    latencies = [(at - t0) * 1000 for at in arrivals.values()]
    a = [(at - t0) * 1000 for i, at in arrivals.items() if on_a(i)]
    b = [(at - t0) * 1000 for i, at in arrivals.items() if not on_a(i)]
    return TrialResult(
        trial=trial,
        kind=kind,
        last_ms=max(latencies) if latencies else float("nan"),
        median_ms=percentile(latencies, 50),
        last_a_ms=max(a) if a else float("nan"),
        last_b_ms=max(b) if b else float("nan"),
        missing=trials.subscribers - len(arrivals),
        latencies_ms=latencies,
    )


@dataclass
class Bench:
    args: argparse.Namespace
    fleet: Fleet
    missions: list[str]
    trials: Trials
    floor_trials: Trials
    inboxes: list[Inbox]
    floor: FloorServer
    http_a: AsyncHttp
    streams: list[str]
    revoked: list[str] = field(default_factory=list)
    on_a: dict[int, bool] = field(default_factory=dict)
    next_trial: int = 0
    stale_answers: int = 0

    def take_mission(self) -> tuple[int, str]:
        trial = self.next_trial
        self.next_trial += 1
        return trial, self.missions[trial]

    async def revoke(self, trial: int, mission: str) -> tuple[float, float]:
        """Revoke through A: (t0, response time in ms)."""
        t0 = time.perf_counter()
        answer = await self.http_a.request(
            "POST",
            f"/v1/missions/{mission}/lifecycle",
            body={"operation": "revoke", "reason": f"bench trial {trial}"},
            headers=self.fleet.auth("operator"),
        )
        elapsed = (time.perf_counter() - t0) * 1000
        if answer.status == 503 and answer.json().get("code") == "stale_state":
            # Committed, but A's read models (the SET log among them) did not include it
            # within read_your_writes_timeout_seconds: the answer says so.
            self.stale_answers += 1
        elif answer.status != 200:
            msg = f"revoke of {mission}: HTTP {answer.status} {answer.body[:300]!r}"
            raise RuntimeError(msg)
        self.revoked.append(mission)
        return t0, elapsed

    async def server_trial(self) -> TrialResult:
        trial, mission = self.take_mission()
        done = self.trials.expect(trial, mission)
        t0, response_ms = await self.revoke(trial, mission)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), self.args.seconds)
        result = _summarise(self.trials, trial, t0, "server", lambda i: self.on_a[i])
        result.response_ms = response_ms
        result.txn_ok = self.trials.one_txn(trial, mission, self.fleet.issuer)
        return result

    async def floor_trial(self, trial: int) -> TrialResult:
        """Broadcast trial ``trial``'s SETs (as delivered) to the floor's connections."""
        tokens = self.trials.tokens[trial]
        if not tokens:
            return TrialResult(trial, "floor", float("nan"), float("nan"))
        spare = next(iter(tokens.values()))
        seq = len(self.floor_trials.arrivals) + 1
        frames = {i: frame(seq, tokens.get(i, spare)) for i in range(self.trials.subscribers)}
        done = self.floor_trials.expect(trial, self.missions[trial])
        t0 = time.perf_counter()
        self.floor.broadcast(frames)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), self.args.seconds)
        return _summarise(self.floor_trials, trial, t0, "floor", lambda i: i % 2 == 0)


# ---------------------------------------------------------------------- the storm


@dataclass
class StormResult:
    dropped: int
    revoked_while_disconnected: int
    reconnect: ConnectReport
    catch_up_ms: float
    complete: int
    exact: int
    lost: int
    duplicated: int
    out_of_order: int
    resyncs: int
    live_during_storm: TrialResult
    after_storm: TrialResult


async def storm(bench: Bench, connections: list[SseConnection | None]) -> StormResult:
    args, n = bench.args, bench.args.subscribers
    progress(f"reconnect storm: dropping all {n} connections")
    for connection in connections:
        if connection is not None:
            connection.drop()
    await asyncio.gather(*(c.closed for c in connections if c is not None))
    await asyncio.sleep(0.5)  # let the servers see the disconnects and close the channels
    before = {inbox.index: len(inbox.seqs) for inbox in bench.inboxes}
    storm_trials: list[int] = []
    for _ in range(args.storm_revocations):
        trial, mission = bench.take_mission()
        bench.trials.expect(trial, mission)
        await bench.revoke(trial, mission)
        storm_trials.append(trial)
    progress(
        f"  {len(storm_trials)} revocations while disconnected; all {n} reconnect at once "
        "to the other replica with Last-Event-ID, one more revocation meanwhile"
    )
    ports = [r.port for r in bench.fleet.replicas]
    key = bench.fleet.keys["pep"]
    streams = bench.streams
    for inbox in bench.inboxes:
        bench.on_a[inbox.index] = not bench.on_a[inbox.index]  # switch replicas

    def request(port: int, stream: str) -> Callable[[Inbox], bytes]:
        return lambda inbox: sse_request(port, f"/ssf/streams/{stream}/events", key, inbox.last_id)

    targets = [
        (
            inbox,
            ports[0] if bench.on_a[inbox.index] else ports[1],
            request(ports[0] if bench.on_a[inbox.index] else ports[1], streams[inbox.index]),
        )
        for inbox in bench.inboxes
    ]
    started = time.perf_counter()
    reconnecting = asyncio.create_task(
        connect_all(targets, parallel=n, timeout=60.0, attempts=RECONNECT_ATTEMPTS)
    )
    await asyncio.sleep(0)  # the connects are under way
    live_trial, live_mission = bench.take_mission()
    live_done = bench.trials.expect(live_trial, live_mission)
    t0, response_ms = await bench.revoke(live_trial, live_mission)
    new, report = await reconnecting
    connections[:] = new
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(live_done.wait(), max(args.seconds, 60.0))
    for trial in storm_trials:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bench.trials.done(trial).wait(), 5.0)
    live = _summarise(bench.trials, live_trial, t0, "server", lambda i: bench.on_a[i])
    live.response_ms = response_ms
    live.txn_ok = bench.trials.one_txn(live_trial, live_mission, bench.fleet.issuer)
    catch_up = [
        at for trial in [*storm_trials, live_trial] for at in bench.trials.arrivals[trial].values()
    ]
    wanted = [bench.missions[t] for t in [*storm_trials, live_trial]]
    exact = complete = lost = duplicated = out_of_order = 0
    for inbox in bench.inboxes:
        got = inbox.missions[before[inbox.index] :]
        exact += got == wanted
        complete += set(wanted) <= set(got)
        lost += len(set(wanted) - set(got))
        duplicated += len(got) - len(set(got))
        out_of_order += [m for m in got if m in wanted] != [m for m in wanted if m in got]
    after = await bench.server_trial()
    return StormResult(
        dropped=n,
        revoked_while_disconnected=len(storm_trials),
        reconnect=report,
        catch_up_ms=(max(catch_up) - started) * 1000 if catch_up else float("nan"),
        complete=complete,
        exact=exact,
        lost=lost,
        duplicated=duplicated + sum(i.duplicates for i in bench.inboxes),
        out_of_order=out_of_order,
        resyncs=sum(i.resyncs for i in bench.inboxes),
        live_during_storm=live,
        after_storm=after,
    )


# ---------------------------------------------------------------------- setup and run


def prepare(the_fleet: Fleet, args: argparse.Namespace) -> tuple[list[str], list[str], float]:
    """Missions first (their approvals reach no stream), then the SSE streams."""
    a, b = the_fleet.replicas[0], the_fleet.replicas[1]
    needed = args.warmup + args.revocations + args.storm_revocations + 2
    with httpx.Client(base_url=a.url, timeout=60.0) as client:
        progress(f"approving {needed} Missions through A")
        missions = [create_mission(client, the_fleet, AGENT, f"user-{i}") for i in range(needed)]
    streams: list[str] = []
    started = time.perf_counter()
    progress(f"creating {args.subscribers} SSE streams (alternately through A and B)")
    with (
        httpx.Client(base_url=a.url, timeout=60.0) as on_a,
        httpx.Client(base_url=b.url, timeout=60.0) as on_b,
    ):
        for i in range(args.subscribers):
            client = on_a if i % 2 == 0 else on_b
            created = client.post(
                "/ssf/streams",
                json={
                    "delivery": {"method": SSE_METHOD},
                    "description": f"bench {i}",
                    "resources": [RESOURCE],
                },
                headers=the_fleet.auth("pep"),
            )
            if created.status_code != 201:
                msg = f"stream {i}: HTTP {created.status_code} {created.text}"
                raise RuntimeError(msg)
            streams.append(str(created.json()["stream_id"]))
            if (i + 1) % max(1, args.subscribers // 5) == 0:
                rate = (i + 1) / (time.perf_counter() - started)
                progress(f"  {i + 1} streams ({rate:.0f}/s)")
    return missions, streams, time.perf_counter() - started


async def run(the_fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    missions, streams, stream_seconds = await asyncio.to_thread(prepare, the_fleet, args)
    a, b = the_fleet.replicas[0], the_fleet.replicas[1]
    async with httpx.AsyncClient(timeout=10.0) as client:
        verifier = Es256Verifier((await client.get(a.url + "/.well-known/jwks.json")).json())
    n = args.subscribers
    trials, floor_trials = Trials(n), Trials(n)
    inboxes = [Inbox(i, trials, verifier, PEP) for i in range(n)]
    floor_inboxes = [Inbox(i, floor_trials, verifier, PEP) for i in range(n)]
    floor = FloorServer()
    await floor.start()
    bench = Bench(
        args=args,
        fleet=the_fleet,
        missions=missions,
        trials=trials,
        floor_trials=floor_trials,
        inboxes=inboxes,
        floor=floor,
        http_a=AsyncHttp(a.port),
        streams=streams,
        on_a={i: i % 2 == 0 for i in range(n)},
    )
    key = the_fleet.keys["pep"]
    connections: list[SseConnection | None] = []
    floor_connections: list[SseConnection | None] = []
    try:
        progress(f"opening {n} SSE subscriptions (half on A, half on B)")
        targets = []
        for i in range(n):
            port = a.port if i % 2 == 0 else b.port
            request = sse_request(port, f"/ssf/streams/{streams[i]}/events", key, None)
            targets.append((inboxes[i], port, _fixed(request)))
        connections, opened = await connect_all(targets, parallel=CONNECT_PARALLEL, timeout=60.0)
        progress(f"  {opened.opened} open in {opened.seconds:.1f} s")
        if opened.failures:
            progress("  refused: " + "; ".join(opened.failures[:5]))
            msg = (
                f"only {opened.opened} of {n} SSE subscriptions opened; first failures: "
                + "; ".join(opened.failures[:5])
            )
            raise RuntimeError(msg)
        floor_targets = [
            (
                floor_inboxes[i],
                floor.port,
                _fixed(sse_request(floor.port, f"/floor/{i}", key, None)),
            )
            for i in range(n)
        ]
        floor_connections, floor_opened = await connect_all(
            floor_targets, parallel=CONNECT_PARALLEL, timeout=60.0
        )
        if floor_opened.failures:
            msg = f"floor connections failed: {floor_opened.failures[:3]}"
            raise RuntimeError(msg)
        await asyncio.sleep(0.5)

        progress(f"warm-up: {args.warmup} revocation(s)")
        for _ in range(args.warmup):
            warm = await bench.server_trial()
            await bench.floor_trial(warm.trial)
        results: list[list[tuple[TrialResult, TrialResult]]] = []
        async with httpx.AsyncClient(timeout=10.0) as client:
            seconds_before = await read_model_seconds(client, the_fleet)
        per_round = math.ceil(args.revocations / args.rounds)
        remaining = args.revocations
        for round_no in range(args.rounds):
            count = min(per_round, remaining)
            remaining -= count
            rows: list[tuple[TrialResult, TrialResult]] = []
            for _ in range(count):
                subject = await bench.server_trial()
                floor_result = await bench.floor_trial(subject.trial)
                rows.append((subject, floor_result))
                await asyncio.sleep(args.pause)
            results.append(rows)
            lasts = [s.last_ms for s, _ in rows]
            progress(
                f"  round {round_no + 1}/{args.rounds}: {count} revocations, last-subscriber "
                f"p50 {percentile(lasts, 50):.0f} ms, max {max(lasts, default=0):.0f} ms"
            )
        async with httpx.AsyncClient(timeout=10.0) as client:
            seconds_after = await read_model_seconds(client, the_fleet)
        breakdown = server_breakdown(seconds_before, seconds_after, args.revocations)
        storm_result: StormResult | None = None
        storm_error = ""
        try:
            storm_result = await storm(bench, connections)
        except Exception as error:  # report the measured trials all the same
            traceback.print_exc()
            storm_error = f"{type(error).__name__}: {error}"
        integrity = final_integrity(bench)
    finally:
        for connection in [*connections, *floor_connections]:
            if connection is not None:
                connection.drop()
        await floor.stop()
        await bench.http_a.close()
    return {
        "results": results,
        "storm": storm_result,
        "storm_error": storm_error,
        "stale_answers": bench.stale_answers,
        "integrity": integrity,
        "stream_seconds": stream_seconds,
        "connect_seconds": opened.seconds,
        "breakdown": breakdown,
    }


READ_MODEL_METRICS = (
    "mission_ledger_read_model_apply_seconds_total",
    "mission_ledger_read_model_lock_wait_seconds_total",
)


async def read_model_seconds(
    client: httpx.AsyncClient, the_fleet: Fleet
) -> dict[tuple[str, str, str], float]:
    """(replica, metric, read model) -> seconds so far, from each replica's /metrics."""
    out: dict[tuple[str, str, str], float] = {}
    for replica in the_fleet.replicas:
        text = (await client.get(replica.url + "/metrics", headers=the_fleet.auth("operator"))).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in READ_MODEL_METRICS:
                    key = (replica.name, sample.name, sample.labels["read_model"])
                    out[key] = sample.value
    return out


def server_breakdown(
    before: dict[tuple[str, str, str], float],
    after: dict[tuple[str, str, str], float],
    revocations: int,
) -> list[tuple[str, str, float, float]]:
    """Per replica and read model: ms applying and ms waiting for another replica's lock,
    per measured revocation (trials and their floor only; nothing else writes then)."""
    rows = []
    for replica, metric, read_model in sorted(after):
        if metric != READ_MODEL_METRICS[0]:
            continue
        applying = after[(replica, metric, read_model)] - before.get(
            (replica, metric, read_model), 0.0
        )
        wait_key = (replica, READ_MODEL_METRICS[1], read_model)
        waiting = after.get(wait_key, 0.0) - before.get(wait_key, 0.0)
        rows.append(
            (replica, read_model, 1000 * applying / revocations, 1000 * waiting / revocations)
        )
    return rows


def final_integrity(bench: Bench) -> dict[str, int]:
    """Every subscriber's whole sequence against the sequence of revocations."""
    expected = list(bench.revoked)
    exact = sum(inbox.missions == expected for inbox in bench.inboxes)
    ids_ok = sum(inbox.seqs == list(range(1, len(inbox.seqs) + 1)) for inbox in bench.inboxes)
    return {
        "subscribers": len(bench.inboxes),
        "revocations": len(expected),
        "exact_sequence": exact,
        "gap_free_ids": ids_ok,
        "missing_sets": sum(len(set(expected) - set(i.missions)) for i in bench.inboxes),
        "duplicates": sum(i.duplicates for i in bench.inboxes),
        "gaps": sum(i.gaps for i in bench.inboxes),
        "invalid": sum(len(i.invalid) for i in bench.inboxes),
        "unexpected": sum(i.unexpected for i in bench.inboxes),
        "resyncs": sum(i.resyncs for i in bench.inboxes),
    }


# ---------------------------------------------------------------------- report


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def summary(rows: Sequence[tuple[TrialResult, TrialResult]]) -> dict[str, float]:
    subject = [s for s, _ in rows]
    floor = [f for _, f in rows]
    last = [s.last_ms for s in subject]
    floor_last = [f.last_ms for f in floor]
    every = [x for s in subject for x in s.latencies_ms]
    return {
        "trials": len(rows),
        "p50_ms": percentile(last, 50),
        "p99_ms": percentile(last, 99),
        "max_ms": max(last, default=float("nan")),
        "floor_p50_ms": percentile(floor_last, 50),
        "floor_p99_ms": percentile(floor_last, 99),
        "ratio_p50": percentile(last, 50) / percentile(floor_last, 50),
        "ratio_p99": percentile(last, 99) / percentile(floor_last, 99),
        "each_subscriber_p50_ms": percentile(every, 50),
        "each_subscriber_p99_ms": percentile(every, 99),
        "last_on_a_p50_ms": percentile([s.last_a_ms for s in subject], 50),
        "last_on_b_p50_ms": percentile([s.last_b_ms for s in subject], 50),
        "response_p50_ms": percentile([s.response_ms for s in subject], 50),
        "response_p99_ms": percentile([s.response_ms for s in subject], 99),
        "missing": sum(s.missing for s in subject),
        "floor_missing": sum(f.missing for f in floor),
        "txn_mismatches": sum(not s.txn_ok for s in subject),
    }


def render(out: dict[str, Any], args: argparse.Namespace, loads: tuple[str, str]) -> str:
    rounds: list[list[tuple[TrialResult, TrialResult]]] = out["results"]
    everything = [row for rows in rounds for row in rows]
    overall = summary(everything)
    lines = [
        f"load average at start {loads[0]}, at end {loads[1]}  "
        f"({args.subscribers} subscribers, 2 replicas, {len(everything)} revocations)",
        f"setup: {args.subscribers} streams created in {out['stream_seconds']:.1f} s, "
        f"subscriptions opened in {out['connect_seconds']:.1f} s",
        "",
        "Revoke request -> last subscriber holding the verified SET (ms), per round; "
        "floor = bare in-process broadcast of the same SETs to the same receivers:",
        "",
    ]
    table_rows = []
    for index, rows in enumerate(rounds, 1):
        s = summary(rows)
        table_rows.append(
            [
                str(index),
                str(len(rows)),
                _fmt(s["p50_ms"]),
                _fmt(s["p99_ms"]),
                _fmt(s["floor_p50_ms"]),
                _fmt(s["floor_p99_ms"]),
                f"{s['ratio_p50']:.1f}",
                _fmt(s["response_p50_ms"]),
                str(int(s["missing"])),
            ]
        )
    table_rows.append(
        [
            "all",
            str(len(everything)),
            _fmt(overall["p50_ms"]),
            _fmt(overall["p99_ms"]),
            _fmt(overall["floor_p50_ms"]),
            _fmt(overall["floor_p99_ms"]),
            f"{overall['ratio_p50']:.1f}",
            _fmt(overall["response_p50_ms"]),
            str(int(overall["missing"])),
        ]
    )
    lines.append(
        table(
            [
                "round",
                "revocations",
                "p50",
                "p99",
                "floor p50",
                "floor p99",
                "ratio p50",
                "revoke answer p50",
                "missing",
            ],
            table_rows,
        )
    )
    verdict = "PASS" if overall["p99_ms"] <= TARGET_P99_MS and overall["missing"] == 0 else "BELOW"
    lines += [
        "",
        f"last subscriber: p50 {_fmt(overall['p50_ms'])} ms, p99 {_fmt(overall['p99_ms'])} ms, "
        f"max {_fmt(overall['max_ms'])} ms   target p99 <= {TARGET_P99_MS:.0f} ms, none "
        f"missing: {verdict}",
        f"floor: p50 {_fmt(overall['floor_p50_ms'])} ms, p99 {_fmt(overall['floor_p99_ms'])} ms; "
        f"ratio server/floor: p50 {overall['ratio_p50']:.1f}x, p99 {overall['ratio_p99']:.1f}x",
        f"every subscriber's arrival: p50 {_fmt(overall['each_subscriber_p50_ms'])} ms, "
        f"p99 {_fmt(overall['each_subscriber_p99_ms'])} ms; last on A p50 "
        f"{_fmt(overall['last_on_a_p50_ms'])} ms, last on B p50 "
        f"{_fmt(overall['last_on_b_p50_ms'])} ms",
        f"revoke answer (A; writes wait for the core read models, not the signal log): p50 "
        f"{_fmt(overall['response_p50_ms'])} ms, p99 {_fmt(overall['response_p99_ms'])} ms",
        f"missing SETs at the {args.seconds:.0f} s trial deadline: {int(overall['missing'])} "
        f"(floor {int(overall['floor_missing'])}); trials whose txn was not the revocation's: "
        f"{int(overall['txn_mismatches'])}",
    ]
    lines.append(
        f"revoke answers 503 stale_state (committed, but A's read models took longer than "
        f"read_your_writes_timeout_seconds): {out['stale_answers']}"
    )
    lines += [
        "",
        "server time per revocation by read model (ms; from each replica's /metrics: applying, "
        "and waiting while the other replica applied the same batch):",
        table(
            ["replica", "read model", "applying", "waiting for the other"],
            [[r, m, f"{a:.1f}", f"{w:.1f}"] for r, m, a, w in out["breakdown"]],
        ),
    ]
    st: StormResult | None = out["storm"]
    if st is None:
        lines += ["", f"reconnect storm: FAILED: {out['storm_error']}"]
    else:
        lines += storm_lines(st)
    integrity = out["integrity"]
    lines += [
        "",
        f"integrity over the whole run ({integrity['revocations']} revocations x "
        f"{integrity['subscribers']} subscribers): exact sequence "
        f"{integrity['exact_sequence']}/{integrity['subscribers']}, gap-free ids "
        f"{integrity['gap_free_ids']}/{integrity['subscribers']}, missing "
        f"{integrity['missing_sets']}, duplicates {integrity['duplicates']}, invalid "
        f"signatures {integrity['invalid']}, unexpected {integrity['unexpected']}, resyncs "
        f"{integrity['resyncs']}",
    ]
    problems = out.get("server_log_problems", {})
    lines.append(
        "server logs: "
        + (
            ", ".join(f"{name}: {len(found)} error line(s)" for name, found in problems.items())
            or "no errors"
        )
    )
    for name, found in problems.items():
        lines += [f"  {name}: {line}" for line in found[:5]]
    return "\n".join(lines)


def storm_lines(st: StormResult) -> list[str]:
    reconnect = st.reconnect
    return [
        "",
        f"reconnect storm: {st.dropped} dropped, {st.revoked_while_disconnected} revocations "
        f"while disconnected, all reconnected at once to the other replica with Last-Event-ID "
        f"(+1 revocation during the reconnect)",
        f"  reconnected {reconnect.opened}/{st.dropped} in {reconnect.seconds * 1000:.0f} ms "
        f"({reconnect.retries} retries, {len(reconnect.failures)} failed)"
        + (f": {reconnect.failures[:3]}" if reconnect.failures else ""),
        f"  full catch-up (every subscriber holds every missed SET): "
        f"{_fmt(st.catch_up_ms)} ms after the reconnect began",
        f"  subscribers with exactly the missed SETs in order: {st.exact}/{st.dropped}; "
        f"lost {st.lost}, duplicated {st.duplicated}, out of order {st.out_of_order}, "
        f"resync {st.resyncs}",
        f"  revocation during the storm: last subscriber {_fmt(st.live_during_storm.last_ms)} ms"
        f", missing {st.live_during_storm.missing}; after the storm: "
        f"{_fmt(st.after_storm.last_ms)} ms, missing {st.after_storm.missing}",
    ]


def storm_json(st: StormResult | None, error: str) -> dict[str, Any]:
    if st is None:
        return {"error": error}
    return {
        "dropped": st.dropped,
        "revoked_while_disconnected": st.revoked_while_disconnected,
        "reconnected": st.reconnect.opened,
        "reconnect_ms": st.reconnect.seconds * 1000,
        "reconnect_retries": st.reconnect.retries,
        "reconnect_failures": st.reconnect.failures[:20],
        "catch_up_ms": st.catch_up_ms,
        "exact": st.exact,
        "lost": st.lost,
        "duplicated": st.duplicated,
        "out_of_order": st.out_of_order,
        "resyncs": st.resyncs,
        "live_during_storm_ms": st.live_during_storm.last_ms,
        "live_during_storm_missing": st.live_during_storm.missing,
        "after_storm_ms": st.after_storm.last_ms,
        "after_storm_missing": st.after_storm.missing,
    }


def as_json(out: dict[str, Any], loads: tuple[str, str]) -> dict[str, Any]:
    rounds = out["results"]
    return {
        "benchmark": "revocation",
        "machine": machine_description(),
        "load_average": {"start": loads[0], "end": loads[1]},
        "rounds": [summary(rows) for rows in rounds],
        "overall": summary([row for rows in rounds for row in rows]),
        "stale_answers": out["stale_answers"],
        "storm": storm_json(out["storm"], out["storm_error"]),
        "integrity": out["integrity"],
        "server_ms_per_revocation": [
            {"replica": r, "read_model": m, "applying_ms": a, "lock_wait_ms": w}
            for r, m, a, w in out["breakdown"]
        ],
        "server_log_problems": out.get("server_log_problems", {}),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.revocation", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--revocations", type=int, default=30, help="measured trials")
    parser.add_argument("--rounds", type=int, default=3, help="the trials are split in rounds")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="how long a trial waits for every subscriber before counting the missing",
    )
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured revocations first")
    parser.add_argument("--storm-revocations", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between trials")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.subscribers < 2 or args.revocations < 1 or args.rounds < 1:
        parser.error("--subscribers >= 2, --revocations >= 1 and --rounds >= 1")
    args.rounds = min(args.rounds, args.revocations)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_handler()
    start_load = load_average()
    try:
        with fleet("revocation", key_names=KEY_NAMES) as the_fleet:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                out = runner.run(run(the_fleet, args))
            out["server_log_problems"] = {
                r.name: problems for r in the_fleet.replicas if (problems := r.log_problems())
            }
    except PostgresUnavailable as error:
        print(f"bench.revocation: {error}", file=sys.stderr)
        return 2
    loads = (start_load, load_average())
    print(render(out, args, loads))
    if args.json:
        print(json.dumps(as_json(out, loads)))
    integrity = out["integrity"]
    storm_result: StormResult | None = out["storm"]
    clean = (
        integrity["exact_sequence"] == integrity["subscribers"]
        and storm_result is not None
        and storm_result.exact == storm_result.dropped
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
