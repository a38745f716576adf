"""Rebuilding a read model from position 0 gives exactly the incrementally maintained one."""

from __future__ import annotations

from pydantic import SecretStr

from api.read_models import read_models
from ledger.application import Ledger
from ledger.domain.delegation import ActorRef
from ledger.domain.states import Operation
from ledger.domain.streams import POLL
from ledger.domain.subjects import PrincipalIdentity
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from projections.follower import LogFollower
from tests.builders import ADMIN, AGENT, OPERATOR, SUBJECT, active_mission, authority, intent
from tests.discharge_builders import CLOSED, discharge_authority
from tests.integration.test_access_requests_contract import submit_access_request
from tests.integration.test_signal_log import PEP
from tests.mandate_builders import delegable_authority, jkt, mission_with
from tests.read_model_dump import dump

KEK = SecretStr("lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA")


def _history(ledger: Ledger) -> None:
    """A little of everything: proposals in every state, lifecycles, mandates, streams."""
    ledger.create_stream(actor=PEP, aud="pep-1", receiver_config={"delivery": {"method": POLL}})
    for operation in (Operation.SUSPEND, Operation.REVOKE, Operation.COMPLETE):
        mission = active_mission(ledger)
        ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=operation, reason="t"
        )
    resumed = active_mission(ledger)
    ledger.change_lifecycle(
        actor=OPERATOR, mission_id=resumed.id, operation=Operation.SUSPEND, reason="t"
    )
    ledger.change_lifecycle(
        actor=ADMIN, mission_id=resumed.id, operation=Operation.RESUME, reason="t"
    )
    pending = ledger.submit_proposal(
        actor=AGENT,
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        intent=intent(ledger.clock.now()),
        authorization_details=authority(),
    ).value
    ledger.deny_proposal(actor=ADMIN, proposal_id=pending.id, reason="no")
    mission = mission_with(ledger, delegable_authority())
    root = ledger.issue_mandate(
        actor=AGENT, mission_id=mission.id, holder=ActorRef("agent-1", "i-1"), jkt=jkt()
    ).value
    ledger.delegate_mandate(
        actor=AGENT,
        parent_mandate_id=root.id,
        holder=ActorRef("sub", "s-1", "ai_agent"),
        jkt=jkt(),
        authorization_details=[delegable_authority()[0] | {"actions": ["invoices.read"]}],
    )
    ledger.contain(
        actor=OPERATOR,
        mission_id=mission.id,
        contained=[{"resource": "https://erp.example.com", "actions": ["invoices.write"]}],
        reason="t",
    )
    ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    discharged = mission_with(ledger, discharge_authority())
    ledger.issue_mandate(
        actor=AGENT, mission_id=discharged.id, holder=ActorRef("agent-1", "i-1"), jkt=jkt()
    )
    ledger.report_completion_event(
        actor=AGENT,
        mission_id=discharged.id,
        event_type=CLOSED,
        event_id="evt-1",
        occurred_at=ledger.clock.now(),
    )
    asked = active_mission(ledger)
    approved = ledger.approve_access_request(
        actor=ADMIN,
        approver=PrincipalIdentity(iss=ledger.issuer, sub="approver-1"),
        task_id=submit_access_request(ledger, asked, "jti-approved"),
        reason="ok",
    ).value
    ledger.use_approval(
        task_id=approved.id,
        approval_id=str(approved.approval["approval_id"]),  # type: ignore[index]
        evaluation_id="ev-1",
    )
    ledger.cancel_access_request(
        actor=PEP, task_id=submit_access_request(ledger, asked, "jti-cancelled"), reason="t"
    )


def test_every_read_model_rebuilds_to_the_same_state(
    ledger: Ledger, store_settings: Settings
) -> None:
    keyring = Keyring.open(
        store_settings.model_copy(update={"key_encryption_key": KEK}), ledger.database
    )
    keyring.ensure("ES256", ledger.clock.now())
    ledger.signer = keyring
    models = read_models(ledger, keyring, ledger.issuer)
    follower = LogFollower(ledger, durable=models.durable)
    follower.start()
    try:
        _history(ledger)
        follower.wait(ledger.head_position(), 10)
    finally:
        follower.stop()
    incremental = dump(store_settings)
    assert all(incremental[table] for table in incremental)
    for name in models.names:
        LogFollower(ledger, durable=models.durable).rebuild(name)
    assert dump(store_settings) == incremental
