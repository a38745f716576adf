"""A durable read model is given no transaction for a batch holding nothing it reads (metering
batches, for every read model but none), until its tracking row trails by ``TRACKING_SLACK``
positions; a follower started on a trailing row re-reads those events and skips them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ledger.application import Ledger
from ledger.application.metering import MeterWriter, Reserve
from ledger.domain.metering import Bounds, MeteredCall
from ledger.persistence.snapshots import StateCodec
from projections import follower as follower_module
from projections.boards import MissionBoard
from projections.follower import LogFollower
from tests.builders import active_mission


def _tracked(ledger: Ledger) -> int:
    row = ledger.database.fetchone(
        "SELECT position FROM projection_tracking WHERE projection = 'mission_board'"
    )
    assert row is not None
    return int(row["position"])


def _reserve(ledger: Ledger, mission_id: str, count: int) -> None:
    writer = MeterWriter(ledger)
    for n in range(count):
        writer.apply(
            [
                Reserve(
                    mission_id=mission_id,
                    bounds=Bounds(max_calls=1000),
                    call=MeteredCall(amount=None, currency=None, call_class="c"),
                    evaluation_id=f"e{n}",
                    mandate_id=None,
                    expires_at=ledger.clock.now() + timedelta(seconds=60),
                )
            ]
        )


def test_a_batch_a_read_model_reads_nothing_of_costs_it_no_transaction(ledger: Ledger) -> None:
    board = MissionBoard(StateCodec(ledger.mapper.transcoder))
    follower = LogFollower(ledger, durable=[board])
    mission = active_mission(ledger)
    follower.start()
    try:
        tracked, batches = _tracked(ledger), follower.timings["mission_board"].batches
        _reserve(ledger, mission.id, 3)
        follower.catch_up()
        assert follower.position == ledger.head_position()
        assert (_tracked(ledger), follower.timings["mission_board"].batches) == (tracked, batches)
    finally:
        follower.stop()


def test_a_trailing_tracking_row_is_written_once_it_trails_by_the_slack(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follower_module, "TRACKING_SLACK", 3)
    board = MissionBoard(StateCodec(ledger.mapper.transcoder))
    follower = LogFollower(ledger, durable=[board])
    mission = active_mission(ledger)
    follower.start()
    try:
        tracked = _tracked(ledger)
        _reserve(ledger, mission.id, 4)  # Opened + 4 Reserved: five positions
        follower.catch_up()
        assert _tracked(ledger) > tracked
        assert ledger.head_position() - _tracked(ledger) < 3
    finally:
        follower.stop()


def test_a_follower_started_on_a_trailing_row_reads_on_correctly(ledger: Ledger) -> None:
    codec = StateCodec(ledger.mapper.transcoder)
    first = LogFollower(ledger, durable=[MissionBoard(codec)])
    mission = active_mission(ledger)
    first.start()
    _reserve(ledger, mission.id, 2)
    first.catch_up()
    first.stop()
    board = MissionBoard(codec)
    second = LogFollower(ledger, durable=[board])
    second.start()
    try:
        assert _tracked(ledger) < ledger.head_position()  # trails: the Meter events
        active_mission(ledger)  # a batch the board reads, after the ones it skipped
        second.catch_up()
        assert _tracked(ledger) == ledger.head_position()
        assert board.get(ledger.database, mission.id) is not None
    finally:
        second.stop()
