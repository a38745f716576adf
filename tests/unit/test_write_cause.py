"""One write, one cause: the events of one ledger write name its first event, and the
``txn`` of their SETs follows from it (events recorded before keep what they can derive)."""

from __future__ import annotations

import dataclasses
from typing import cast

from ledger.domain.events import LedgerEvent, name_the_write, write_cause, written_by
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.domain.sets import mission_signal, txn_key, txn_of, write_txn
from ledger.domain.states import Operation
from tests.builders import OPERATOR
from tests.unit.test_discharge import ISSUER, NOW, new_mission

#: The Mandate events that raise a SET (``ledger.domain.sets.mandate_signal``).
MANDATE_SIGNAL_EVENTS = (
    ExecutionMandate.Narrowed,
    ExecutionMandate.Revoked,
    ExecutionMandate.Cascaded,
    ExecutionMandate.Expired,
)


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _names_its_write(cls: type) -> bool:
    return any(f.name == "caused_by" for f in dataclasses.fields(cls))


def test_every_event_that_raises_a_set_can_name_its_write() -> None:
    classes = _subclasses(Mission.Event) | set(MANDATE_SIGNAL_EVENTS)
    assert Mission.Approved in classes
    assert all(_names_its_write(cls) for cls in classes), [
        c.__name__ for c in classes if not _names_its_write(c)
    ]


def revoked(mission: Mission) -> list[LedgerEvent]:
    """Revoke a fresh Mission: its pending events (approval already collected)."""
    mission.collect_events()
    mission.apply_operation(Operation.REVOKE, actor=OPERATOR, now=NOW, reason="t")
    return pending(mission)


def pending(aggregate: Mission) -> list[LedgerEvent]:
    return [cast("LedgerEvent", e) for e in aggregate.pending_events]


def test_every_event_of_a_write_names_the_results_first_event() -> None:
    first, second = new_mission(), new_mission()
    revoked(first)
    revoked(second)
    name_the_write([second, first], first)
    expected = {"kind": "write", "id": first.id, "version": first.version}
    causes = [written_by(e) for e in [*pending(first), *pending(second)]]
    assert causes == [expected, expected]


def test_a_cause_already_named_is_kept() -> None:
    mission = new_mission()
    revoked(mission)
    named = {"kind": "write", "id": "msn_other", "version": 7}
    event = cast("Mission.Revoked", pending(mission)[0])
    mission.pending_events[0] = dataclasses.replace(event, caused_by=named)
    name_the_write([mission], mission)
    assert written_by(pending(mission)[0]) == named


def test_a_sets_txn_is_that_of_the_write_its_event_names() -> None:
    mission = new_mission()
    revoked(mission)
    name_the_write([mission], mission)
    signal = mission_signal(pending(mission)[0], mission)
    assert signal is not None
    assert txn_of(ISSUER, 99, signal.cause) == write_txn(ISSUER, mission.id, mission.version)


def test_an_event_recorded_before_it_named_its_write_is_its_own_cause() -> None:
    approved = cast("Mission.Approved", new_mission().collect_events()[0])
    assert written_by(approved) is None
    named = dataclasses.replace(approved, caused_by=write_cause(approved))
    assert txn_key(approved) == txn_key(named)


def test_a_discharge_recorded_before_keeps_its_completion_events_txn() -> None:
    legacy = {"kind": "discharge", "id": "msn_x", "event_id": "evt-1"}
    narrowed = ExecutionMandate.Narrowed(
        originator_id="mdt_a",
        originator_version=2,
        timestamp=NOW,
        authorization_details=[],
        cause="discharge",
        reason=None,
        actor=OPERATOR.to_json(),
        caused_by=legacy,
    )
    cascaded = ExecutionMandate.Cascaded(
        originator_id="mdt_b",
        originator_version=2,
        timestamp=NOW,
        cause=legacy,
        reason=None,
        actor=OPERATOR.to_json(),
    )
    assert txn_key(narrowed) == txn_key(cascaded) == "discharge|msn_x|evt-1"
