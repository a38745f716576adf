"""The Meter writer process (``METER_WRITER=process``, both backends): a group crosses the
pipe, is saved by the child on the same store and announced to the server's commit
listeners; refusals come back as outcomes; leases granted there are drawn from here; a
child that dies fails its group with ``Unavailable`` and is replaced; ``close`` ends it.

The child reads the system clock, so these tests use a Ledger on the system clock too."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest

from api.workers import children
from api.workers.meter_process import ProcessMeterBook, child_config
from ledger.application import Ledger
from ledger.application.metering import MeterWriter, Reserve
from ledger.clock import SystemClock
from ledger.domain.errors import BudgetExceeded, Unavailable
from ledger.domain.metering import Bounds, Meter, MeteredCall, format_units, meter_id
from ledger.persistence.store import open_ledger, persistence_env
from ledger.settings import Settings, WriterPriority
from tests.cpu_hogs import every_cpu_busy

HOLDER = "rpl_test"
BOUNDS = Bounds(budget="100.00", currency="USD")
#: How long groups go on beside busy CPUs before the child must have been judged starved.
STARVED_WITHIN = 20.0


@pytest.fixture
def system_ledger(store_settings: Settings) -> Iterator[Ledger]:
    ledger = open_ledger(store_settings)
    yield ledger
    ledger.close()


def book(settings: Settings, ledger: Ledger, *, lease_seconds: float = 0) -> ProcessMeterBook:
    config = child_config(
        persistence_env(settings),
        holder=HOLDER,
        lease_seconds=lease_seconds,
        issuer=settings.public_issuer,
        policy_version=settings.policy_version,
    )
    return ProcessMeterBook(ledger, config)


@pytest.fixture
def process_book(store_settings: Settings, system_ledger: Ledger) -> Iterator[ProcessMeterBook]:
    started = book(store_settings, system_ledger).start()
    yield started
    started.close()


def reserve(mission_id: str, evaluation_id: str, amount: str) -> Reserve:
    return Reserve(
        mission_id=mission_id,
        bounds=BOUNDS,
        call=MeteredCall(amount=amount, currency="USD", call_class=None),
        evaluation_id=evaluation_id,
        mandate_id=None,
        expires_at=SystemClock().now() + timedelta(minutes=5),
    )


def test_a_group_is_saved_by_the_process_and_announced_here(
    system_ledger: Ledger, process_book: ProcessMeterBook
) -> None:
    announced: list[int] = []
    topics: set[str] = set()

    def heard(positions: Sequence[int], written: frozenset[str]) -> None:
        announced.extend(positions)
        topics.update(written)

    system_ledger.commit_listeners.add(heard)
    applied = process_book.apply([reserve("msn_a", "ev1", "30"), reserve("msn_a", "ev2", "20")])
    assert applied.outcomes == [None, None]
    meter: Meter = system_ledger.repository.get(meter_id("msn_a"))
    assert format_units(meter.usage().reserved, 2) == "50.00"
    history = system_ledger.history(meter_id("msn_a"))
    assert announced == [logged.position for logged in history]
    assert topics == {logged.topic for logged in history}


def test_a_refusal_comes_back_as_its_operations_outcome(
    process_book: ProcessMeterBook,
) -> None:
    applied = process_book.apply([reserve("msn_b", "ev1", "80"), reserve("msn_b", "ev2", "30")])
    assert applied.outcomes[0] is None
    refusal = applied.outcomes[1]
    assert isinstance(refusal, BudgetExceeded)
    assert refusal.control == "max_budget"


def test_a_lease_granted_by_the_process_is_drawn_from_in_memory(
    store_settings: Settings, system_ledger: Ledger
) -> None:
    backend = book(store_settings, system_ledger, lease_seconds=60)
    writer = MeterWriter(system_ledger, lease_seconds=60, holder=HOLDER, backend=backend)
    with writer:
        writer.reserve(reserve("msn_c", "ev1", "1"))  # takes a lease, in the child
        now = SystemClock().now()
        drawn = writer.draw(
            mission_id="msn_c",
            call=MeteredCall(amount="1", currency="USD", call_class=None),
            evaluation_id="ev2",
            mandate_id=None,
            expires_at=now + timedelta(minutes=5),
            now=now,
        )
    assert drawn
    meter: Meter = system_ledger.repository.get(meter_id("msn_c"))
    assert {"ev1", "ev2"} <= set(meter.outstanding)  # the draw recorded too


def test_a_process_that_dies_fails_its_group_and_is_replaced(
    system_ledger: Ledger, process_book: ProcessMeterBook
) -> None:
    process_book.apply([reserve("msn_d", "ev1", "10")])
    assert process_book.pid is not None
    os.kill(process_book.pid, signal.SIGKILL)
    with pytest.raises(Unavailable):
        process_book.apply([reserve("msn_d", "ev2", "10")])
    applied = process_book.apply([reserve("msn_d", "ev3", "10")])
    assert applied.outcomes == [None]
    assert process_book.restarts == 1


def test_close_ends_the_process_and_refuses_later_groups(
    store_settings: Settings, system_ledger: Ledger
) -> None:
    backend = book(store_settings, system_ledger).start()
    child = backend.pid
    assert child is not None
    backend.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # reaped: it exited
    with pytest.raises(Unavailable):
        backend.apply([reserve("msn_e", "ev1", "10")])


def test_at_close_a_process_that_answered_every_group_yet_does_not_exit_is_ended(
    store_settings: Settings,
    system_ledger: Ledger,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child kept off the CPU (stopped here; under ``SCHED_IDLE`` beside busy CPUs in
    life) would hold the server's shutdown for as long as its exit takes: with every group
    answered it has nothing to lose, and is killed after ``EXIT_GRACE_SECONDS``."""
    monkeypatch.setattr(children, "EXIT_GRACE_SECONDS", 0.1)
    backend = book(store_settings, system_ledger).start()
    assert backend.apply([reserve("msn_x", "ev1", "10")]).outcomes == [None]
    child = backend.pid
    assert child is not None
    os.kill(child, signal.SIGSTOP)
    with caplog.at_level(logging.INFO, logger="mission_ledger.children"):
        backend.close()
    assert "had not exited 0 s after its last work; ending it" in caplog.text
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # killed and reaped
    meter: Meter = system_ledger.repository.get(meter_id("msn_x"))
    assert len(meter.outstanding) == 1  # its group was saved before


def _started(
    store_settings: Settings, system_ledger: Ledger, priority: WriterPriority
) -> ProcessMeterBook:
    """A started backend whose process runs with ``priority`` (no budget leases)."""
    config = child_config(
        persistence_env(store_settings),
        holder=HOLDER,
        lease_seconds=0,
        issuer=store_settings.public_issuer,
        policy_version=store_settings.policy_version,
    )
    return ProcessMeterBook(system_ledger, config, priority=priority).start()


def test_the_writer_process_runs_below_the_servers_priority_when_asked(
    store_settings: Settings, system_ledger: Ledger
) -> None:
    started = _started(store_settings, system_ledger, WriterPriority(nice=5))
    try:
        assert started.pid is not None
        priority = os.getpriority(os.PRIO_PROCESS, started.pid)
    finally:
        started.close()
    assert priority == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
def test_the_writer_process_runs_under_sched_idle_when_asked(
    store_settings: Settings, system_ledger: Ledger
) -> None:
    started = _started(store_settings, system_ledger, WriterPriority(idle=True))
    try:
        assert started.pid is not None
        policy = os.sched_getscheduler(started.pid)
    finally:
        started.close()
    assert policy == os.SCHED_IDLE


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="Linux scheduler stats")
def test_a_process_starved_under_sched_idle_is_retired_and_the_next_runs_under_nice(
    store_settings: Settings, system_ledger: Ledger
) -> None:
    started = _started(store_settings, system_ledger, WriterPriority(idle=True))
    try:
        assert started.apply([reserve("msn_s", "ev0", "1")]).outcomes == [None]
        starved_pid = started.pid
        groups = 1
        with every_cpu_busy():
            deadline = time.monotonic() + STARVED_WITHIN
            while not started.starved and time.monotonic() < deadline:
                groups += 1
                applied = started.apply([reserve("msn_s", f"ev{groups}", "1")])
                assert applied.outcomes == [None]
        assert started.apply([reserve("msn_s", "ev_after", "1")]).outcomes == [None]
        assert started.pid is not None
        policy = os.sched_getscheduler(started.pid)
        assert started.pid != starved_pid
    finally:
        started.close()
    assert (started.starved, started.restarts) == (1, 0)
    assert policy == os.SCHED_OTHER
    meter: Meter = system_ledger.repository.get(meter_id("msn_s"))
    assert len(meter.outstanding) == groups + 1  # every group saved, none twice
