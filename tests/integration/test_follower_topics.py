"""The log follower reads from the store only the events some read model reads (under
metering load nearly every event is a Meter's, which none reads), and still advances every
position over the others: to the head it read before."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from api.console.live import MissionWatch
from ledger.application import Ledger
from ledger.application.metering import MeterWriter, Reserve
from ledger.domain.metering import Bounds, Meter, MeteredCall
from ledger.domain.missions import Mission
from ledger.persistence.snapshots import StateCodec
from projections.aggregate_tables import event_topics
from projections.boards import MissionBoard
from projections.follower import Item, LogFollower
from tests.builders import active_mission

METER_TOPICS = event_topics(Meter)


class Recorder:
    """A live read model that keeps what it is given."""

    def __init__(self, topics: frozenset[str] | None) -> None:
        self.topics = topics
        self.applied: list[str] = []
        self.ends: list[int] = []

    def bootstrap(self, ledger: Ledger) -> int:
        return ledger.head_position()

    def apply(self, item: Item) -> None:
        self.applied.append(item.topic)

    def end_batch(self, end: int) -> None:
        self.ends.append(end)


def _meter_events(ledger: Ledger, mission_id: str) -> None:
    MeterWriter(ledger).apply(
        [
            Reserve(
                mission_id=mission_id,
                bounds=Bounds(max_calls=1000),
                call=MeteredCall(amount=None, currency=None, call_class=None),
                evaluation_id=f"e{n}",
                mandate_id=None,
                expires_at=ledger.clock.now() + timedelta(seconds=60),
            )
            for n in range(3)
        ]
    )


@pytest.fixture
def read_topics(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topics of every event the follower reads from the store."""
    seen: list[str] = []
    select = ledger.recorder.select_notifications

    def spy(*args: Any, **kwargs: Any) -> Sequence[Any]:
        notifications = select(*args, **kwargs)
        seen.extend(n.topic for n in notifications)
        return notifications

    monkeypatch.setattr(ledger.recorder, "select_notifications", spy)
    return seen


def test_events_no_read_model_reads_are_not_read_from_the_store(
    ledger: Ledger, read_topics: list[str]
) -> None:
    board = MissionBoard(StateCodec(ledger.mapper.transcoder))
    consumer = Recorder(event_topics(Mission))
    follower = LogFollower(ledger, durable=[board], live=[consumer])
    mission = active_mission(ledger)
    follower.start()
    try:
        _meter_events(ledger, mission.id)
        follower.catch_up()
    finally:
        follower.stop()
    assert read_topics
    assert not METER_TOPICS & set(read_topics)
    assert not METER_TOPICS & set(consumer.applied)


def test_positions_advance_over_the_events_not_read(ledger: Ledger) -> None:
    consumer = Recorder(event_topics(Mission))
    follower = LogFollower(ledger, live=[consumer])
    mission = active_mission(ledger)
    follower.start()
    try:
        _meter_events(ledger, mission.id)
        follower.catch_up()
        head = ledger.head_position()
        assert (follower.position, follower.core_position) == (head, head)
        assert consumer.ends[-1] == head
        assert follower.staleness() < 1.0
    finally:
        follower.stop()


def test_a_live_read_model_without_topics_is_given_every_event(
    ledger: Ledger, read_topics: list[str]
) -> None:
    consumer = Recorder(None)
    follower = LogFollower(ledger, live=[consumer])
    mission = active_mission(ledger)
    follower.start()
    try:
        _meter_events(ledger, mission.id)
        follower.catch_up()
    finally:
        follower.stop()
    assert METER_TOPICS & set(read_topics)
    assert METER_TOPICS & set(consumer.applied)


def test_a_watched_mission_page_makes_the_follower_read_every_event() -> None:
    watch = MissionWatch()
    assert watch.topics == frozenset()
    with watch.watching("msn_1"):
        assert watch.topics is None
    assert watch.topics == frozenset()
