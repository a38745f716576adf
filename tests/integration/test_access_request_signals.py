"""Access-request task changes as ``access-request-change`` SETs (SPEC 7.1 "Signals"), on
streams that request that event type only (both backends)."""

from __future__ import annotations

import pytest

from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.streams import ACCESS_REQUEST_CHANGE, LIFECYCLE_CHANGE
from ledger.domain.subjects import PrincipalIdentity
from ledger.settings import Settings
from tests.builders import active_mission
from tests.integration.test_access_requests_contract import PEP, submit_access_request
from tests.integration.test_signal_log import Signals

APPROVER = Actor(type="api_key", name="approver-1", role="approver")


@pytest.fixture
def signals(ledger: Ledger, store_settings: Settings) -> Signals:
    return Signals(ledger, store_settings)


def _changes(signals: Signals, stream: str) -> list[dict[str, object]]:
    return [
        signals.claims(str(row["set_jwt"]))["events"][ACCESS_REQUEST_CHANGE]
        for row in signals.log(stream)
        if row["event_type"] == ACCESS_REQUEST_CHANGE
    ]


def test_each_task_status_change_is_an_access_request_change(signals: Signals) -> None:
    ledger = signals.ledger
    ledger.signer = signals.keyring
    stream = signals.stream(events_requested=[ACCESS_REQUEST_CHANGE])
    mission = active_mission(ledger)
    approved = submit_access_request(ledger, mission, "jti-a")
    written = ledger.approve_access_request(
        actor=APPROVER,
        approver=PrincipalIdentity(iss=ledger.issuer, sub="approver-1"),
        task_id=approved,
        reason=None,
        max_uses=2,
    )
    approval_id = written.value.approval["approval_id"]  # type: ignore[index]
    ledger.use_approval(task_id=approved, approval_id=approval_id, evaluation_id="e1")
    cancelled = submit_access_request(ledger, mission, "jti-c")
    ledger.cancel_access_request(actor=PEP, task_id=cancelled, reason=None)
    assert _changes(signals, stream) == [
        {"task_id": approved, "status": "pending"},
        {"task_id": approved, "status": "approved", "approval_id": approval_id},
        {"task_id": cancelled, "status": "pending"},
        {"task_id": cancelled, "status": "cancelled"},
    ]


def test_a_stream_that_does_not_request_it_gets_no_access_request_change(
    signals: Signals,
) -> None:
    stream = signals.stream()
    submit_access_request(signals.ledger, active_mission(signals.ledger), "jti-d")
    kinds = [row["event_type"] for row in signals.log(stream)]
    assert kinds == [LIFECYCLE_CHANGE]  # the Mission's activation, nothing for the task
