"""One ledger write, one ``txn`` (SPEC 7.3): every SET a write causes — the change asked for
and everything its cascade does to Mandates, on whichever aggregate — carries the same
``txn``, and a separate write carries another (reference/standards.md 10 item 33)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.application import Ledger
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.domain.sets import write_txn
from ledger.domain.states import Operation
from ledger.domain.streams import LIFECYCLE_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from ledger.settings import Settings
from tests.builders import AGENT, APPROVER, OPERATOR, authority, intent
from tests.integration.test_signal_log import Signals
from tests.mandate_builders import HOLDER, delegable_authority, delegate, issue, mission_with


@pytest.fixture
def signals(ledger: Ledger, store_settings: Settings) -> Signals:
    return Signals(ledger, store_settings)


def caused_after(signals: Signals, stream: str, seen: int) -> list[dict[str, Any]]:
    """The claims of the stream's SETs after the first ``seen``."""
    return [signals.claims(r["set_jwt"]) for r in signals.log(stream)[seen:]]


def kinds(sets: list[dict[str, Any]]) -> list[str]:
    return [next(iter(c["events"])) for c in sets]


def tree(signals: Signals, mission: Mission) -> list[ExecutionMandate]:
    """Four Mandates: a root with a child and a grandchild, and a second root."""
    root = issue(signals.ledger, mission)
    child = delegate(signals.ledger, root)
    grandchild = delegate(signals.ledger, child, client_id="sub-sub", instance_id="s-2")
    other = issue(signals.ledger, mission, details=[delegable_authority()[1]])
    return [root, child, grandchild, other]


def test_a_mission_revocation_and_its_whole_cascade_share_one_txn(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    tree(signals, mission)
    seen = len(signals.log(stream))
    revoked = signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    ).value
    caused = caused_after(signals, stream, seen)
    assert sorted(kinds(caused)) == [LIFECYCLE_CHANGE] + [SESSION_REVOKED] * 4
    assert {c["txn"] for c in caused} == {
        write_txn(signals.ledger.issuer, mission.id, revoked.version)
    }


def test_a_separate_write_has_another_txn(signals: Signals) -> None:
    stream = signals.stream()
    first = mission_with(signals.ledger, delegable_authority())
    second = mission_with(signals.ledger, delegable_authority())
    tree(signals, first)
    tree(signals, second)
    txns = []
    for mission in (first, second):
        seen = len(signals.log(stream))
        signals.ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
        )
        txns.append({c["txn"] for c in caused_after(signals, stream, seen)})
    assert len(txns[0]) == len(txns[1]) == 1
    assert txns[0] != txns[1]


def test_a_mandate_revocation_and_its_subtree_share_one_txn(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    root, *_ = tree(signals, mission)
    seen = len(signals.log(stream))
    signals.ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    caused = caused_after(signals, stream, seen)
    assert kinds(caused) == [SESSION_REVOKED] * 3
    assert len({c["txn"] for c in caused}) == 1


def test_a_narrowing_and_its_cascade_share_one_txn(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    root, *_ = tree(signals, mission)
    seen = len(signals.log(stream))
    erp_reads = [{**delegable_authority()[0], "actions": ["invoices.read"]}]
    signals.ledger.narrow_mandate(
        actor=OPERATOR, mandate_id=root.id, authorization_details=erp_reads, reason="t"
    )
    caused = caused_after(signals, stream, seen)
    # The root narrows; its child and grandchild held invoices.write: they end.
    assert sorted(kinds(caused)) == [SESSION_REVOKED, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE]
    assert len({c["txn"] for c in caused}) == 1


def test_an_instance_revocation_shares_one_txn_across_every_mandate_it_held(
    signals: Signals,
) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    tree(signals, mission)  # both roots are held by HOLDER's instance
    seen = len(signals.log(stream))
    signals.ledger.revoke_instance(
        actor=OPERATOR, client_id=HOLDER.client_id, instance_id=str(HOLDER.instance_id), reason="t"
    )
    caused = caused_after(signals, stream, seen)
    assert kinds(caused) == [SESSION_REVOKED] * 4
    assert len({c["txn"] for c in caused}) == 1


def test_approving_an_expansion_shares_one_txn_with_the_supersession_it_cascades(
    signals: Signals,
) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    issue(signals.ledger, mission)
    expansion = signals.ledger.propose_expansion(
        actor=AGENT,
        mission_id=mission.id,
        intent=intent(signals.ledger.clock.now()),
        authorization_details=authority(),
    ).value
    seen = len(signals.log(stream))
    successor = signals.ledger.approve_proposal(actor=APPROVER, proposal_id=expansion.id).value
    caused = caused_after(signals, stream, seen)
    assert sorted(kinds(caused)) == [LIFECYCLE_CHANGE, LIFECYCLE_CHANGE, SESSION_REVOKED]
    assert {c["txn"] for c in caused} == {write_txn(signals.ledger.issuer, successor.id, 1)}


def test_each_event_of_a_write_names_the_writes_first_event(signals: Signals) -> None:
    mission = mission_with(signals.ledger, delegable_authority())
    root, *_ = tree(signals, mission)
    revoked = signals.ledger.revoke_mandate(actor=OPERATOR, mandate_id=root.id, reason="t")
    assert revoked.position is not None
    last = signals.ledger.audit_log(revoked.position - 3, 3)
    causes = {str(e.event.caused_by) for e in last}  # type: ignore[attr-defined]
    assert causes == {str({"kind": "write", "id": root.id, "version": root.version + 1})}
