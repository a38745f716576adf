"""A running app shortens the interpreter's switch interval (``api/switch_interval.py``):
its threads (the Meter writer, the follower, a decision log writer thread) then hold up a
decision in progress for at most 0.5 ms at a time; the interval is restored when it stops."""

from __future__ import annotations

import sys

from fastapi.testclient import TestClient

from api.app import create_app
from api.switch_interval import SWITCH_INTERVAL
from ledger.settings import Settings
from tests.conftest import MutableClock, with_kek


def test_a_running_app_bounds_each_wait_for_the_interpreter_lock_and_restores_it(
    store_settings: Settings, clock: MutableClock
) -> None:
    before = sys.getswitchinterval()
    with TestClient(create_app(with_kek(store_settings), clock=clock)):
        running = sys.getswitchinterval()
    assert running == min(before, SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before
