"""ExecutionMandate invariants the aggregate keeps itself, without any store: narrowing only
removes, and a Mandate never outlives its Mission or its parent."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.domain.errors import AuthorityExceeded, Conflict
from ledger.domain.mandates import ExecutionMandate, Grant
from tests.builders import AGENT, ERP, OPERATOR, SUBJECT

_IDS = itertools.count(1)
NOW = datetime(2026, 11, 28, 12, 0, 0, 500_000, tzinfo=UTC)
MISSION_ENDS = NOW + timedelta(days=30)


def entry(*actions: str) -> dict[str, Any]:
    return {"type": "mission_resource_access", "resource": ERP, "actions": list(actions)}


def new_mandate(
    *,
    lifetime: timedelta = timedelta(minutes=15),
    mission_expires_at: datetime = MISSION_ENDS,
    parent: ExecutionMandate | None = None,
    now: datetime = NOW,
) -> ExecutionMandate:
    grant = Grant(
        mission_id="msn_x",
        issuer="https://mas.example.com",
        mission_authority_hash="sha-256:a",
        subject=SUBJECT,
        client_id="agent-1",
        holder={"client_id": "agent-1", "instance_id": "i-1"},
        cnf={"jkt": "k" * 43},
        authorization_details=[entry("invoices.read", "invoices.pay")],
        depth=0 if parent is None else parent.depth + 1,
        act={"sub": "agent-1"},
        purpose={},
        provenance={},
        parent_hash=None,
    )
    return ExecutionMandate.issue(
        mandate_id=f"mdt_{next(_IDS)}",
        grant=grant,
        lifetime=lifetime,
        mission_expires_at=mission_expires_at,
        parent=parent,
        actor=AGENT,
        now=now,
    )


# ---------------------------------------------------------------------- narrowing


def test_narrowing_to_a_subset_records_a_new_token_version() -> None:
    mandate = new_mandate()
    assert mandate.narrow(
        [entry("invoices.read")], cause="request", reason=None, actor=OPERATOR, now=NOW
    )
    assert mandate.token_version == 2
    assert mandate.authorization_details == [entry("invoices.read")]


def test_narrowing_refuses_what_the_mandate_does_not_hold_and_records_nothing() -> None:
    mandate = new_mandate()
    with pytest.raises(AuthorityExceeded) as refused:
        mandate.narrow(
            [entry("invoices.read", "invoices.delete")],
            cause="request",
            reason=None,
            actor=OPERATOR,
            now=NOW,
        )
    assert refused.value.errors[0].pointer == "/authorization_details/0"
    assert len(mandate.pending_events) == 1  # only its issuance
    assert mandate.token_version == 1


def test_narrowing_keeps_the_start_of_the_validity_window_at_issuance() -> None:
    mandate = new_mandate()
    later = NOW + timedelta(minutes=1)
    mandate.narrow(
        [entry("invoices.read")], cause="request", reason=None, actor=OPERATOR, now=later
    )
    assert mandate.not_before_ts == NOW.timestamp()


# ---------------------------------------------------------------------- expiry


def test_a_mandate_lives_its_lifetime_in_whole_seconds() -> None:
    mandate = new_mandate(lifetime=timedelta(minutes=15))
    assert mandate.expires_at == (NOW + timedelta(minutes=15)).replace(microsecond=0)


def test_a_mandate_never_outlives_its_mission() -> None:
    ends = NOW + timedelta(minutes=5)
    assert new_mandate(
        lifetime=timedelta(hours=1), mission_expires_at=ends
    ).expires_at == ends.replace(microsecond=0)


def test_a_delegated_mandate_never_outlives_its_parent() -> None:
    parent = new_mandate(lifetime=timedelta(minutes=10))
    child = new_mandate(lifetime=timedelta(hours=1), parent=parent)
    assert child.expires_at == parent.expires_at
    assert child.parent_mandate_id == parent.id


def test_no_mandate_is_issued_when_its_mission_leaves_no_time() -> None:
    with pytest.raises(Conflict, match="Mission expires too soon"):
        new_mandate(mission_expires_at=NOW + timedelta(milliseconds=400))


def test_no_mandate_is_delegated_when_its_parent_leaves_no_time() -> None:
    parent = new_mandate(lifetime=timedelta(seconds=1))
    with pytest.raises(Conflict, match="parent Mandate expires too soon"):
        new_mandate(parent=parent, now=NOW + timedelta(milliseconds=600))
