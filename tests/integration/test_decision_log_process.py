"""The decision log written by a process of its own (``api.workers.decision_process`` and
``decision_child``), on both backends: every record of every answer stored exactly once,
sync mode answering after the commit, a writer killed mid-load replaced without losing or
repeating a record, answers held back while the store cannot take writes, and a writer
that outlives its server storing what it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import orjson
import psycopg
import pytest

from api.workers import decision_process
from api.workers.decision_frames import CONFIG_ENV, AckReader, frame
from api.workers.decision_process import ProcessDecisionWriter
from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.persistence.database import store_params
from ledger.settings import Settings, WriterPriority
from projections.decision_log import (
    DecisionFilter,
    DecisionLog,
    DecisionRecord,
    StoredDecision,
    encode_wires,
    request_digest,
)
from projections.pdp import Decision
from tests.conftest import T0
from tests.cpu_hogs import every_cpu_busy

PEP = Actor(type="api_key", name="pep-1", role="pep")
_IDS = itertools.count(1)


def _request(n: int) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": f"agent-{n % 7}"},
        "action": {"name": "invoices.pay", "properties": {"amount": f"{n}.50"}},
        "resource": {"type": "api", "id": f"https://erp.example.com/invoices/{n}"},
        "context": {"mandate": "eyJ" + "x" * 600, "proof": {"jkt": "k" * 43}},
    }


def _answer(size: int = 1) -> list[DecisionRecord]:
    """The records of one answer: a single evaluation (sent as its body's text) or a batch."""
    records = []
    for _ in range(size):
        n = next(_IDS)
        request = _request(n)
        decision = Decision(
            decision=n % 3 != 0,
            context={"evaluation_id": f"ev_proc{n:07d}", "mission": {"id": "msn_1", "version": 2}},
            mandate_id="mdt_1",
            position=n,
        )
        text = orjson.dumps(request) if size == 1 else None
        records.append(DecisionRecord(T0 + timedelta(microseconds=n), PEP, request, decision, text))
    return records


@pytest.fixture
def store(ledger: Ledger) -> DecisionLog:
    return DecisionLog(ledger.database)


def _stored(store: DecisionLog) -> dict[str, StoredDecision]:
    found: dict[str, StoredDecision] = {}
    cursor = None
    while True:
        page, cursor = store.page(DecisionFilter(), cursor=cursor, limit=1000)
        for record in page:
            assert record.evaluation_id not in found, "a record stored twice"
            found[record.evaluation_id] = record
        if cursor is None:
            return found


def _assert_all_stored(store: DecisionLog, answers: list[list[DecisionRecord]]) -> None:
    stored = _stored(store)
    expected = [record for answer in answers for record in answer]
    assert sorted(stored) == sorted(r.evaluation_id for r in expected)
    for record in expected:
        request = record.request
        assert isinstance(request, dict)
        kept = stored[record.evaluation_id]
        assert kept.request_digest == request_digest(request)
        assert (kept.subject, kept.resource) == (request["subject"], request["resource"])
        assert kept.decision is record.decision.decision


def _in_loop(
    store_settings: Settings,
    scenario: Callable[[ProcessDecisionWriter], Awaitable[Any]],
    **options: Any,
) -> tuple[Any, ProcessDecisionWriter]:
    """Run ``scenario`` with a started writer on an event loop; the writer is closed (every
    record sent written) before this returns the scenario's result and the writer."""

    async def main() -> tuple[Any, ProcessDecisionWriter]:
        writer = ProcessDecisionWriter(store_params(store_settings), **options)
        writer.attach(asyncio.get_running_loop())
        writer.start()
        try:
            return await scenario(writer), writer
        finally:
            await writer.close(timeout=30)

    return asyncio.run(main())


def test_every_record_of_every_answer_is_stored_once_as_the_server_would_store_it(
    store: DecisionLog, store_settings: Settings
) -> None:
    answers = [_answer(1 if n % 4 else 3) for n in range(300)]

    async def scenario(writer: ProcessDecisionWriter) -> None:
        for answer in answers:
            assert writer.record(answer) is None
            await asyncio.sleep(0)

    _in_loop(store_settings, scenario, flush_ms=10_000)  # written at shutdown at the latest
    _assert_all_stored(store, answers)


def test_at_close_a_writer_that_acknowledged_every_record_yet_does_not_exit_is_ended(
    store: DecisionLog,
    store_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A writer kept off the CPU (stopped here; under ``SCHED_IDLE`` beside busy CPUs in
    life) would hold the server's shutdown for as long as its exit takes: with every record
    acknowledged it has nothing to lose, and is killed after ``EXIT_GRACE_SECONDS``."""
    monkeypatch.setattr(decision_process, "EXIT_GRACE_SECONDS", 0.1)
    answers = [_answer(), _answer(3)]

    async def scenario(writer: ProcessDecisionWriter) -> int:
        for answer in answers:
            committed = writer.record(answer)
            assert committed is not None
            await asyncio.wait_for(committed, 30)
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGSTOP)
        return writer.pid

    with caplog.at_level(logging.INFO, logger="mission_ledger.decision_log"):
        child, _ = _in_loop(store_settings, scenario, mode="sync", flush_ms=10)
    assert "the writer process had not exited 0 s after its last record" in caplog.text
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # killed and reaped
    _assert_all_stored(store, answers)


def test_in_sync_mode_an_answer_waits_until_the_writer_process_committed_it(
    store: DecisionLog, store_settings: Settings
) -> None:
    async def scenario(writer: ProcessDecisionWriter) -> list[int]:
        counts = []
        for _ in range(5):
            waiter = writer.record(_answer())
            assert waiter is not None
            await waiter
            counts.append(store.count())
        return counts

    counts, _ = _in_loop(store_settings, scenario, mode="sync", flush_ms=10_000)
    assert counts == [1, 2, 3, 4, 5]


def test_a_killed_writer_process_is_replaced_and_no_record_is_lost_or_stored_twice(
    store: DecisionLog, store_settings: Settings
) -> None:
    answers = [_answer() for _ in range(200)]

    async def scenario(writer: ProcessDecisionWriter) -> None:
        for answer in answers[:100]:
            writer.record(answer)
        await asyncio.sleep(0.3)  # sent, and (a 10 s window) not yet committed
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGKILL)
        for answer in answers[100:]:
            writer.record(answer)
            await asyncio.sleep(0)

    _, writer = _in_loop(store_settings, scenario, flush_ms=10_000)
    assert writer.restarts == 1
    _assert_all_stored(store, answers)


def test_the_writer_process_ignores_interrupts_and_termination_requests(
    store: DecisionLog, store_settings: Settings
) -> None:
    """A Ctrl-C or ``systemctl stop`` reaches the whole process group: the server shuts
    down and the writer finishes what the server sends it."""
    answers = [_answer() for _ in range(20)]

    async def scenario(writer: ProcessDecisionWriter) -> None:
        for answer in answers[:10]:
            writer.record(answer)
        await asyncio.sleep(0.3)
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGINT)
        os.kill(writer.pid, signal.SIGTERM)
        await asyncio.sleep(0.3)
        for answer in answers[10:]:
            writer.record(answer)

    _, writer = _in_loop(store_settings, scenario, flush_ms=10_000)
    assert writer.restarts == 0
    _assert_all_stored(store, answers)


def test_a_termination_request_while_the_writer_starts_does_not_end_it(
    store: DecisionLog, store_settings: Settings
) -> None:
    """The same signals sent at once, while the writer's interpreter is still starting
    (before it can ignore them): they wait, blocked, and are then discarded."""
    answers = [_answer() for _ in range(5)]

    async def scenario(writer: ProcessDecisionWriter) -> None:
        assert writer.pid is not None
        os.kill(writer.pid, signal.SIGINT)
        os.kill(writer.pid, signal.SIGTERM)
        for answer in answers:
            writer.record(answer)
        await asyncio.sleep(0.5)

    _, writer = _in_loop(store_settings, scenario, flush_ms=10_000)
    assert writer.restarts == 0
    _assert_all_stored(store, answers)


@contextlib.contextmanager
def _writes_blocked(settings: Settings) -> Iterator[None]:
    """Another session holds the decision log's table (SQLite: the database) for writing."""
    if settings.embedded:
        conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("LOCK TABLE decision_log IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def test_answers_wait_while_the_store_takes_no_writes_and_no_record_is_dropped(
    store: DecisionLog, store_settings: Settings
) -> None:
    answers = [_answer() for _ in range(60)]

    async def scenario(writer: ProcessDecisionWriter) -> tuple[int, bool]:
        waiting: list[asyncio.Future[None]] = []
        with _writes_blocked(store_settings):
            for answer in answers:
                waiter = writer.record(answer)
                if waiter is not None:
                    waiting.append(waiter)
                await asyncio.sleep(0.01)
            none_released = not any(w.done() for w in waiting)
        await asyncio.wait_for(asyncio.gather(*waiting), 30)
        return len(waiting), none_released

    (held, none_released), _ = _in_loop(store_settings, scenario, flush_ms=50)
    assert held > 0
    assert none_released
    _assert_all_stored(store, answers)


def test_a_writer_whose_server_is_gone_stores_what_it_was_sent_and_exits(
    store: DecisionLog, store_settings: Settings
) -> None:
    """The frames pipe ends without a shutdown (the server was killed): the writer stores
    every answer it received, acknowledges them and ends with status 0."""
    answers = [_answer() for _ in range(50)]
    frames_read, frames_write = os.pipe()
    acks_read, acks_write = os.pipe()
    config = {"store": store_params(store_settings), "mode": "async", "flush_ms": 10_000}
    child = subprocess.Popen(
        [sys.executable, "-m", "api.workers.decision_child", str(frames_read), str(acks_write)],
        pass_fds=(frames_read, acks_write),
        env={**os.environ, CONFIG_ENV: json.dumps(config)},
    )
    os.close(frames_read)
    os.close(acks_write)
    with os.fdopen(frames_write, "wb") as frames:
        for seq, answer in enumerate(answers, 1):
            frames.write(frame(seq, encode_wires(answer)))
    assert child.wait(timeout=60) == 0
    with os.fdopen(acks_read, "rb") as acks:
        last = [ack.through for ack in AckReader().feed(acks.read())]
    assert last[-1] == len(answers)
    _assert_all_stored(store, answers)


def test_the_writer_process_runs_below_the_servers_priority_when_asked(
    store: DecisionLog, store_settings: Settings
) -> None:
    async def scenario(writer: ProcessDecisionWriter) -> int:
        assert writer.pid is not None
        return os.getpriority(os.PRIO_PROCESS, writer.pid)

    priority, _ = _in_loop(store_settings, scenario, priority=WriterPriority(nice=5))
    assert priority == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
def test_the_writer_process_runs_under_sched_idle_when_asked(
    store: DecisionLog, store_settings: Settings
) -> None:
    async def scenario(writer: ProcessDecisionWriter) -> int:
        assert writer.pid is not None
        return os.sched_getscheduler(writer.pid)

    policy, _ = _in_loop(store_settings, scenario, priority=WriterPriority(idle=True))
    assert policy == os.SCHED_IDLE


async def _written(writer: ProcessDecisionWriter, answer: list[DecisionRecord]) -> None:
    """Record ``answer`` and wait for its commit (the writer process is up and writing)."""
    writer.record(answer)
    while writer.unwritten:
        await asyncio.sleep(0.01)


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="Linux scheduler stats")
def test_a_writer_starved_under_sched_idle_is_replaced_by_one_under_nice_and_loses_nothing(
    store: DecisionLog, store_settings: Settings
) -> None:
    answers = [_answer() for _ in range(400)]

    async def scenario(writer: ProcessDecisionWriter) -> tuple[int, int]:
        await asyncio.wait_for(_written(writer, answers[0]), 30)
        starved_pid = writer.pid
        assert starved_pid is not None
        waiting = []
        with every_cpu_busy():
            for answer in answers[1:]:
                waiter = writer.record(answer)
                if waiter is not None:
                    waiting.append(waiter)
                await asyncio.sleep(0.02)
                if writer.starved:
                    break
        assert writer.pid is not None
        policy = os.sched_getscheduler(writer.pid)
        for answer in answers[1 + len(waiting) :]:
            writer.record(answer)
        await asyncio.wait_for(asyncio.gather(*waiting), 30)
        return policy, starved_pid

    (policy, starved_pid), writer = _in_loop(
        store_settings, scenario, flush_ms=50, priority=WriterPriority(idle=True)
    )
    assert writer.starved == 1
    assert policy == os.SCHED_OTHER
    assert writer.priority == WriterPriority(idle=False)
    with pytest.raises(ChildProcessError):
        os.waitpid(starved_pid, os.WNOHANG)  # killed and reaped
    _assert_all_stored(store, answers)
