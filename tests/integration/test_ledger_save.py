"""``LedgerBase.save`` records the ledger's own aggregates without the library's runtime
``Protocol`` checks (about 22 µs an aggregate on CPython 3.11; ``bench.meter_writer``)."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.application import ProcessingEvent

from ledger.application import Ledger
from tests.builders import active_mission


def test_the_ledgers_aggregates_are_saved_without_the_protocol_checks(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    def checked(*_: Any, **__: Any) -> None:
        raise AssertionError("the library's collect_events (two Protocol checks) ran")

    monkeypatch.setattr(ProcessingEvent, "collect_events", checked)
    mission = active_mission(ledger)  # a Proposal saved, then the Proposal and its Mission
    history = ledger.history(mission.id)
    assert [logged.event.originator_id for logged in history] == [mission.id]
    assert ledger.get_mission(mission.id).version == mission.version
