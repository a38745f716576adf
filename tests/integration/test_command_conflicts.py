"""A command that loses a race is run again on fresh state, without throwing away what the
repository knows (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from tests.builders import OPERATOR, active_mission
from tests.conftest import MutableClock


@pytest.fixture
def other(store_settings: Settings, clock: MutableClock) -> Iterator[Ledger]:
    """Another process's ledger on the same store."""
    app = open_ledger(store_settings, clock=clock)
    yield app
    app.close()


def test_a_command_that_lost_a_race_does_not_replay_the_aggregates_whole_history(
    ledger: Ledger, other: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    mission = active_mission(ledger)
    ledger.get_mission(mission.id)  # the repository knows it (a read)
    other.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="there"
    )
    reads: list[dict[str, Any]] = []
    store_get = ledger.repository.event_store.get

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs)
        return store_get(*args, **kwargs)

    monkeypatch.setattr(ledger.repository.event_store, "get", counted)
    # This ledger's command still sees the Mission active (its copy from before): its
    # revocation conflicts with the suspension, and runs again on the current state.
    written = ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="here"
    )
    assert written.value.version == 3
    assert written.value.state == "revoked"
    replays = [r for r in reads if r.get("originator_id") == mission.id and r.get("gt") is None]
    assert replays == []  # brought up to date from the version it knew, not from the start
    assert ledger.get_mission(mission.id).version == 3
