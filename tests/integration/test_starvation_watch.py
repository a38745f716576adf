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


def _idle_process(code: str) -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        os.sched_setscheduler(child.pid, os.SCHED_IDLE, os.sched_param(0))
        time.sleep(0.3)  # its interpreter started (the CPUs are not busy yet)
        yield child.pid
    finally:
        child.kill()
        child.wait()


def _looked_at_twice(pid: int) -> bool:
    watch = StarvationWatch(pid)
    assert not watch.starved(time.monotonic())
    time.sleep(STARVED_AFTER * 1.5)
    return watch.starved(time.monotonic())


def test_an_idle_process_that_wants_the_cpu_beside_busy_cpus_is_starved() -> None:
    for pid in _idle_process("while True: pass"):
        with every_cpu_busy():
            time.sleep(0.2)
            assert _looked_at_twice(pid)


def test_an_idle_process_asleep_beside_busy_cpus_is_not_starved() -> None:
    for pid in _idle_process("import time; time.sleep(60)"):
        with every_cpu_busy():
            assert not _looked_at_twice(pid)


def test_a_process_that_ended_shows_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid = child.pid
    assert sample(pid) is not None or child.poll() is not None
    child.wait()
    assert sample(pid) is None
