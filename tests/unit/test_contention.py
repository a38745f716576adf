"""The write gate and back-off that keep a command which keeps losing races from being
starved (ledger.application.contention)."""

from __future__ import annotations

import random
import threading

import pytest

from ledger.application import contention
from ledger.application.contention import WriteGate, backoff

WAIT = 5.0  # generous: these only bound a hang, they never measure speed


def test_an_exclusive_holder_waits_for_every_shared_holder_to_leave() -> None:
    gate = WriteGate()
    entered = threading.Event()
    release = threading.Event()
    acquired = threading.Event()

    def reader() -> None:
        with gate.shared():
            entered.set()
            release.wait(WAIT)

    def writer() -> None:
        with gate.exclusive():
            acquired.set()

    threading.Thread(target=reader).start()
    assert entered.wait(WAIT)
    escalating = threading.Thread(target=writer)
    escalating.start()
    assert not acquired.wait(0.05)
    release.set()
    escalating.join(WAIT)
    assert acquired.is_set()


def test_a_waiting_exclusive_holder_is_not_overtaken_by_new_shared_holders() -> None:
    gate = WriteGate()
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with gate.shared():
            first_in.set()
            release_first.wait(WAIT)

    def writer() -> None:
        with gate.exclusive():
            order.append("exclusive")

    late_started = threading.Event()

    def late_reader() -> None:
        late_started.set()
        with gate.shared():
            order.append("late shared")

    threading.Thread(target=first_reader).start()
    assert first_in.wait(WAIT)
    escalating = threading.Thread(target=writer)
    escalating.start()
    while not gate._exclusive_waiting:  # the writer is queued
        threading.Event().wait(0.001)
    late = threading.Thread(target=late_reader)
    late.start()
    assert late_started.wait(WAIT)
    late.join(0.05)  # without writer preference it would be in (sharing with the first)
    assert order == []
    release_first.set()
    escalating.join(WAIT)
    late.join(WAIT)
    assert order == ["exclusive", "late shared"]


def test_a_thread_holding_the_gate_passes_through_it_again() -> None:
    gate = WriteGate()
    with gate.exclusive():
        with gate.shared():
            assert gate.held
        assert gate.held
    assert not gate.held


def test_a_held_gate_cannot_be_escalated() -> None:
    gate = WriteGate()
    with gate.shared(), pytest.raises(RuntimeError), gate.exclusive():
        pass
    assert not gate.held


def test_backoff_pauses_grow_with_conflicts_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(contention.time, "sleep", slept.append)
    rng = random.Random(7)
    first = [backoff(1, rng=rng) for _ in range(200)]
    late = [backoff(30, rng=rng) for _ in range(200)]
    assert slept == first + late
    assert max(first) <= contention.BACKOFF_BASE_SECONDS
    assert max(late) <= contention.BACKOFF_CAP_SECONDS
    assert max(late) > contention.BACKOFF_BASE_SECONDS * 4
