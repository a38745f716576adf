"""Property: no delegation chain ever yields authority outside its parent or the Mission's
Effective Authority Set, and no delegated expiry exceeds its parent's.

Random Authority Sets (resources, match modes, action families, constraints, delegation
policies) and random chains of delegation requests (some narrower, some wider, some
deeper than allowed) go through the real application on the embedded store; whatever the
service accepts must satisfy the invariants, and whatever it refuses must write nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.application import Ledger
from ledger.domain.authority import entry_within, parse_authority_set
from ledger.domain.delegation import ActorRef
from ledger.domain.errors import LedgerError
from ledger.domain.mandates import ExecutionMandate
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from tests.builders import AGENT, APPROVER, SUBJECT
from tests.conftest import T0, MutableClock
from tests.mandate_builders import jkt

RESOURCES = ["https://a.example/x", "https://a.example/x/y", "https://b.example/z"]
ACTIONS = ["r.read", "r.write", "r.*", "s.list"]
PROFILES = ["ai_agent", "tool"]


@st.composite
def entries(draw: st.DrawFn, *, allow_delegation: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": draw(st.sampled_from(RESOURCES)),
        "actions": draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=3, unique=True)),
    }
    if draw(st.booleans()):
        entry["resource_match"] = "prefix"
    constraints: dict[str, Any] = {}
    if draw(st.booleans()):
        amount = draw(st.integers(min_value=1, max_value=1000))
        constraints["max_amount"] = {"amount": f"{amount}.00", "currency": "USD"}
    if draw(st.booleans()):
        constraints["allowed_tools"] = draw(
            st.lists(st.sampled_from(["t1", "t2", "t3"]), min_size=1, max_size=3, unique=True)
        )
    if constraints:
        entry["constraints"] = constraints
    if allow_delegation and draw(st.booleans()):
        policy: dict[str, Any] = {"max_depth": draw(st.integers(min_value=0, max_value=3))}
        if draw(st.booleans()):
            policy["allowed_delegates"] = [{"sub_profile": draw(st.sampled_from(PROFILES))}]
        entry["delegation"] = policy
    return entry


steps = st.lists(
    st.tuples(
        st.one_of(st.none(), st.lists(entries(), min_size=1, max_size=2)),
        st.sampled_from(PROFILES),
        st.integers(min_value=1, max_value=86_400),
    ),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def property_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    data: Path = tmp_path_factory.mktemp("props")
    ledger = open_ledger(Settings(data_dir=data), clock=MutableClock(T0))
    yield ledger
    ledger.close()


def _within(child: ExecutionMandate, ceiling: list[dict[str, Any]]) -> bool:
    ceilings = parse_authority_set(ceiling)
    return all(any(entry_within(entry, c) is None for c in ceilings) for entry in child.entries())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(authority=st.lists(entries(), min_size=1, max_size=3), chain=steps)
def test_no_delegation_chain_escapes_its_parent_or_the_mission(
    property_ledger: Ledger, authority: list[dict[str, Any]], chain: list[Any]
) -> None:
    ledger = property_ledger
    now = ledger.clock.now()
    proposal = ledger.submit_proposal(
        actor=AGENT,
        client_id="agent-1",
        instance_id=None,
        subject=SUBJECT,
        intent={
            "goal": "property",
            "resources": ["https://a.example", "https://b.example"],
            "expires_at": "2027-06-01T00:00:00Z",
        },
        authorization_details=authority,
    ).value
    mission = ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id).value
    effective = mission.effective_authority()
    parent = ledger.issue_mandate(
        actor=AGENT,
        mission_id=mission.id,
        holder=ActorRef(client_id="agent-1", instance_id="i"),
        jkt=jkt(),
        ttl_seconds=3600,
    ).value
    for index, (requested, profile, ttl) in enumerate(chain):
        head = ledger.head_position()
        try:
            child = ledger.delegate_mandate(
                actor=AGENT,
                parent_mandate_id=parent.id,
                holder=ActorRef(client_id=f"sub-{index}", sub_profile=profile),
                jkt=jkt(),
                authorization_details=requested,
                ttl_seconds=ttl,
            ).value
        except LedgerError as refusal:
            event(f"refused: {type(refusal).__name__}")
            assert ledger.head_position() == head  # a refusal writes nothing
            continue
        event(f"delegated at depth {child.depth}")
        assert _within(child, parent.authorization_details)
        assert _within(child, effective)
        assert child.expires_at <= parent.expires_at
        assert child.depth == parent.depth + 1
        assert now <= child.expires_at
        parent = child
