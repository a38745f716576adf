"""Two replicas' signal logs take turns on one store (each keeps its own cache of thawed
streams): a change to a stream applied by one is honoured by the other."""

from __future__ import annotations

from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.domain.streams import StreamStatus
from ledger.settings import Settings
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
