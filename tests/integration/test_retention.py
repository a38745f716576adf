"""Retention on both backends: SETs older than ``set_retention_days`` and idempotency
records older than ``idempotency_retention_hours`` are pruned; newer ones stay; the event
log itself is never touched."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.persistence.idempotency import INSERT_SQL, IdempotencyRecord
from ledger.settings import Settings
from projections.retention import Retention, prune
from tests.builders import OPERATOR, active_mission
from tests.conftest import MutableClock
from tests.integration.test_signal_log import Signals

WEEK = timedelta(days=7)
DAY = timedelta(hours=24)


@pytest.fixture
def signals(ledger: Ledger, store_settings: Settings) -> Signals:
    return Signals(ledger, store_settings)


def _record(key: str, created_at: int) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope="api_key::agent-1",
        key=key,
        request_hash="h",
        originator_id="msn_x",
        originator_version=1,
        status_code=200,
        response=None,
        created_at=created_at,
    )


def test_sets_older_than_the_retention_period_are_pruned_and_newer_ones_kept(
    signals: Signals, clock: MutableClock
) -> None:
    stream = signals.stream()
    mission = active_mission(signals.ledger)  # SET 1, at T0
    clock.advance(days=8)
    signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )  # SET 2, eight days later
    assert [r["seq"] for r in signals.log(stream)] == [1, 2]
    head = signals.ledger.head_position()
    pruned = prune(
        signals.ledger.database,
        signals.ledger.clock.now(),
        set_retention=WEEK,
        idempotency_retention=DAY,
    )
    assert pruned.sets == 1
    assert [r["seq"] for r in signals.log(stream)] == [2]
    assert signals.ledger.head_position() == head  # the audit log is never pruned


def test_idempotency_records_older_than_the_retention_period_are_pruned(
    signals: Signals,
) -> None:
    now = signals.ledger.clock.now()
    second = int(now.timestamp())
    with signals.ledger.database.transaction() as cur:
        cur.execute(INSERT_SQL, _record("old", second - 25 * 3600).params())
        cur.execute(INSERT_SQL, _record("new", second - 23 * 3600).params())
    pruned = prune(signals.ledger.database, now, set_retention=WEEK, idempotency_retention=DAY)
    assert pruned.idempotency_records == 1
    rows = signals.ledger.database.fetchall("SELECT key FROM idempotency_records")
    assert [r["key"] for r in rows] == ["new"]


def test_retention_prunes_at_most_once_per_interval(signals: Signals) -> None:
    retention = Retention(
        signals.ledger.database, set_retention=WEEK, idempotency_retention=DAY, every=3600
    )
    now = signals.ledger.clock.now()
    assert retention.tick(now) is not None
    assert retention.tick(now) is None
