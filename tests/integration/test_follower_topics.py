"""The log follower reads from the store only the events some read model reads (under
metering load nearly every event is a Meter's, which none reads), and still advances every
position over the others: to the head it read before. A write of events none of its read
models reads does not wake it (in this process: the commit listeners hear the write's
topics, and it moves its positions over such a write at once when it continues the log from
where they are; from another process on PostgreSQL: the ``NOTIFY`` payload names them)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from api.console.live import MissionWatch
from ledger.application import Ledger
from ledger.application.metering import MeterWriter, Reserve
from ledger.domain.metering import Bounds, Meter, MeteredCall, meter_id
from ledger.domain.missions import Mission
from ledger.persistence.notify import payload_topics
from ledger.persistence.snapshots import StateCodec
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from projections.aggregate_tables import event_topics
from projections.boards import MissionBoard
from projections.follower import Item, LogFollower
from tests.builders import active_mission
from tests.conftest import MutableClock

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


def test_positions_advance_over_the_events_not_read(
    ledger: Ledger, store_settings: Settings, clock: MutableClock
) -> None:
    consumer = Recorder(event_topics(Mission))
    follower = LogFollower(ledger, live=[consumer])
    mission = active_mission(ledger)
    other = open_ledger(store_settings, clock=clock)  # a write of another process
    follower.start()
    try:
        _meter_events(other, mission.id)
        follower.catch_up()
        head = ledger.head_position()
        assert (follower.position, follower.core_position) == (head, head)
        assert consumer.ends[-1] == head
        assert follower.staleness() < 1.0
    finally:
        follower.stop()
        other.close()


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


# ---------------------------------------------------------------------- wake-ups

#: Long enough that no test below sees the follower's own poll.
NO_POLL = 600.0


@pytest.fixture
def mission_follower(ledger: Ledger) -> Iterator[LogFollower]:
    """A running follower whose one read model reads Missions' events, that never polls."""
    follower = LogFollower(ledger, live=[Recorder(event_topics(Mission))], poll_interval=NO_POLL)
    follower.start()
    yield follower
    follower.stop()


def _caught_up_within(follower: LogFollower, head: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if follower.position >= head:
            return True
        time.sleep(0.01)
    return follower.position >= head


def test_a_write_announces_the_topics_of_its_events(ledger: Ledger) -> None:
    mission = active_mission(ledger)
    heard: list[frozenset[str]] = []
    ledger.commit_listeners.add(lambda _positions, topics: heard.append(topics))
    _meter_events(ledger, mission.id)
    assert heard
    assert set().union(*heard) == {logged.topic for logged in ledger.history(meter_id(mission.id))}


def test_a_write_no_read_model_reads_is_passed_over_without_reading_the_log(
    ledger: Ledger, mission_follower: LogFollower, monkeypatch: pytest.MonkeyPatch
) -> None:
    mission = active_mission(ledger)
    assert _caught_up_within(mission_follower, ledger.head_position(), 5.0)
    time.sleep(0.2)  # the follower's thread is done with that write
    head_reads: list[int] = []
    head = ledger.head_position

    def counted() -> int:
        head_reads.append(1)
        return head()

    monkeypatch.setattr(ledger, "head_position", counted)
    _meter_events(ledger, mission.id)
    passed = mission_follower.position
    time.sleep(0.3)  # a wake-up would read the head
    monkeypatch.undo()
    assert passed == ledger.head_position()
    assert head_reads == []


def test_a_write_not_continuing_from_the_read_models_waits_for_a_wake_up(
    ledger: Ledger, mission_follower: LogFollower, store_settings: Settings, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    other = open_ledger(store_settings, clock=clock)  # its writes ring no bell here
    try:
        active_mission(other)
    finally:
        other.close()
    _meter_events(ledger, mission.id)
    assert not _caught_up_within(mission_follower, ledger.head_position(), 0.3)
    assert mission_follower.wait(ledger.head_position(), timeout=5.0)


def test_a_write_a_read_model_reads_wakes_the_follower(
    ledger: Ledger, mission_follower: LogFollower
) -> None:
    mission = active_mission(ledger)
    _meter_events(ledger, mission.id)
    active_mission(ledger)
    assert _caught_up_within(mission_follower, ledger.head_position(), 5.0)


def test_a_read_model_reading_every_event_is_woken_by_any_write(ledger: Ledger) -> None:
    follower = LogFollower(ledger, live=[Recorder(None)], poll_interval=NO_POLL)
    assert follower.wakes_for(METER_TOPICS)
    assert follower.wakes_for(None)  # topics not known


def test_a_write_of_unknown_topics_wakes_the_follower(ledger: Ledger) -> None:
    follower = LogFollower(ledger, live=[Recorder(event_topics(Mission))], poll_interval=NO_POLL)
    assert not follower.wakes_for(METER_TOPICS)
    assert follower.wakes_for(None)


@pytest.fixture
def pg_settings(postgres_url: str) -> Settings:
    return Settings(database_url=postgres_url, db_pool_size=2, db_max_overflow=2)


def test_the_postgres_doorbell_names_the_topics_of_the_write(
    pg_settings: Settings, clock: MutableClock
) -> None:
    ledger = open_ledger(pg_settings, clock=clock)
    try:
        mission = active_mission(ledger)
        with psycopg.connect(**pg_settings.postgres_params(), autocommit=True) as conn:
            conn.execute("LISTEN ledger_events")
            _meter_events(ledger, mission.id)
            payloads = [n.payload for n in conn.notifies(timeout=5.0, stop_after=1)]
        written = {logged.topic for logged in ledger.history(meter_id(mission.id))}
    finally:
        ledger.close()
    assert payloads
    assert payload_topics(payloads[0]) == written


def test_another_process_write_wakes_the_follower_only_for_topics_it_reads(
    pg_settings: Settings, clock: MutableClock
) -> None:
    ledger = open_ledger(pg_settings, clock=clock)
    other = open_ledger(pg_settings, clock=clock)  # commit listeners of its own
    follower = LogFollower(
        ledger,
        live=[Recorder(event_topics(Mission))],
        poll_interval=NO_POLL,
        listen_dsn=pg_settings.postgres_params(),
    )
    follower.start()
    try:
        time.sleep(0.5)  # the LISTEN connection is up
        mission = active_mission(other)
        assert _caught_up_within(follower, other.head_position(), 5.0)
        _meter_events(other, mission.id)
        assert not _caught_up_within(follower, other.head_position(), 0.3)
        active_mission(other)
        assert _caught_up_within(follower, other.head_position(), 5.0)
    finally:
        follower.stop()
        other.close()
        ledger.close()
