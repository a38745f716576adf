"""Writes that lose a race fail inside the pipelined write transaction; they must fail
cleanly, on the first attempt (not after the library's 0.2 s retries of a
``PipelineAborted``), and leave their connection fit for the next write (no "prepared
statement _pg3_N does not exist"): see the docstring of ``ledger.persistence.postgres``.
One pooled connection, so every write reuses the connection the failures left behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.domain.missions import Mission
from ledger.domain.states import Operation
from ledger.persistence.idempotency import IdempotencyRecord
from ledger.settings import Settings
from tests.builders import OPERATOR, active_mission
from tests.conftest import MutableClock, open_ledger

ROUNDS = 12  # psycopg auto-prepares on a statement's fifth execution
TOGGLE = [Operation.SUSPEND, Operation.RESUME]


@pytest.fixture
def ledger(postgres_url: str, clock: MutableClock) -> Iterator[Ledger]:
    app = open_ledger(
        Settings(database_url=postgres_url, db_pool_size=1, db_max_overflow=0), clock=clock
    )
    yield app
    app.close()


def _changed(ledger: Ledger, mission: Mission, operation: Operation, now: Any) -> Mission:
    copy = ledger.get_mission(mission.id)
    copy.apply_operation(operation, actor=OPERATOR, now=now, reason="pipeline")
    return copy


class CountingCheckouts:
    """Counts the recorder's connection checkouts (the library retries a write that
    failed with an OperationalError, such as ``PipelineAborted``, on a new checkout)."""

    def __init__(self, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
        datastore = ledger.recorder.datastore  # type: ignore[attr-defined]
        original: Callable[[], AbstractContextManager[Any]] = datastore.get_connection
        self.count = 0

        def counted() -> AbstractContextManager[Any]:
            self.count += 1
            return original()

        monkeypatch.setattr(datastore, "get_connection", counted)


def _record(mission: Mission, key: str) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope="test",
        key=key,
        request_hash="sha-256:request",
        originator_id=mission.id,
        originator_version=mission.version,
        status_code=200,
        response=None,
        created_at=0,
    )


def _lose_races_on_version(
    ledger: Ledger,
    clock: MutableClock,
    monkeypatch: pytest.MonkeyPatch,
    extras: Callable[[Mission, str], dict[str, Any]],
) -> None:
    """Each round a winner and a loser change the same Mission version; the loser must
    fail with an IntegrityError on its first attempt (one connection checkout)."""
    mission = active_mission(ledger)
    checkouts = CountingCheckouts(ledger, monkeypatch)
    for round_number in range(ROUNDS):
        operation = TOGGLE[round_number % 2]
        winner = _changed(ledger, mission, operation, clock.now())
        loser = _changed(ledger, mission, operation, clock.now())
        ledger.save(winner, **extras(winner, f"winner-{round_number}"))
        before = checkouts.count
        with pytest.raises(IntegrityError):
            ledger.save(loser, **extras(loser, f"loser-{round_number}"))
        assert checkouts.count - before == 1
    assert ledger.get_mission(mission.id).version == mission.version + ROUNDS


def test_a_write_that_lost_on_its_version_fails_once_and_leaves_the_connection_usable(
    ledger: Ledger, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lose_races_on_version(
        ledger, clock, monkeypatch, lambda _mission, _key: {"expect": {"never-written": 0}}
    )


def test_a_keyed_write_that_lost_on_its_version_fails_on_the_first_attempt(
    ledger: Ledger, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lose_races_on_version(
        ledger, clock, monkeypatch, lambda mission, key: {"idempotency": _record(mission, key)}
    )


def test_a_reused_idempotency_key_is_refused_on_the_first_attempt(
    ledger: Ledger, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mission = active_mission(ledger)
    checkouts = CountingCheckouts(ledger, monkeypatch)
    for round_number in range(ROUNDS):
        first = _changed(ledger, mission, TOGGLE[round_number % 2], clock.now())
        record = _record(first, f"key-{round_number}")
        ledger.save(first, idempotency=record)
        second = _changed(ledger, mission, TOGGLE[(round_number + 1) % 2], clock.now())
        before = checkouts.count
        with pytest.raises(IntegrityError):
            ledger.save(second, idempotency=record)
        assert checkouts.count - before == 1
