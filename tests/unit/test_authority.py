"""Authority Set entries: strict parsing, the subset rule, coverage and containment."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ledger.domain.authority import (
    AuthorityEntry,
    ContainedCapability,
    authority_json,
    contained_covers,
    entry_covers,
    entry_within,
    parse_authority_set,
    parse_containment,
    set_within,
)
from ledger.domain.canonical import anchor, entry_digest
from ledger.domain.errors import AuthorityExceeded, InvalidRequest
from tests.vectors import load_mission_vector

ERP = "https://erp.example.com"
P = "/authorization_details"


def entry(**members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": ERP,
        "actions": ["invoices.read"],
    }
    base.update(members)
    return {key: value for key, value in base.items() if value is not None}


def one(**members: Any) -> AuthorityEntry:
    return parse_authority_set([entry(**members)])[0]


def rejected_at(value: object, **kwargs: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_authority_set(value, **kwargs)
    assert not isinstance(caught.value, AuthorityExceeded)
    return caught.value.errors[0].pointer


def exceeded(candidates: list[dict[str, Any]], ceilings: list[dict[str, Any]]) -> AuthorityExceeded:
    with pytest.raises(AuthorityExceeded) as caught:
        set_within(parse_authority_set(candidates), parse_authority_set(ceilings))
    return caught.value


DELEGATION: dict[str, Any] = {
    "max_depth": 2,
    "allowed_delegates": [{"sub_profile": "ai_agent"}],
    "children": {"max_children": 3, "max_child_depth": 2},
}


# --------------------------------------------------------------------------- parsing


def test_minimal_entry_parses_with_defaults() -> None:
    parsed = one()
    assert parsed.resource == ERP
    assert parsed.resource_match == "exact"
    assert parsed.actions == ("invoices.read",)
    assert parsed.constraints == {}
    assert parsed.delegation is None


def test_raw_is_the_entry_as_submitted_without_defaults() -> None:
    submitted = entry()
    assert one().raw == submitted
    assert "resource_match" not in one().raw


def test_raw_is_a_copy_of_the_input() -> None:
    submitted = [entry(constraints={"tenant": "acme"})]
    parsed = parse_authority_set(submitted)
    submitted[0]["constraints"]["tenant"] = "changed"
    assert parsed[0].constraints == {"tenant": "acme"}


def test_full_entry_parses() -> None:
    parsed = one(
        resource_match="prefix",
        actions=["invoices.*", "journal-entries.write"],
        constraints={"max_amount": {"amount": "500.00", "currency": "USD"}},
        delegation=DELEGATION,
    )
    assert parsed.resource_match == "prefix"
    assert parsed.delegation == DELEGATION
    assert parsed.constraints["max_amount"] == {"amount": "500.00", "currency": "USD"}


ANCHORS = {v["id"]: v for v in load_mission_vector("integrity-anchors.json")["vectors"]}


@pytest.mark.parametrize("vector_id", ["authority-set-1", "proposal-1"])
def test_vector_authority_sets_parse_and_hash_unchanged(vector_id: str) -> None:
    vector = ANCHORS[vector_id]
    parsed = parse_authority_set(vector["value"])
    assert anchor(vector["typ"], vector["iss"], authority_json(parsed)) == vector["expected"]


def test_vector_entry_parses_and_digests_unchanged() -> None:
    vector = ANCHORS["authority-entry-1"]
    (parsed,) = parse_authority_set([vector["value"]])
    assert entry_digest(vector["iss"], parsed.raw) == vector["expected"]


def test_vector_with_sub_matcher_parses_and_hashes_unchanged() -> None:
    vector = ANCHORS["authority-set-2-delegation-array-order"]
    parsed = parse_authority_set(vector["value"])
    assert anchor(vector["typ"], vector["iss"], authority_json(parsed)) == vector["expected"]


def test_authority_set_must_be_an_array() -> None:
    assert rejected_at(entry()) == P


def test_authority_set_must_not_be_empty() -> None:
    assert rejected_at([]) == P


def test_authority_set_size_is_bounded() -> None:
    assert rejected_at([entry()] * 3, max_entries=2) == P


def test_entry_must_be_an_object() -> None:
    assert rejected_at([entry(), "x"]) == f"{P}/1"


def test_unknown_entry_member_is_rejected_at_its_pointer() -> None:
    assert rejected_at([entry(), entry(locations=["x"])]) == f"{P}/1/locations"


def test_wrong_type_is_rejected() -> None:
    assert rejected_at([entry(type="openid_credential")]) == f"{P}/0/type"


@pytest.mark.parametrize("member", ["type", "resource", "actions"])
def test_required_member_is_reported_missing(member: str) -> None:
    value = entry()
    del value[member]
    assert rejected_at([value]) == f"{P}/0/{member}"


def test_unknown_resource_match_is_rejected() -> None:
    assert rejected_at([entry(resource_match="glob")]) == f"{P}/0/resource_match"


def test_prefix_entry_needs_a_hierarchical_resource() -> None:
    value = entry(resource="urn:example:erp", resource_match="prefix")
    assert rejected_at([value]) == f"{P}/0/resource"


def test_bad_action_is_rejected_at_its_index() -> None:
    assert rejected_at([entry(actions=["invoices.read", "bad action"])]) == f"{P}/0/actions/1"


def test_empty_actions_are_rejected() -> None:
    assert rejected_at([entry(actions=[])]) == f"{P}/0/actions"


def test_duplicate_actions_are_rejected() -> None:
    assert rejected_at([entry(actions=["a", "a"])]) == f"{P}/0/actions/1"


def test_actions_are_bounded_to_64() -> None:
    assert rejected_at([entry(actions=[f"a{i}" for i in range(65)])]) == f"{P}/0/actions"


def test_bad_constraint_is_rejected_at_its_pointer() -> None:
    value = entry(constraints={"tenant": ""})
    assert rejected_at([value]) == f"{P}/0/constraints/tenant"


def test_unknown_delegation_member_is_rejected() -> None:
    value = entry(delegation={"max_depth": 1, "forever": True})
    assert rejected_at([value]) == f"{P}/0/delegation/forever"


@pytest.mark.parametrize("depth", [-1, 17, True, "2", 1.0])
def test_max_depth_is_an_integer_from_0_to_16(depth: object) -> None:
    value = entry(delegation={"max_depth": depth})
    assert rejected_at([value]) == f"{P}/0/delegation/max_depth"


def test_empty_allowed_delegates_is_rejected() -> None:
    value = entry(delegation={"allowed_delegates": []})
    assert rejected_at([value]) == f"{P}/0/delegation/allowed_delegates"


def test_allowed_delegates_are_bounded_to_16() -> None:
    value = entry(delegation={"allowed_delegates": [{"client_id": str(i)} for i in range(17)]})
    assert rejected_at([value]) == f"{P}/0/delegation/allowed_delegates"


def test_unknown_matcher_member_is_rejected() -> None:
    value = entry(delegation={"allowed_delegates": [{"team": "blue"}]})
    assert rejected_at([value]) == f"{P}/0/delegation/allowed_delegates/0/team"


def test_empty_matcher_is_rejected() -> None:
    value = entry(delegation={"allowed_delegates": [{}]})
    assert rejected_at([value]) == f"{P}/0/delegation/allowed_delegates/0"


def test_matcher_values_are_non_empty_strings() -> None:
    value = entry(delegation={"allowed_delegates": [{"client_id": ""}]})
    assert rejected_at([value]) == f"{P}/0/delegation/allowed_delegates/0/client_id"


def test_unknown_children_member_is_rejected() -> None:
    value = entry(delegation={"children": {"max_children": 1, "budget": 3}})
    assert rejected_at([value]) == f"{P}/0/delegation/children/budget"


@pytest.mark.parametrize("member", ["max_children", "max_child_depth"])
def test_children_limits_are_positive_integers(member: str) -> None:
    value = entry(delegation={"children": {member: 0}})
    assert rejected_at([value]) == f"{P}/0/delegation/children/{member}"


def test_allowed_child_actors_are_matchers() -> None:
    value = entry(delegation={"children": {"allowed_child_actors": [{"role": "x"}]}})
    assert rejected_at([value]) == f"{P}/0/delegation/children/allowed_child_actors/0/role"


def test_authority_json_returns_the_raw_entries() -> None:
    submitted = [entry(), entry(resource_match="prefix", delegation=DELEGATION)]
    assert authority_json(parse_authority_set(submitted)) == submitted


def test_authority_json_returns_copies() -> None:
    parsed = parse_authority_set([entry()])
    actions = authority_json(parsed)[0]["actions"]
    assert isinstance(actions, list)
    actions.append("invoices.write")
    assert parsed[0].raw == entry()


def test_entries_are_hashable() -> None:
    assert len({one(), one()}) == 1


# --------------------------------------------------------------------------- entry_within


def test_identical_entry_is_within() -> None:
    assert entry_within(one(delegation=DELEGATION), one(delegation=DELEGATION)) is None


def test_resource_outside_is_named() -> None:
    reason = entry_within(one(resource="https://crm.example.com"), one())
    assert reason is not None
    assert "https://crm.example.com" in reason


def test_sub_resource_within_prefix_entry() -> None:
    assert entry_within(one(resource=ERP + "/invoices"), one(resource_match="prefix")) is None


def test_prefix_candidate_never_within_exact_ceiling() -> None:
    assert entry_within(one(resource_match="prefix"), one()) is not None


def test_extra_action_is_named() -> None:
    reason = entry_within(one(actions=["invoices.read", "invoices.delete"]), one())
    assert reason is not None
    assert "'invoices.delete'" in reason


def test_action_within_a_ceiling_family() -> None:
    assert entry_within(one(actions=["invoices.q3.*"]), one(actions=["invoices.*"])) is None


def test_missing_constraint_is_named() -> None:
    ceiling = one(constraints={"tenant": "acme"})
    assert entry_within(one(), ceiling) == "constraint 'tenant' is absent (the ceiling has it)"


def test_added_constraint_stays_within() -> None:
    assert entry_within(one(constraints={"tenant": "acme"}), one()) is None


def test_no_delegation_on_candidate_is_within() -> None:
    assert entry_within(one(), one(delegation=DELEGATION)) is None


def test_new_delegation_is_not_within() -> None:
    reason = entry_within(one(delegation={"max_depth": 0}), one())
    assert reason is not None
    assert reason.startswith("delegation")


def test_deeper_delegation_is_not_within() -> None:
    reason = entry_within(
        one(delegation={**DELEGATION, "max_depth": 3}), one(delegation=DELEGATION)
    )
    assert reason == "delegation.max_depth 3 exceeds 2"


def test_shallower_delegation_is_within() -> None:
    narrower = {**DELEGATION, "max_depth": 1}
    assert entry_within(one(delegation=narrower), one(delegation=DELEGATION)) is None


def test_absent_max_depth_is_broader_than_a_limit() -> None:
    candidate = {key: value for key, value in DELEGATION.items() if key != "max_depth"}
    assert entry_within(one(delegation=candidate), one(delegation=DELEGATION)) is not None


def test_unrestricted_delegates_on_the_ceiling_allow_any_list() -> None:
    ceiling = {"max_depth": 2}
    candidate = {"max_depth": 1, "allowed_delegates": [{"client_id": "c1"}]}
    assert entry_within(one(delegation=candidate), one(delegation=ceiling)) is None


def test_dropping_the_delegate_list_is_not_within() -> None:
    candidate = {"max_depth": 2, "children": DELEGATION["children"]}
    reason = entry_within(one(delegation=candidate), one(delegation=DELEGATION))
    assert reason is not None
    assert "allowed_delegates" in reason


def test_more_specific_delegate_matcher_is_within() -> None:
    candidate = {
        **DELEGATION,
        "allowed_delegates": [{"sub_profile": "ai_agent", "client_id": "c1"}],
    }
    assert entry_within(one(delegation=candidate), one(delegation=DELEGATION)) is None


def test_other_delegate_matcher_is_not_within() -> None:
    candidate = {**DELEGATION, "allowed_delegates": [{"client_id": "c1"}]}
    reason = entry_within(one(delegation=candidate), one(delegation=DELEGATION))
    assert reason is not None
    assert "allowed_delegates[0]" in reason


def test_children_cannot_be_added() -> None:
    ceiling = {"max_depth": 2}
    candidate = {"max_depth": 2, "children": {"max_children": 1}}
    reason = entry_within(one(delegation=candidate), one(delegation=ceiling))
    assert reason is not None
    assert "children" in reason


def test_more_children_are_not_within() -> None:
    candidate = copy.deepcopy(DELEGATION)
    candidate["children"]["max_children"] = 4
    reason = entry_within(one(delegation=candidate), one(delegation=DELEGATION))
    assert reason == "delegation.children.max_children 4 exceeds 3"


def test_child_depth_defaults_to_one() -> None:
    ceiling = {"children": {"max_children": 2}}
    candidate = {"children": {"max_children": 2, "max_child_depth": 2}}
    reason = entry_within(one(delegation=candidate), one(delegation=ceiling))
    assert reason == "delegation.children.max_child_depth 2 exceeds 1"


def test_child_creation_policy_must_match() -> None:
    ceiling = {"children": {"child_creation_policy": "approval"}}
    candidate = {"children": {"child_creation_policy": "automatic"}}
    assert entry_within(one(delegation=candidate), one(delegation=ceiling)) is not None


# --------------------------------------------------------------------------- set_within


def test_set_within_accepts_each_entry_within_some_ceiling() -> None:
    ceilings = [entry(), entry(actions=["journal-entries.write"])]
    set_within(parse_authority_set(ceilings[::-1]), parse_authority_set(ceilings))


def test_set_within_names_the_first_offending_index() -> None:
    error = exceeded([entry(), entry(actions=["invoices.delete"])], [entry()])
    assert error.errors[0].pointer == f"{P}/1"
    assert error.detail.startswith(f"{P}/1: ")
    assert "invoices.delete" in error.detail


def test_set_within_uses_the_custom_pointer() -> None:
    with pytest.raises(AuthorityExceeded) as caught:
        set_within([one(actions=["x"])], [one()], pointer="/approve/authorization_details")
    assert caught.value.errors[0].pointer == "/approve/authorization_details/0"


def test_set_within_prefers_the_reason_of_the_same_resource() -> None:
    ceilings = [
        entry(resource="https://crm.example.com", actions=["invoices.*"]),
        entry(constraints={"max_amount": {"amount": "500.00", "currency": "USD"}}),
    ]
    candidate = entry(constraints={"max_amount": {"amount": "600.00", "currency": "USD"}})
    error = exceeded([candidate], ceilings)
    assert error.errors[0].message == "constraint 'max_amount' 600.00 USD exceeds 500.00 USD"


def test_set_within_falls_back_to_a_containing_ceiling() -> None:
    ceilings = [entry(resource_match="prefix", constraints={"tenant": "acme"})]
    error = exceeded([entry(resource=ERP + "/invoices")], ceilings)
    assert error.errors[0].message == "constraint 'tenant' is absent (the ceiling has it)"


def test_set_within_reports_a_resource_outside_every_ceiling() -> None:
    error = exceeded([entry(resource="https://crm.example.com")], [entry()])
    assert "not within any ceiling entry" in error.errors[0].message


def test_authority_exceeded_is_an_invalid_request() -> None:
    error = exceeded([entry(actions=["x"])], [entry()])
    assert isinstance(error, InvalidRequest)


# --------------------------------------------------------------------------- coverage


def test_entry_covers_resource_and_action() -> None:
    granted = one(resource_match="prefix", actions=["invoices.*"])
    assert entry_covers(granted, ERP + "/invoices/7", "invoices.read")
    assert not entry_covers(granted, ERP + "/invoices/7", "journal-entries.write")
    assert not entry_covers(granted, "https://crm.example.com/x", "invoices.read")


def test_exact_entry_does_not_cover_sub_resources() -> None:
    assert not entry_covers(one(), ERP + "/invoices", "invoices.read")


# --------------------------------------------------------------------------- containment


def test_containment_parses_resource_and_actions() -> None:
    items = parse_containment([{"resource": ERP, "actions": ["invoices.*"]}, {"resource": ERP}])
    raw = {"resource": ERP, "actions": ["invoices.*"]}
    assert items[0] == ContainedCapability(ERP, ("invoices.*",), raw)
    assert items[1].actions is None


def test_containment_must_not_be_empty() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_containment([])
    assert caught.value.errors[0].pointer == "/contained"


def test_containment_rejects_unknown_members() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_containment([{"resource": ERP, "reason": "x"}])
    assert caught.value.errors[0].pointer == "/contained/0/reason"


def test_containment_needs_a_resource() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_containment([{"actions": ["a"]}])
    assert caught.value.errors[0].pointer == "/contained/0/resource"


def test_containment_actions_must_be_unique() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_containment([{"resource": ERP, "actions": ["a", "a"]}])
    assert caught.value.errors[0].pointer == "/contained/0/actions/1"


def test_containment_removes_the_resource_and_everything_below() -> None:
    (item,) = parse_containment([{"resource": ERP + "/invoices"}])
    assert contained_covers(item, ERP + "/invoices", "anything")
    assert contained_covers(item, ERP + "/invoices/7", "invoices.read")
    assert not contained_covers(item, ERP + "/invoicesX", "invoices.read")
    assert not contained_covers(item, ERP, "invoices.read")


def test_containment_with_actions_removes_only_those_actions() -> None:
    (item,) = parse_containment([{"resource": ERP, "actions": ["invoices.*"]}])
    assert contained_covers(item, ERP + "/x", "invoices.read")
    assert not contained_covers(item, ERP + "/x", "journal-entries.write")
