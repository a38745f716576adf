"""Metering through the ledger (both backends): reservations are durable and visible to every
replica, a group of operations is one transaction, concurrent writers on two replicas never
take a Meter past its bound, and expiry releases each reservation exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from ledger.application import Ledger
from ledger.application.metering import Expire, MeterWriter, Report, Reported, Reserve
from ledger.domain.actors import Actor
from ledger.domain.errors import BudgetExceeded, Conflict, NotFound, Unavailable
from ledger.domain.metering import Bounds, Meter, MeteredCall, Usage, format_units, meter_id
from ledger.persistence.reservations import due_meters
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from tests.builders import active_mission
from tests.conftest import MutableClock

PEP = Actor(type="api_key", name="pep-1", role="pep")
BOUNDS = Bounds(budget="100.00", currency="USD", max_calls=50)


def reserve(
    mission_id: str, evaluation_id: str, amount: str, *, clock: MutableClock, ttl: int = 300
) -> Reserve:
    return Reserve(
        mission_id=mission_id,
        bounds=BOUNDS,
        call=MeteredCall(amount=amount, currency="USD", call_class=None),
        evaluation_id=evaluation_id,
        mandate_id=None,
        expires_at=clock.now() + timedelta(seconds=ttl),
    )


def executed(mission_id: str, evaluation_id: str, amount: str | None = None) -> Report:
    return Report(
        mission_id=mission_id,
        evaluation_id=evaluation_id,
        outcome="executed",
        amount=amount,
        actor=PEP,
    )


@pytest.fixture
def writer(ledger: Ledger) -> Iterator[MeterWriter]:
    with MeterWriter(ledger) as started:
        yield started


@pytest.fixture
def replica(store_settings: Settings, clock: MutableClock) -> Iterator[Ledger]:
    """A second Ledger on the same store: another replica's write side."""
    other = open_ledger(store_settings, clock=clock)
    yield other
    other.close()


def usage_of(ledger: Ledger, mission_id: str) -> Usage:
    """The Meter's counters as the store holds them (read through ``ledger``: any replica)."""
    meter = ledger.repository.get(meter_id(mission_id))
    assert isinstance(meter, Meter)
    return meter.usage()


def meter_events(ledger: Ledger, mission_id: str) -> list[Any]:
    return [logged.event for logged in ledger.history(meter_id(mission_id))]


def test_a_reservation_is_durable_and_read_by_any_replica(
    ledger: Ledger, writer: MeterWriter, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer.reserve(reserve(mission.id, "e1", "30.00", clock=clock))
    usage = usage_of(replica, mission.id)
    assert (usage.reserved, usage.calls) == (30 * 10**18, 1)


def test_a_report_reaching_another_replica_commits_the_reservation(
    ledger: Ledger, writer: MeterWriter, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    with MeterWriter(replica) as other:
        other.reserve(reserve(mission.id, "warm", "1.00", clock=clock))  # B holds the Meter
        writer.reserve(reserve(mission.id, "e1", "30.00", clock=clock))  # made on A
        reported = other.report(executed(mission.id, "e1", "12.50"))
    assert reported.settlement.amount == "12.50"
    assert format_units(usage_of(ledger, mission.id).spent, 2) == "12.50"


def test_an_unknown_reservation_is_not_found_on_any_replica(
    ledger: Ledger, writer: MeterWriter, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer.reserve(reserve(mission.id, "e1", "1.00", clock=clock))
    with pytest.raises(NotFound):
        writer.report(executed(mission.id, "e2"))
    with pytest.raises(NotFound):
        writer.report(executed("msn_unknown", "e1"))


def test_operations_submitted_together_are_answered_in_order_each_on_its_own(
    ledger: Ledger, writer: MeterWriter, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer.reserve(reserve(mission.id, "e1", "1.00", clock=clock))
    writer.reserve(reserve(mission.id, "e2", "2.00", clock=clock))
    outcomes = writer.submit_many(
        [executed(mission.id, "e1"), executed(mission.id, "e9"), executed(mission.id, "e2")]
    ).result(10)
    assert isinstance(outcomes[0], Reported)
    assert isinstance(outcomes[1], NotFound)
    assert isinstance(outcomes[2], Reported)
    assert format_units(outcomes[0].settlement.units, 2) == "1.00"  # e1's, in its place
    assert format_units(outcomes[2].settlement.units, 2) == "2.00"
    assert format_units(usage_of(ledger, mission.id).spent, 2) == "3.00"


def test_operations_submitted_together_each_hear_that_their_group_failed(
    ledger: Ledger, writer: MeterWriter, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mission = active_mission(ledger)

    def unreachable(*_: object, **__: object) -> None:
        raise OSError("the store is unreachable")

    monkeypatch.setattr(ledger, "save", unreachable)
    outcomes = writer.submit_many(
        [
            reserve(mission.id, "e1", "1.00", clock=clock),
            reserve(mission.id, "e2", "1.00", clock=clock),
        ]
    ).result(10)
    assert [type(outcome) for outcome in outcomes] == [Unavailable, Unavailable]
    monkeypatch.undo()
    assert meter_events(ledger, mission.id) == []


def test_a_caller_that_gave_up_does_not_stop_the_writer(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)  # started below, with both waiting
    abandoned = writer.submit(reserve(mission.id, "e1", "1.00", clock=clock))
    abandoned_batch = writer.submit_many([reserve(mission.id, "e2", "1.00", clock=clock)])
    waiting = writer.submit(reserve(mission.id, "e3", "1.00", clock=clock))
    assert abandoned.cancel()  # as a cancelled request does (asyncio.wrap_future)
    assert abandoned_batch.cancel()
    with writer:
        assert waiting.result(10) is None
        writer.reserve(reserve(mission.id, "e4", "1.00", clock=clock))  # a later group too
    assert format_units(usage_of(ledger, mission.id).reserved, 2) == "4.00"


def test_operations_submitted_together_to_a_stopped_writer_are_each_refused(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger).start()
    writer.stop()
    outcomes = writer.submit_many(
        [executed(mission.id, "e1"), reserve(mission.id, "e2", "1.00", clock=clock)]
    ).result(10)
    assert [type(outcome) for outcome in outcomes] == [Conflict, Conflict]
    assert meter_events(ledger, mission.id) == []


def test_the_backlog_counts_and_ages_what_waits_for_the_writer(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)  # not started yet: what is submitted waits
    assert writer.backlog() == (0, 0.0)
    waiting = writer.submit_many(
        [reserve(mission.id, "e1", "1.00", clock=clock), executed(mission.id, "e1")]
    )
    queued_for = time.monotonic()
    time.sleep(0.05)
    waited = time.monotonic() - queued_for  # the backlog's oldest has waited at least this
    count, age = writer.backlog()
    assert count == 2
    assert age >= waited >= 0.05
    with writer:
        assert [type(o) for o in waiting.result(10)] == [type(None), Reported]
        assert writer.backlog() == (0, 0.0)


def test_a_group_of_operations_is_saved_in_one_transaction(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission, other = active_mission(ledger), active_mission(ledger)
    commits: list[int] = []
    ledger.commit_listeners.add(lambda positions, _topics: commits.append(len(positions)))
    writer = MeterWriter(ledger)  # not started: the group is applied here, in this thread
    outcomes = writer.apply(
        [
            reserve(mission.id, "a1", "60", clock=clock),
            reserve(other.id, "b1", "10", clock=clock),
            reserve(mission.id, "a2", "41", clock=clock),  # refused: 60 + 41 > 100
            reserve(mission.id, "a3", "40", clock=clock),
        ]
    )
    assert [outcomes[0], outcomes[1], outcomes[3]] == [None, None, None]
    assert isinstance(outcomes[2], BudgetExceeded)
    assert commits == [5]  # two Meters opened, three reservations: one write
    assert format_units(usage_of(ledger, mission.id).remaining or 0) == "0"


def test_the_usage_reports_of_a_group_are_one_event_per_meter(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission, other = active_mission(ledger), active_mission(ledger)
    writer = MeterWriter(ledger)  # not started: the groups are applied here
    writer.apply(
        [
            reserve(m.id, f"{m.id}-{n}", "10", clock=clock)
            for m in (mission, other)
            for n in range(3)
        ]
    )
    outcomes = writer.apply(
        [executed(m.id, f"{m.id}-{n}", "1") for n in range(3) for m in (mission, other)]
    )
    assert all(isinstance(o, Reported) and not o.replayed for o in outcomes)
    for m in (mission, other):
        last = meter_events(ledger, m.id)[-1]
        assert isinstance(last, Meter.UsageReported)
        assert [r["evaluation_id"] for r in last.reports] == [f"{m.id}-{n}" for n in range(3)]
        assert format_units(usage_of(ledger, m.id).spent, 2) == "3.00"


def test_an_operation_after_a_report_in_its_group_sees_what_the_report_freed(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)
    writer.apply([reserve(mission.id, "e1", "100", clock=clock)])  # the whole budget
    aborted = Report(
        mission_id=mission.id, evaluation_id="e1", outcome="aborted", amount=None, actor=PEP
    )
    outcomes = writer.apply([aborted, reserve(mission.id, "e2", "100", clock=clock)])
    assert isinstance(outcomes[0], Reported)
    assert outcomes[1] is None  # reserved: the abort before it released the budget
    kinds = [type(e).__name__ for e in meter_events(ledger, mission.id)]
    assert kinds[-2:] == ["UsageReported", "Reserved"]


def test_an_operation_that_fails_does_not_fail_the_others_of_its_group(
    ledger: Ledger, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)  # not started: the groups are applied here
    writer.apply([reserve(mission.id, e, "10", clock=clock) for e in ("a1", "bad", "a2")])
    reported = Meter._reported  # one report's part of ``Meter.report_many``

    def faulty(meter: Meter, report: Any, now: Any) -> Any:
        if report[0] == "bad":
            raise ValueError("a fault in this operation alone")
        return reported(meter, report, now)

    monkeypatch.setattr(Meter, "_reported", faulty)
    outcomes = writer.apply(
        [executed(mission.id, "a1", "4"), executed(mission.id, "bad"), executed(mission.id, "a2")]
    )
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "Reported",
        "Unavailable",
        "Reported",
    ]
    assert format_units(usage_of(ledger, mission.id).spent, 2) == "14.00"  # a1 and a2 only


def test_two_replicas_reserving_at_once_never_exceed_the_bound(
    ledger: Ledger, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    refused: list[int] = []
    with MeterWriter(ledger) as a, MeterWriter(replica) as b:

        def spend(writer: MeterWriter, name: str) -> None:
            for n in range(30):
                try:
                    writer.reserve(reserve(mission.id, f"{name}{n}", "3.00", clock=clock))
                except BudgetExceeded:
                    refused.append(n)

        threads = [
            threading.Thread(target=spend, args=(w, name))
            for w, name in ((a, "a"), (b, "b"), (a, "c"), (b, "d"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    reserved = [e for e in meter_events(ledger, mission.id) if isinstance(e, Meter.Reserved)]
    assert len(reserved) == 33  # floor(100 / 3)
    assert len(refused) == 120 - 33
    assert sum(Decimal(e.amount) for e in reserved) <= Decimal(100)


def test_expiry_releases_each_reservation_once_across_replicas(
    ledger: Ledger, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    with MeterWriter(ledger) as a, MeterWriter(replica) as b:
        a.reserve(reserve(mission.id, "e1", "10", ttl=5, clock=clock))
        b.reserve(reserve(mission.id, "e2", "10", ttl=5, clock=clock))
        clock.advance(seconds=5)
        released = [a.submit(Expire(mission.id)), b.submit(Expire(mission.id))]
        counts = [f.result(10) for f in released]
    events = [e for e in meter_events(ledger, mission.id) if isinstance(e, Meter.Released)]
    assert sorted(e.evaluation_id for e in events) == ["e1", "e2"]
    assert sorted(counts) == [0, 2]  # type: ignore[type-var]  # one writer releases both
    assert {e.outcome for e in events} == {"expired"}


def test_the_deadlines_name_the_meters_with_a_reservation_due(
    ledger: Ledger, writer: MeterWriter, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer.reserve(reserve(mission.id, "e1", "10", ttl=60, clock=clock))
    writer.reserve(reserve(mission.id, "e2", "10", ttl=60, clock=clock))
    writer.report(executed(mission.id, "e2"))
    assert due_meters(ledger.database, clock.now()) == []
    assert due_meters(ledger.database, clock.now() + timedelta(seconds=60)) == [mission.id]
    clock.advance(seconds=60)
    assert writer.expire(mission.id) == 1
    assert due_meters(ledger.database, clock.now()) == []


def test_a_deadline_exists_exactly_when_its_reservation_committed(
    ledger: Ledger, clock: MutableClock
) -> None:
    """A group that loses its race writes no deadline either (same transaction)."""
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)
    writer.apply([reserve(mission.id, "e1", "10", ttl=60, clock=clock)])
    stale = MeterWriter(ledger)
    stale.apply([reserve(mission.id, "e0", "1", ttl=60, clock=clock)])  # another replica
    writer.apply([reserve(mission.id, "e2", "10", ttl=60, clock=clock)])  # conflicts, retries
    assert writer.conflicts == 1
    later = clock.now() + timedelta(seconds=60)
    rows = ledger.database.fetchall(
        "SELECT evaluation_id FROM reservation_deadlines ORDER BY evaluation_id"
    )
    assert [r["evaluation_id"] for r in rows] == ["e0", "e1", "e2"]
    assert due_meters(ledger.database, later) == [mission.id]


def deadline_rows(ledger: Ledger) -> list[str]:
    rows = ledger.database.fetchall(
        "SELECT evaluation_id FROM reservation_deadlines ORDER BY evaluation_id"
    )
    return [r["evaluation_id"] for r in rows]


def test_a_reservation_made_and_reported_by_one_group_leaves_no_deadline(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    writer = MeterWriter(ledger)
    outcomes = writer.apply(
        [
            reserve(mission.id, "e1", "10", clock=clock),
            reserve(mission.id, "e2", "10", clock=clock),
            executed(mission.id, "e1", "4"),
        ]
    )
    assert isinstance(outcomes[2], Reported)
    assert deadline_rows(ledger) == ["e2"]  # e1 ended in the same save: no row
    kinds = [type(e).__name__ for e in meter_events(ledger, mission.id)]
    assert kinds == ["Opened", "Reserved", "Reserved", "UsageReported"]  # events all saved
    writer.apply([executed(mission.id, "e2")])  # ended by a later save: its row deleted
    assert deadline_rows(ledger) == []


def test_a_lease_granted_and_returned_by_one_group_leaves_no_deadline(
    ledger: Ledger, clock: MutableClock
) -> None:
    """The second permit does not fit what is left of the first lease: the group returns
    that lease and grants another, in the same save."""
    mission = active_mission(ledger)
    writer = MeterWriter(ledger, lease_seconds=30)
    writer.apply(
        [
            reserve(mission.id, "e1", "10", clock=clock),
            reserve(mission.id, "e2", "10", clock=clock),
        ]
    )
    events = meter_events(ledger, mission.id)
    granted = [e.lease_id for e in events if isinstance(e, Meter.LeaseGranted)]
    returned = [e.lease_id for e in events if isinstance(e, Meter.LeaseReturned)]
    assert len(granted) == 2
    assert returned == granted[:1]
    assert deadline_rows(ledger) == sorted(["e1", "e2", granted[1]])


def test_a_replica_refuses_only_on_the_stores_current_state(
    ledger: Ledger, replica: Ledger, clock: MutableClock
) -> None:
    """Budget released through one replica is spendable through the other at once, though
    the other's copy of the Meter still shows it reserved."""
    mission = active_mission(ledger)
    with MeterWriter(ledger) as a, MeterWriter(replica) as b:
        b.reserve(reserve(mission.id, "e1", "100.00", clock=clock))
        a.report(
            Report(
                mission_id=mission.id,
                evaluation_id="e1",
                outcome="aborted",
                amount=None,
                actor=PEP,
            )
        )
        b.reserve(reserve(mission.id, "e2", "100.00", clock=clock))
    assert usage_of(ledger, mission.id).reserved == 100 * 10**18


# ---------------------------------------------------------------------- budget leases


def test_permits_drawn_from_a_lease_are_recorded_and_reported_on_another_replica(
    ledger: Ledger, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    with MeterWriter(ledger, lease_seconds=30) as holder, MeterWriter(replica) as other:
        holder.reserve(reserve(mission.id, "e1", "10.00", clock=clock))  # takes a lease
        drawn = holder.draw(
            mission_id=mission.id,
            call=MeteredCall(amount="2.00", currency="USD", call_class=None),
            evaluation_id="e2",
            mandate_id=None,
            expires_at=clock.now() + timedelta(seconds=300),
            now=clock.now(),
        )
        assert drawn  # answered from memory
        holder.expire(mission.id)  # any operation records the draws made before it
        reported = other.report(executed(mission.id, "e2", "1.50"))
    assert reported.settlement.amount == "1.50"
    kinds = [type(e).__name__ for e in meter_events(replica, mission.id)]
    assert kinds[:4] == ["Opened", "LeaseGranted", "Reserved", "LeaseDrawn"]
    assert kinds[-1] == "LeaseReturned"  # returned when the holder stopped


def test_nothing_is_drawn_while_the_oldest_unrecorded_draw_is_too_old(
    ledger: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    # Not started: nothing records the draws. A 3 s lease is used until 1 s before its
    # expiry; draws stop once the oldest unrecorded one is a quarter of that (0.25 s) old.
    stalled = MeterWriter(ledger, lease_seconds=3)
    stalled.apply([reserve(mission.id, "e1", "0.01", clock=clock)])  # a lease of 12.50

    def draw(evaluation_id: str) -> bool:
        return stalled.draw(
            mission_id=mission.id,
            call=MeteredCall(amount="0.01", currency="USD", call_class=None),
            evaluation_id=evaluation_id,
            mandate_id=None,
            expires_at=clock.now() + timedelta(seconds=300),
            now=clock.now(),
        )

    assert draw("e2")
    assert draw("e3")  # at once: the backlog is young
    time.sleep(0.3)
    assert not draw("e4")  # the permit must take the durable way
    with stalled:  # the writer runs: its next group records the draws waiting
        deadline = time.monotonic() + 10
        while stalled.backlog()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert draw("e5")


def test_a_crashed_holders_lease_expires_once_whichever_replica_gets_there(
    ledger: Ledger, replica: Ledger, clock: MutableClock
) -> None:
    mission = active_mission(ledger)
    crashed = MeterWriter(ledger, lease_seconds=30)  # never started, never stopped
    crashed.apply([reserve(mission.id, "e1", "10.00", clock=clock)])
    assert usage_of(replica, mission.id).leased > 0
    clock.advance(seconds=31)
    assert due_meters(replica.database, clock.now()) == [mission.id]
    with MeterWriter(ledger) as a, MeterWriter(replica) as b:
        a.expire(mission.id)
        b.expire(mission.id)
    returned = [e for e in meter_events(ledger, mission.id) if isinstance(e, Meter.LeaseReturned)]
    assert [e.outcome for e in returned] == ["expired"]
    usage = usage_of(replica, mission.id)
    assert (usage.leased, usage.reserved) == (0, 10 * 10**18)  # the reservation stays
