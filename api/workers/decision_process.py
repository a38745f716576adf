"""The decision log written by a process of its own (``DECISION_LOG_WRITER=process``, the
default; decision 0017, "A writer process").

The decision path's share of recording a decision is to keep its records; every
``SEND_DELAY`` the event loop encodes the answers kept meanwhile (``encode_wires``: a JSON
array, or a single evaluation's body as received) and sends them to the writer process
(``decision_child``) over a pipe, without blocking (a full pipe is drained as it empties).
Building rows (the JCS digest of each request) and storing them happen in that process, so
they no longer take turns with the decision path at the interpreter lock. The writer
acknowledges every commit over a second pipe; everything here runs on the event loop (no
thread of this process takes part).

The rules of ``decision_writer.DecisionWriter`` hold unchanged:

* **Never drop.** Every answer's records stay here until their commit is acknowledged. A
  writer that dies (or is killed) is started again and sent every unacknowledged answer once
  more, flagged as repeated (``ON CONFLICT DO NOTHING``: none is stored twice).
* **Backpressure.** While the oldest unacknowledged record is older than the flush window,
  or ``queue_size`` records are unacknowledged, ``record`` returns a future and the answer
  waits for the writer to catch up.
* **Sync mode.** Each answer waits for the acknowledgement of its own commit.
* **Starvation** (decision 0025). A writer under ``SCHED_IDLE`` that is behind for
  ``STARVED_AFTER`` and waited runnable for most of that time (``starvation``) is killed
  and replaced, as one that died is, by one under ``nice`` alone, for the rest of the run.
* **Shutdown** (``close``): the frames pipe is closed once everything is sent; the writer
  stores what it has and exits. A server killed outright loses at most what it had not yet
  sent (``SEND_DELAY``): the writer still stores what it received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from api.workers.children import (
    EXIT_GRACE_SECONDS,
    end_child,
    read_what_is_there,
    start_child,
    write_what_fits,
)
from api.workers.decision_frames import (
    CONFIG_ENV,
    HEADER,
    AckReader,
    enlarge,
    frame,
)
from api.workers.decision_writer import (
    BATCH_SIZE,
    RETRY_FIRST,
    RETRY_LAST,
    DecisionRecorder,
    Mode,
)
from api.workers.starvation import STARVED_AFTER, StarvationWatch
from ledger.writer_priority import SERVER_PRIORITY, WriterPriority
from projections.decision_log import DecisionRecord, encode_wires

log = logging.getLogger("mission_ledger.decision_log")

#: Records wait at most this long to be sent to the writer (one write to the pipe for every
#: answer given meanwhile). Small against the flush window: the writer's linger batches.
SEND_DELAY = 0.005
#: Answers waiting to be sent beyond this are sent at once.
SEND_AT = 256
#: How long shutdown waits for a killed (starved) writer process to end.
CLOSE_REAP_SECONDS = 5.0
#: How often shutdown looks whether every record sent was acknowledged.
CLOSE_POLL_SECONDS = 0.02


class _Sent:
    """One answer's records, until the writer acknowledges their commit. Encoded when first
    sent (``payload``), not on the decision path: the records are kept until then."""

    __slots__ = ("admitted", "committed", "count", "payload", "records", "seq")

    def __init__(
        self,
        seq: int,
        admitted: float,  # time.monotonic()
        records: Sequence[DecisionRecord],
        committed: asyncio.Future[None] | None,  # sync mode: the answer waits on it
    ) -> None:
        self.seq = seq
        self.admitted = admitted
        self.records: Sequence[DecisionRecord] | None = records
        self.count = len(records)
        self.committed = committed
        self.payload: bytes | None = None

    def encode(self) -> bytes:
        if self.payload is None:
            assert self.records is not None
            self.payload, self.records = encode_wires(self.records), None
        return self.payload


class ProcessDecisionWriter(DecisionRecorder):
    def __init__(
        self,
        store: dict[str, Any],
        *,
        mode: Mode = "async",
        flush_ms: int = 100,
        queue_size: int = 10_000,
        batch_size: int = BATCH_SIZE,
        priority: WriterPriority = SERVER_PRIORITY,
    ) -> None:
        super().__init__(mode)
        self._priority = priority  # how far below the server's priority the child runs
        self._config = {
            "store": store,
            "mode": mode,
            "flush_ms": flush_ms,
            "batch_size": batch_size,
        }
        self._window = flush_ms / 1000
        self._capacity = queue_size
        self._child: subprocess.Popen[bytes] | None = None
        self._frames = -1  # the write end of the frames pipe (-1: closed)
        self._acks = -1  # the read end of the acknowledgements pipe
        self._acks_reader = AckReader()
        self._seq = 0
        self._sent: deque[_Sent] = deque()
        self._fresh: list[_Sent] = []  # not yet encoded nor sent (the newest of ``_sent``)
        self._unwritten = 0
        self._out = bytearray()
        self._send_scheduled: asyncio.TimerHandle | asyncio.Handle | None = None
        self._draining = False  # waiting for the frames pipe to take more
        self._stopping = False
        self._done: asyncio.Future[None] | None = None
        self._restart_pause = 0.0
        self._watch: StarvationWatch | None = None  # while behind, under SCHED_IDLE
        self._watch_timer: asyncio.TimerHandle | None = None
        self._retired: list[subprocess.Popen[bytes]] = []  # starved, killed, not yet reaped

    @property
    def priority(self) -> WriterPriority:
        """How the next writer process runs (``idle`` off once one was starved)."""
        return self._priority

    @property
    def unwritten(self) -> int:
        return self._unwritten

    @property
    def pid(self) -> int | None:
        """The writer process's id (while it runs)."""
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        """Start the writer process (on the event loop)."""
        if not self.enabled:
            return
        loop = self._running_loop()
        self._done = loop.create_future()
        self._spawn()

    async def close(self, timeout: float = 30.0) -> None:
        """Send everything; the writer stores it (within ``timeout``) and exits (within
        ``EXIT_GRACE_SECONDS`` of its last acknowledgement, else it is killed: it has
        nothing left to lose, and one kept off the CPU under ``SCHED_IDLE`` would hold
        shutdown for as long as its interpreter takes to exit)."""
        done = self._done
        if done is None:
            return
        self._stopping = True
        self._send()
        if self._priority.idle and self._sent and self._watch_timer is None:
            self._watch_starvation(time.monotonic())  # a starved writer would hold shutdown
        loop = self._running_loop()
        deadline = loop.time() + timeout
        try:
            while self._sent and not done.done():  # records not yet acknowledged
                if loop.time() >= deadline:
                    raise TimeoutError
                await asyncio.wait([done], timeout=CLOSE_POLL_SECONDS)
            await asyncio.wait_for(asyncio.shield(done), EXIT_GRACE_SECONDS)
        except TimeoutError:
            if self._sent:
                log.error(
                    "decision log: %d records not written at shutdown (the store is unreachable)",
                    self._unwritten,
                )
            else:
                log.info(
                    "decision log: the writer process had not exited %.0f s after its last "
                    "record; ending it",
                    EXIT_GRACE_SECONDS,
                )
        finally:
            if self._watch_timer is not None:
                self._watch_timer.cancel()
                self._watch_timer = None
            self._hang_up(kill=True)
            self._done = None
            for retired in self._retired:  # killed: they end once given a CPU
                try:
                    retired.wait(CLOSE_REAP_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "decision log: a starved writer process %d has not ended", retired.pid
                    )
            self._retired.clear()

    # ------------------------------------------------------------------ the decision path

    def record(self, records: Sequence[DecisionRecord]) -> asyncio.Future[None] | None:
        if not self.enabled or not records:
            return None
        loop = self._running_loop()
        committed = loop.create_future() if self.mode == "sync" else None
        now = time.monotonic()
        self._seq += 1
        sent = _Sent(self._seq, now, records, committed)
        self._sent.append(sent)
        self._fresh.append(sent)
        self._unwritten += sent.count
        self._schedule_send(at_once=committed is not None)
        if committed is not None:
            return committed
        behind = self._behind(now)
        if behind and self._priority.idle and self._watch_timer is None:
            self._watch_starvation(now)
        return self._answer_now_or_hold(behind)

    def _behind(self, now: float) -> bool:
        if self._unwritten >= self._capacity:
            return True
        return bool(self._sent) and now - self._sent[0].admitted > self._window

    # ------------------------------------------------------------------ sending

    def _schedule_send(self, *, at_once: bool) -> None:
        if self._draining:
            return  # the pipe's writability sends it
        if at_once or len(self._fresh) >= SEND_AT:
            if self._send_scheduled is not None:
                self._send_scheduled.cancel()
            self._send_scheduled = None
            self._send()
        elif self._send_scheduled is None:
            self._send_scheduled = self._running_loop().call_later(SEND_DELAY, self._send)

    def _send(self) -> None:
        """Write what the pipe takes; the rest when it has room. Once stopping and all is
        sent, close the pipe: the writer's signal to finish."""
        self._send_scheduled = None
        if self._frames < 0:
            return  # no writer: a new one is sent everything unacknowledged
        for sent in self._fresh:
            payload = sent.encode()
            self._out += HEADER.pack(sent.seq, 0, len(payload))
            self._out += payload
        self._fresh.clear()
        if not write_what_fits(self._frames, self._out):
            return  # the writer is gone: its acknowledgements pipe says so too
        loop = self._running_loop()
        if self._out and not self._draining:
            self._draining = True
            loop.add_writer(self._frames, self._drain)
        elif not self._out and self._stopping:
            self._close_frames()

    def _drain(self) -> None:
        self._running_loop().remove_writer(self._frames)
        self._draining = False
        self._send()

    def _close_frames(self) -> None:
        if self._frames < 0:
            return
        if self._draining:
            self._running_loop().remove_writer(self._frames)
            self._draining = False
        os.close(self._frames)
        self._frames = -1

    # ------------------------------------------------------------------ acknowledgements

    def _on_acks(self) -> None:
        data = read_what_is_there(self._acks)
        if data is None:
            return
        if not data:
            self._writer_ended()
            return
        for ack in self._acks_reader.feed(data):
            self.failed_attempts += ack.failures
            if ack.through == 0:
                continue
            self.written += ack.rows
            self.batches += 1
            self._restart_pause = 0.0
            while self._sent and self._sent[0].seq <= ack.through:
                sent = self._sent.popleft()
                self._unwritten -= sent.count
                if sent.committed is not None and not sent.committed.done():
                    sent.committed.set_result(None)
        if self._waiters and not self._behind(time.monotonic()):
            self._release()

    def _writer_ended(self) -> None:
        child = self._child
        status = None
        if child is not None and self._stopping and not self._sent:
            status = end_child(child, "the decision log writer process")  # done: it exits
        elif child is not None:
            try:
                status = child.wait(timeout=5)
            except subprocess.TimeoutExpired:  # it closed its pipe yet runs on: end it
                child.kill()
                status = child.wait()
        self._hang_up(kill=False)
        self._watch = None
        if self._stopping and not self._sent:
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
            if status:
                log.error("decision log: the writer process ended with status %s", status)
            return
        self.restarts += 1
        log.error(
            "decision log: the writer process ended (status %s) with %d records not "
            "acknowledged; starting another, which is sent them again",
            status,
            self._unwritten,
        )
        pause, self._restart_pause = (
            self._restart_pause,
            min(max(self._restart_pause * 2, RETRY_FIRST), RETRY_LAST),
        )
        self._running_loop().call_later(pause, self._restart)

    def _restart(self) -> None:
        if self._done is None:
            return  # closed meanwhile
        self._spawn()
        self._out.clear()
        for sent in self._sent:  # those sent before, then the fresh ones (the newest)
            if sent.payload is not None:
                self._out += frame(sent.seq, sent.payload, repeated=True)
        self._send()

    # ------------------------------------------------------------------ starvation

    def _watch_starvation(self, now: float) -> None:
        """Behind under ``SCHED_IDLE``: look at the writer now and every ``STARVED_AFTER``
        while it stays behind."""
        if self._child is None:
            return
        if self._watch is None:
            self._watch = StarvationWatch(self._child.pid)
        self._watch.starved(now)
        self._watch_timer = self._running_loop().call_later(STARVED_AFTER, self._look_again)

    def _look_again(self) -> None:
        self._watch_timer = None
        self._retired = [child for child in self._retired if child.poll() is None]
        watch, now = self._watch, time.monotonic()
        if watch is None or self._child is None or self._done is None:
            return
        if not self._behind(now):
            watch.caught_up()
        elif watch.starved(now):
            self._replace_starved()
        else:
            self._watch_timer = self._running_loop().call_later(STARVED_AFTER, self._look_again)

    def _replace_starved(self) -> None:
        """Kill the starved writer (reaped later: dying takes CPU it is not given) and start
        one under ``nice`` alone, sent every unacknowledged answer again."""
        child = self._child
        assert child is not None
        self.starved += 1
        self._priority = self._priority._replace(idle=False)
        self._watch = None
        log.warning(
            "decision log: the writer process (SCHED_IDLE) was starved by other work with %d "
            "records behind; replacing it with one under nice alone for the rest of this run",
            self._unwritten,
        )
        self._hang_up(kill=False)
        child.kill()
        self._retired.append(child)
        self._restart()

    # ------------------------------------------------------------------ the process

    def _spawn(self) -> None:
        loop = self._running_loop()
        frames_read, frames_write = os.pipe()
        acks_read, acks_write = os.pipe()
        enlarge(frames_write)
        self._child = start_child(
            "api.workers.decision_child",
            frames_read,
            acks_write,
            {CONFIG_ENV: json.dumps(self._config)},
            priority=self._priority,
        )
        os.set_blocking(frames_write, False)
        os.set_blocking(acks_read, False)
        self._frames, self._acks = frames_write, acks_read
        self._acks_reader = AckReader()
        loop.add_reader(acks_read, self._on_acks)

    def _hang_up(self, *, kill: bool) -> None:
        """Close both pipes (and, with ``kill``, end a writer still running)."""
        loop = self._running_loop()
        self._close_frames()
        self._out.clear()
        if self._acks >= 0:
            loop.remove_reader(self._acks)
            os.close(self._acks)
            self._acks = -1
        child, self._child = self._child, None
        if kill and child is not None and child.poll() is None:
            child.kill()
            child.wait()
