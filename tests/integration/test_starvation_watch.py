"""The starvation rule on real processes and real CPU contention (``api.workers.starvation``;
decision 0025): what counts is time spent runnable on a run queue, so a process under
``SCHED_IDLE`` that wants the CPU beside busy CPUs is starved, and one asleep (as a writer
waiting for its store) is not, however busy the CPUs are."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from api.workers.starvation import STARVED_AFTER, StarvationWatch, sample
from tests.cpu_hogs import every_cpu_busy

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "SCHED_IDLE") and os.path.exists("/proc/self/schedstat")),
    reason="Linux scheduling policy and scheduler statistics",
)


def _idle_process(then: str) -> Iterator[int]:
    """A process that says it is up, then does ``then``; under ``SCHED_IDLE`` from that
    moment (its start, under the normal policy, must not wait for a busy machine)."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; print(flush=True); {then}"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        child.stdout.readline()
        os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
        yield child.pid
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _judgements(pid: int, looks: int = 6) -> list[bool]:
    """What a watch says of ``pid`` at ``looks`` looks ``STARVED_AFTER`` apart, after the
    first (it is used so while a writer stays behind)."""
    watch = StarvationWatch(pid)
    assert not watch.starved(time.monotonic())
    judged = []
    for _ in range(looks):
        time.sleep(STARVED_AFTER)
        judged.append(watch.starved(time.monotonic()))
    return judged


def test_an_idle_process_that_wants_the_cpu_beside_busy_cpus_is_starved() -> None:
    for pid in _idle_process("exec('while True: pass')"):
        with every_cpu_busy():
            assert any(_judgements(pid))


def _asleep(pid: int) -> bool:
    seen = sample(pid)
    return seen is not None and not seen.runnable


def test_an_idle_process_asleep_beside_busy_cpus_is_not_starved() -> None:
    for pid in _idle_process("time.sleep(60)"):
        deadline = time.monotonic() + 30
        while not _asleep(pid):  # past its print, into its sleep (on a busy machine too)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with every_cpu_busy():
            assert not any(_judgements(pid))


def test_a_process_that_ended_shows_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid = child.pid
    assert sample(pid) is not None or child.poll() is not None
    child.wait()
    assert sample(pid) is None
