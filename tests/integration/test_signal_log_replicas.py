"""Two replicas' signal logs take turns on one store (each keeps its own copies of the
streams and their next seq): a change applied by one is honoured by the other, and a batch
that rolls back leaves nothing behind."""

from __future__ import annotations

import pytest

from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.domain.streams import LIFECYCLE_CHANGE, StreamStatus
from ledger.persistence.database import Cursor
from ledger.settings import Settings
from projections.signals import SignalLog
from tests.builders import OPERATOR, active_mission
from tests.integration.test_signal_log import PEP, Signals


def test_a_stream_disabled_through_one_replica_gets_nothing_from_the_other(
    ledger: Ledger, store_settings: Settings
) -> None:
    first, second = Signals(ledger, store_settings), Signals(ledger, store_settings)
    stream = first.stream()
    assert first.log(stream) == []  # the first replica records the stream
    mission = active_mission(ledger)
    assert len(first.log(stream)) == 1  # the activation (the stream now cached by the first)
    ledger.set_stream_status(
        actor=PEP, stream_id=stream, status=StreamStatus.DISABLED, reason="maintenance"
    )
    second.follower.catch_up()  # the other replica applies the status change
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    assert len(first.log(stream)) == 1  # the first replica applies the suspension: no SET


def test_a_stream_enabled_again_through_one_replica_gets_sets_from_the_other(
    ledger: Ledger, store_settings: Settings
) -> None:
    first, second = Signals(ledger, store_settings), Signals(ledger, store_settings)
    stream = first.stream()
    assert first.log(stream) == []
    mission = active_mission(ledger)
    assert len(first.log(stream)) == 1
    ledger.set_stream_status(actor=PEP, stream_id=stream, status=StreamStatus.DISABLED, reason=None)
    assert len(first.log(stream)) == 1
    ledger.set_stream_status(actor=PEP, stream_id=stream, status=StreamStatus.ENABLED, reason=None)
    second.follower.catch_up()
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    assert len(first.log(stream)) == 2


def test_sequences_stay_gap_free_when_replicas_take_turns(
    ledger: Ledger, store_settings: Settings
) -> None:
    """Each replica reuses its own copies only while it applied the last batch itself."""
    first, second = Signals(ledger, store_settings), Signals(ledger, store_settings)
    streams = [first.stream(), second.stream()]
    mission = active_mission(ledger)
    turns = [first, first, second, first, second, second, first]
    operations = [Operation.SUSPEND, Operation.RESUME] * 3 + [Operation.REVOKE]
    for replica, operation in zip(turns, operations, strict=True):
        replica.follower.catch_up()
        ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=operation, reason="t"
        )
    first.follower.catch_up()
    for stream in streams:
        rows = second.log(stream)
        assert [r["seq"] for r in rows] == list(range(1, 9))  # activation + 7 transitions
        assert len({r["jti"] for r in rows}) == 8
        states = [first.claims(r["set_jwt"])["events"][LIFECYCLE_CHANGE]["state"] for r in rows]
        assert states == ["active"] + ["suspended", "active"] * 3 + ["revoked"]


def test_a_batch_that_rolls_back_leaves_no_trace_in_the_next(
    ledger: Ledger, store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    signals = Signals(ledger, store_settings)
    stream = signals.stream()
    mission = active_mission(ledger)
    assert len(signals.log(stream)) == 1
    projection = signals.follower._durable[0]
    assert isinstance(projection, SignalLog)
    written = projection.end_batch

    def fail_after_writing(cur: Cursor) -> None:
        written(cur)
        raise RuntimeError("the database went away before the commit")

    monkeypatch.setattr(projection, "end_batch", fail_after_writing)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    with pytest.raises(RuntimeError, match="went away"):
        signals.follower.catch_up()
    monkeypatch.undo()
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.RESUME, reason="t"
    )
    rows = signals.log(stream)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    states = [signals.claims(r["set_jwt"])["events"][LIFECYCLE_CHANGE]["state"] for r in rows]
    assert states == ["active", "suspended", "active"]
