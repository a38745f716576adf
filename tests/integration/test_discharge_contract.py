"""Entry discharge through the ledger (both backends): Mandates narrowed or ended by
cascade in the same write, idempotent on ``event_id``, SETs sharing one ``txn``."""

from __future__ import annotations

from datetime import datetime

import pytest

from ledger.application import Ledger
from ledger.domain.errors import NoMatchingCondition
from ledger.domain.missions import Mission
from ledger.domain.streams import LIFECYCLE_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from ledger.settings import Settings
from tests.builders import AGENT
from tests.discharge_builders import (
    CLOSED,
    INVOICES,
    JOURNAL,
    LEDGER,
    RECONCILED,
    discharge_authority,
)
from tests.integration.test_signal_log import Signals
from tests.mandate_builders import delegate, issue, mission_with


@pytest.fixture
def signals(ledger: Ledger, store_settings: Settings) -> Signals:
    return Signals(ledger, store_settings)


def report(ledger: Ledger, mission: Mission, event_type: str, event_id: str = "evt-1") -> Mission:
    return ledger.report_completion_event(
        actor=AGENT,
        mission_id=mission.id,
        event_type=event_type,
        event_id=event_id,
        occurred_at=ledger.clock.now(),
    ).value


def resources(details: list[dict[str, object]]) -> list[object]:
    return [entry["resource"] for entry in details]


def test_a_mandate_loses_only_the_discharged_entry(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    mandate = issue(ledger, mission)
    report(ledger, mission, RECONCILED)
    narrowed = ledger.get_mandate(mandate.id)
    assert resources(narrowed.authorization_details) == [JOURNAL, LEDGER]
    assert narrowed.token_version == 2
    assert narrowed.state == "active"


def test_a_mandate_holding_only_discharged_authority_ends_by_cascade(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    mandate = issue(ledger, mission, details=[discharge_authority()[0]])
    report(ledger, mission, RECONCILED)
    assert ledger.get_mandate(mandate.id).state == "cascaded"


def test_delegated_mandates_narrow_and_end_with_the_discharge(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    root = issue(ledger, mission)
    child = delegate(ledger, root, details=[discharge_authority()[1]])
    report(ledger, mission, CLOSED)
    assert resources(ledger.get_mandate(root.id).authorization_details) == [INVOICES]
    assert ledger.get_mandate(child.id).state == "cascaded"


def test_a_new_mandate_cannot_carry_discharged_authority(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    report(ledger, mission, RECONCILED)
    mandate = issue(ledger, mission)
    assert resources(mandate.authorization_details) == [JOURNAL, LEDGER]


def test_a_repeated_event_id_writes_nothing(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    issue(ledger, mission)
    report(ledger, mission, RECONCILED)
    head = ledger.head_position()
    written = ledger.report_completion_event(
        actor=AGENT,
        mission_id=mission.id,
        event_type=RECONCILED,
        event_id="evt-1",
        occurred_at=datetime.fromisoformat("2026-01-01T00:00:00+00:00"),
    )
    assert ledger.head_position() == head
    assert written.value.version == 2


def test_an_unmatched_event_type_writes_nothing(ledger: Ledger) -> None:
    mission = mission_with(ledger, discharge_authority())
    head = ledger.head_position()
    with pytest.raises(NoMatchingCondition):
        report(ledger, mission, "https://events.example.com/unrelated")
    assert ledger.head_position() == head


def test_every_set_of_one_discharge_shares_one_txn(signals: Signals) -> None:
    ledger = signals.ledger
    stream = signals.stream()
    mission = mission_with(ledger, discharge_authority())
    issue(ledger, mission)
    issue(ledger, mission, details=[discharge_authority()[2]])
    before = len(signals.log(stream))
    report(ledger, mission, CLOSED)
    caused = [signals.claims(r["set_jwt"]) for r in signals.log(stream)[before:]]
    kinds = sorted(next(iter(c["events"])) for c in caused)
    assert kinds == sorted(
        [LIFECYCLE_CHANGE, LIFECYCLE_CHANGE, TOKEN_CLAIMS_CHANGE, SESSION_REVOKED]
    )
    assert len({c["txn"] for c in caused}) == 1


def test_the_discharge_lifecycle_change_says_authority_changed(signals: Signals) -> None:
    ledger = signals.ledger
    stream = signals.stream()
    mission = mission_with(ledger, discharge_authority())
    report(ledger, mission, RECONCILED)
    event = signals.claims(signals.log(stream)[-1]["set_jwt"])["events"][LIFECYCLE_CHANGE]
    assert event["authority_changed"] is True
    assert event["state"] == event["prior_state"] == "active"
    assert event["version"] == 2


def test_separate_discharges_have_separate_txns(signals: Signals) -> None:
    ledger = signals.ledger
    stream = signals.stream()
    mission = mission_with(ledger, discharge_authority())
    report(ledger, mission, RECONCILED, event_id="evt-1")
    report(ledger, mission, CLOSED, event_id="evt-2")
    txns = [signals.claims(r["set_jwt"])["txn"] for r in signals.log(stream)[1:]]
    assert len(txns) == 3
    assert txns[0] != txns[1] == txns[2]
