"""The reservation deadline rows a Meter save writes (``deadlines_of``): one per reservation
or lease the save leaves outstanding, a deletion per one it ends that an earlier save made,
nothing for one it both makes and ends."""

from __future__ import annotations

from ledger.application.meter_book import deadlines_of
from ledger.domain.metering import Meter
from tests.unit.test_metering import NOW, PEP, lease, meter, reserve, spend


def executed(m: Meter, evaluation_id: str) -> None:
    m.report(evaluation_id, outcome="executed", amount=None, actor=PEP, now=NOW)


def test_a_reservation_left_outstanding_gets_a_deadline_row() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    written = deadlines_of([m])
    assert [row[0] for row in written.added] == ["e1"]
    assert written.removed == ()


def test_a_reservation_made_and_ended_by_one_save_gets_no_row() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    reserve(m, "e2", spend("10.00"))
    executed(m, "e1")
    written = deadlines_of([m])
    assert [row[0] for row in written.added] == ["e2"]
    assert written.removed == ()


def test_a_reservation_ended_after_an_earlier_save_has_its_row_deleted() -> None:
    m = meter()
    reserve(m, "e1", spend("10.00"))
    m.collect_events()  # saved
    executed(m, "e1")
    written = deadlines_of([m])
    assert written.added == ()
    assert written.removed == ("e1",)


def test_a_lease_granted_and_returned_by_one_save_gets_no_row() -> None:
    m = meter()
    lease(m)
    m.return_lease("lse_1", outcome="returned", actor=PEP, now=NOW)
    written = deadlines_of([m])
    assert written.added == ()
    assert written.removed == ()
