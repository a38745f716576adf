"""``WRITER_PROCESS_IDLE`` reaches the writer process a server starts (the processes' own
tests, tests/integration/test_*_process.py, check the policy each is started with)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ledger.settings import Settings
from tests.api.pdp.conftest import Harness, _started, server_settings
from tests.conftest import MutableClock

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")


def _server(store_settings: Settings, clock: MutableClock, **update: object) -> Iterator[Harness]:
    yield from _started(
        server_settings(store_settings, decision_log_writer="process", **update), clock
    )


@pytest.fixture
def idle(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    yield from _server(store_settings, clock)


@pytest.fixture
def plain(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    yield from _server(store_settings, clock, writer_process_idle=False)


def _policy(h: Harness) -> int:
    pid = h.client.app.state.services.decisions.pid  # type: ignore[attr-defined]
    assert pid is not None
    return os.sched_getscheduler(pid)


def test_the_decision_log_writer_runs_under_sched_idle_by_default(idle: Harness) -> None:
    assert _policy(idle) == os.SCHED_IDLE


def test_the_decision_log_writer_keeps_the_servers_policy_when_told_not_to_idle(
    plain: Harness,
) -> None:
    assert _policy(plain) == os.sched_getscheduler(0)
