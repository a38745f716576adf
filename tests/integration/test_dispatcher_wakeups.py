"""The delivery dispatchers (SSF push, access-request callbacks) look for work when the log
follower has applied a batch, not whenever its position moves: a write the follower only
passed over (a Meter's, many a second under metering load) can make no delivery due."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.workers.dispatch import Dispatcher


class FakeFollower:
    def __init__(self) -> None:
        self.position = 0
        self.batches_applied = 0


class Counting(Dispatcher):
    """Counts its looks for due work; never has any."""

    thread_name = "counting"

    def __init__(self, follower: FakeFollower) -> None:
        super().__init__(follower=follower, interval=600.0, timeout=1.0, concurrency=1)
        self.looks = 0
        self.looked = threading.Event()

    def due_work(self) -> list[tuple[str, Any]]:
        self.looks += 1
        self.looked.set()
        return []

    def work(self, key: str, argument: Any) -> bool:
        raise AssertionError("no work is ever due")


@pytest.fixture
def started() -> Iterator[tuple[Counting, FakeFollower]]:
    follower = FakeFollower()
    dispatcher = Counting(follower)
    dispatcher.start()
    assert dispatcher.looked.wait(5.0)  # its first look, at start
    time.sleep(0.2)
    dispatcher.looked.clear()
    yield dispatcher, follower
    dispatcher.stop()


def test_a_position_passed_over_makes_no_look_for_work(
    started: tuple[Counting, FakeFollower],
) -> None:
    dispatcher, follower = started
    looks = dispatcher.looks
    follower.position += 100
    assert not dispatcher.looked.wait(0.3)
    assert dispatcher.looks == looks


def test_a_batch_applied_makes_a_look_for_work(started: tuple[Counting, FakeFollower]) -> None:
    dispatcher, follower = started
    follower.batches_applied += 1
    assert dispatcher.looked.wait(5.0)
