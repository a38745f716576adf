"""Freshness fails closed (SPEC 7.3): a replica whose index has not confirmed, within
``mission_max_stale_seconds``, that it holds everything in the store denies every decision
with ``stale_state`` and ``next_action: retry``, and says so on ``/readyz`` and ``/metrics``.

The fault hook: the follower's reads of the log fail (as when its database connection is cut)
until the test lets them through again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from ledger.domain.instants import format_instant, parse_instant
from ledger.settings import Settings
from tests.api.pdp.conftest import Harness, _started, server_settings
from tests.api.pdp.test_authzen_decisions import entry, request
from tests.conftest import MutableClock

MAX_STALE = 1
FOLLOWER_THREAD = "ledger-follower"

# The follower reads the log differently on each backend (LISTEN/NOTIFY on PostgreSQL).
pytestmark = pytest.mark.postgres_smoke


class LogOutage:
    """Makes the follower's reads of the log (its head, then its events) fail while ``cut``
    is set, as if its own connection were cut: reads made by other threads (``/readyz``
    reading the head) still go through."""

    READS = ("max_notification_id", "select_notifications")

    def __init__(self, harness: Harness) -> None:
        recorder = harness.client.app.state.services.ledger.recorder  # type: ignore[attr-defined]
        self._recorder = recorder
        self._reads: dict[str, Callable[..., Any]] = {
            name: getattr(recorder, name) for name in self.READS
        }
        self.cut = False
        for name, read in self._reads.items():
            setattr(recorder, name, self._cuttable(read))

    def _cuttable(self, read: Callable[..., Any]) -> Callable[..., Any]:
        def cuttable(*args: Any, **kwargs: Any) -> Any:
            if self.cut and threading.current_thread().name == FOLLOWER_THREAD:
                raise ConnectionError("fault hook: the log is unreachable")
            return read(*args, **kwargs)

        return cuttable

    def restore(self) -> None:
        for name, read in self._reads.items():
            setattr(self._recorder, name, read)


@pytest.fixture
def harness(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    settings = server_settings(store_settings, mission_max_stale_seconds=MAX_STALE)
    yield from _started(settings, clock)


@pytest.fixture
def outage(harness: Harness) -> Iterator[LogOutage]:
    fault = LogOutage(harness)
    yield fault
    fault.restore()


def _first(harness: Harness, body: dict[str, Any], reason: str | None, within: float) -> float:
    """Seconds until a decision with ``reason`` (None: a permit) is answered; fails after
    ``within`` seconds."""
    started = time.monotonic()
    while True:
        answer = harness.evaluate(body)
        if answer["context"].get("reason") == reason and answer["decision"] is (reason is None):
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed < within, f"still {answer} after {elapsed:.2f} s"
        time.sleep(0.05)


def _permitted_request(harness: Harness) -> dict[str, Any]:
    mission = harness.mission([entry(["invoices.read"])])
    token = harness.mandate(mission)["token"]
    body = request(token, action="invoices.read")
    assert harness.evaluate(body)["decision"] is True
    return body


def test_decisions_deny_stale_state_once_the_log_is_unreachable_past_the_bound(
    harness: Harness, outage: LogOutage
) -> None:
    body = _permitted_request(harness)
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)


def test_a_stale_denial_tells_the_pep_to_retry(harness: Harness, outage: LogOutage) -> None:
    body = _permitted_request(harness)
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)
    assert harness.evaluate(body)["context"]["next_action"] == "retry"


def test_permits_return_once_the_replica_catches_up(harness: Harness, outage: LogOutage) -> None:
    body = _permitted_request(harness)
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)
    outage.cut = False
    _first(harness, body, None, within=MAX_STALE + 1)


def test_search_lists_nothing_while_the_replica_is_stale(
    harness: Harness, outage: LogOutage
) -> None:
    body = _permitted_request(harness)
    search = {"subject": body["subject"], "resource": body["resource"]}
    listed = harness.client.post(
        "/access/v1/search/action", json=search, headers=harness.auth("pep")
    )
    assert listed.json()["results"] == [{"name": "invoices.read"}]
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)
    stale = harness.client.post(
        "/access/v1/search/action", json=search, headers=harness.auth("pep")
    )
    assert stale.json()["results"] == []
    assert stale.json()["context"]["reason"] == "stale_state"


def test_readyz_turns_unready_with_the_same_staleness(harness: Harness, outage: LogOutage) -> None:
    body = _permitted_request(harness)
    assert harness.client.get("/readyz").status_code == 200
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)
    ready = harness.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["staleness_seconds"] > MAX_STALE


def test_metrics_show_the_staleness_decisions_fail_closed_on(
    harness: Harness, outage: LogOutage
) -> None:
    body = _permitted_request(harness)
    outage.cut = True
    _first(harness, body, "stale_state", within=MAX_STALE + 1)
    text = harness.client.get("/metrics", headers=harness.auth("operator")).text
    [line] = [
        line
        for line in text.splitlines()
        if line.startswith("mission_ledger_read_model_staleness_seconds ")
    ]
    assert float(line.split()[1]) > MAX_STALE


def test_valid_until_ends_when_the_index_freshness_runs_out(
    store_settings: Settings, clock: MutableClock
) -> None:
    """With a 60 s bound and an index last confirmed fresh 45 s ago, a permit is good for
    at most the remaining 15 s, not 60 s from now."""
    settings = server_settings(store_settings, mission_max_stale_seconds=60)
    for harness in _started(settings, clock):
        body = _permitted_request(harness)
        fault = LogOutage(harness)
        fault.cut = True
        follower = harness.client.app.state.services.follower  # type: ignore[attr-defined]
        time.sleep(0.3)  # let an in-flight read of the follower finish
        follower._fresh_at -= 45
        answer = harness.evaluate(body)
        fault.restore()
        valid_until = parse_instant(answer["context"]["valid_until"])
        assert answer["decision"] is True
        assert valid_until <= clock.now() + timedelta(seconds=15)
        assert valid_until >= clock.now() + timedelta(seconds=13)
        assert format_instant(valid_until) == answer["context"]["valid_until"]
