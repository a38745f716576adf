"""Property tests of the subset rule over generated Authority Sets.

Narrowing (fewer actions, narrower resources, added or tighter constraints, tighter delegation)
always stays within; ``set_within`` is reflexive and transitive on narrowing chains; a widening
(an extra action or resource, a dropped constraint, a larger amount) never is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.authority import parse_authority_set, set_within
from ledger.domain.errors import AuthorityExceeded
from ledger.domain.instants import format_instant, parse_instant

# No example database (no writes under the working tree) and no per-example deadline (CI noise).
PROPERTIES = settings(max_examples=100, deadline=None, database=None)
CHAINS = settings(max_examples=60, deadline=None, database=None)  # two narrowings per example

HOSTS = ["https://erp.example.com", "https://crm.example.com"]
PATHS = ["", "/invoices", "/invoices/q3", "/ledger"]
ACTIONS = [
    "invoices.read",
    "invoices.write",
    "ledger.post",
    "reports.view",
    "invoices.*",
    "ledger.*",
]
TOOLS = ["search", "fetch", "shell"]
LABELS = ["public", "internal", "secret"]
EVENTS = ["invoice.paid", "quarter.closed", "mission.done"]
MATCHER_VALUES = {"sub_profile": ["ai_agent", "service"], "client_id": ["c1", "c2"]}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
WIDE_ACTION = "zz.widen"
WIDE_RESOURCE = "https://elsewhere.example/x"

T = TypeVar("T")
Entry = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]  # a composite's ``draw`` or ``data.draw``

# Strategies are built once: building them inside composites dominates the run time.
BOOLS = st.booleans()
MASKS = st.integers(min_value=0, max_value=2**16 - 1)
MINUTES = st.integers(min_value=0, max_value=365 * 24 * 60)
INSTANTS = MINUTES.map(lambda minutes: EPOCH + timedelta(minutes=minutes))
CENTS = st.integers(min_value=0, max_value=10**8)
DEPTHS = st.integers(min_value=0, max_value=16)
CHILD_COUNTS = st.integers(min_value=1, max_value=10)
CHILD_DEPTHS = st.integers(min_value=1, max_value=5)
SMALL = st.integers(min_value=0, max_value=3)


def _amount(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def _some(draw: Draw, values: list[T]) -> list[T]:
    """A non-empty sub-list of ``values`` (order kept), chosen by one bit mask."""
    mask: int = draw(MASKS)
    chosen = mask % (2 ** len(values) - 1) + 1
    return [value for index, value in enumerate(values) if chosen >> index & 1]


def _one(draw: Draw, values: list[T]) -> T:
    index: int = draw(MASKS)
    return values[index % len(values)]


@st.composite
def time_windows(draw: st.DrawFn) -> dict[str, str]:
    lower = draw(INSTANTS)
    upper = lower + timedelta(minutes=1 + draw(MINUTES))
    kind = _one(draw, ["both", "lower", "upper"])
    window = {}
    if kind in ("both", "lower"):
        window["not_before"] = format_instant(lower)
    if kind in ("both", "upper"):
        window["not_after"] = format_instant(upper)
    return window


@st.composite
def subsets(draw: st.DrawFn, values: list[str]) -> list[str]:
    return _some(draw, values)


CONSTRAINT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "max_amount": st.builds(
        lambda cents, currency: {"amount": _amount(cents), "currency": currency},
        CENTS,
        st.sampled_from(["USD", "EUR"]),
    ),
    "resource_issued_after": INSTANTS.map(format_instant),
    "resource_issued_before": INSTANTS.map(format_instant),
    "tenant": st.sampled_from(["acme", "umbrella"]),
    "recipient_domain": st.sampled_from(["example.com", "mail.example.com"]),
    "time_window": time_windows(),
    "data_classification": subsets(LABELS),
    "allowed_tools": subsets(TOOLS),
    "requires_action_approval": BOOLS,
    "terminal_when": subsets(EVENTS).map(lambda events: [{"event_type": e} for e in events]),
}
CONSTRAINT_KEYS = sorted(CONSTRAINT_VALUES)


@st.composite
def constraint_sets(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(SMALL)
    keys = {_one(draw, CONSTRAINT_KEYS) for _ in range(count)}
    return {key: draw(CONSTRAINT_VALUES[key]) for key in sorted(keys)}


@st.composite
def matchers(draw: st.DrawFn) -> dict[str, str]:
    keys = _some(draw, sorted(MATCHER_VALUES))
    return {key: _one(draw, MATCHER_VALUES[key]) for key in keys}


MATCHERS = matchers()
CONSTRAINT_SETS = constraint_sets()


@st.composite
def delegations(draw: st.DrawFn) -> dict[str, Any]:
    delegation: dict[str, Any] = {}
    if draw(BOOLS):
        delegation["max_depth"] = draw(DEPTHS)
    if draw(BOOLS):
        delegation["allowed_delegates"] = [draw(MATCHERS) for _ in range(1 + draw(SMALL) % 3)]
    if draw(BOOLS):
        children: dict[str, Any] = {}
        if draw(BOOLS):
            children["max_children"] = draw(CHILD_COUNTS)
        if draw(BOOLS):
            children["max_child_depth"] = draw(CHILD_DEPTHS)
        delegation["children"] = children
    return delegation


DELEGATIONS = delegations()


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    entry: Entry = {
        "type": "mission_resource_access",
        "resource": _one(draw, HOSTS) + _one(draw, PATHS),
        "actions": _some(draw, ACTIONS),
    }
    if draw(BOOLS):
        entry["resource_match"] = _one(draw, ["exact", "prefix"])
    constraints = draw(CONSTRAINT_SETS)
    keep_empty = draw(BOOLS)
    if constraints or keep_empty:
        entry["constraints"] = constraints
    if draw(BOOLS):
        entry["delegation"] = draw(DELEGATIONS)
    return entry


authority_sets = st.lists(entries(), min_size=1, max_size=4)


# --------------------------------------------------------------------------- narrowing


def _below(draw: Draw, limit: int, floor: int = 0) -> int:
    """An integer in ``floor``..``limit``."""
    mask: int = draw(MASKS)
    return floor + mask % (limit - floor + 1)


def _narrow_resource(draw: Draw, entry: Entry) -> None:
    if entry.get("resource_match") != "prefix":
        return
    entry["resource"] += _one(draw, ["", "/sub", "/sub/deeper"])
    entry["resource_match"] = _one(draw, ["exact", "prefix"])


def _narrow_action(draw: Draw, action: str) -> str:
    if action.endswith(".*") and draw(BOOLS):
        return action[:-1] + _one(draw, ["special", "q3.*", "q3.read"])
    return action


def _narrow_window(draw: Draw, window: dict[str, str]) -> dict[str, str]:
    lower = parse_instant(window["not_before"]) if "not_before" in window else None
    upper = parse_instant(window["not_after"]) if "not_after" in window else None
    if lower is not None and upper is not None:
        quarter = (upper - lower) / 4
        lower += quarter * _below(draw, 1)
        upper -= quarter * _below(draw, 1)
    elif lower is not None and draw(BOOLS):
        upper = lower + timedelta(days=_below(draw, 30, 1))
    elif upper is not None and draw(BOOLS):
        lower = upper - timedelta(days=_below(draw, 30, 1))
    narrowed = {}
    if lower is not None:
        narrowed["not_before"] = format_instant(lower)
    if upper is not None:
        narrowed["not_after"] = format_instant(upper)
    return narrowed


def _narrow_constraint(draw: Draw, key: str, value: Any) -> Any:
    if key == "max_amount":
        cents = int(Decimal(value["amount"]) * 100)
        return {"amount": _amount(_below(draw, cents)), "currency": value["currency"]}
    if key == "resource_issued_after":
        return format_instant(parse_instant(value) + timedelta(minutes=draw(MASKS)))
    if key == "resource_issued_before":
        return format_instant(parse_instant(value) - timedelta(minutes=draw(MASKS)))
    if key == "recipient_domain":
        return _one(draw, ["", "sub."]) + value
    if key == "time_window":
        return _narrow_window(draw, value)
    if key in ("data_classification", "allowed_tools"):
        return _some(draw, value)
    if key == "requires_action_approval":
        return True if value else draw(BOOLS)
    if key == "terminal_when":
        extra = {"event_type": _one(draw, EVENTS)}
        return value if extra in value else [*value, extra]
    return value


def _narrow_delegation(draw: Draw, delegation: dict[str, Any]) -> dict[str, Any]:
    narrowed = copy.deepcopy(delegation)
    if "max_depth" in narrowed:
        narrowed["max_depth"] = _below(draw, narrowed["max_depth"])
    if "allowed_delegates" in narrowed:
        # a matcher that keeps every pair and adds more matches fewer actors
        narrowed["allowed_delegates"] = [
            {**(draw(MATCHERS) if draw(BOOLS) else {}), **matcher}
            for matcher in _some(draw, narrowed["allowed_delegates"])
        ]
    if "children" in narrowed and draw(BOOLS):
        del narrowed["children"]
    elif "children" in narrowed:
        for name in ("max_children", "max_child_depth"):
            if name in narrowed["children"]:
                narrowed["children"][name] = _below(draw, narrowed["children"][name], 1)
    return narrowed


def narrowed_entry(draw: Draw, entry: Entry) -> Entry:
    narrowed = copy.deepcopy(entry)
    _narrow_resource(draw, narrowed)
    kept = _some(draw, narrowed["actions"])
    narrowed["actions"] = list(dict.fromkeys(_narrow_action(draw, a) for a in kept))
    constraints = {
        key: _narrow_constraint(draw, key, value)
        for key, value in narrowed.get("constraints", {}).items()
    }
    for key, value in draw(CONSTRAINT_SETS).items():
        constraints.setdefault(key, value)  # adding a constraint narrows
    if constraints or "constraints" in narrowed:
        narrowed["constraints"] = constraints
    if "delegation" in narrowed:
        if draw(BOOLS):
            del narrowed["delegation"]
        else:
            narrowed["delegation"] = _narrow_delegation(draw, narrowed["delegation"])
    return narrowed


def narrowed_set(draw: Draw, ceiling: list[Entry]) -> list[Entry]:
    """Some entries of ``ceiling`` (possibly repeated), each narrowed.

    A plain function taking ``data.draw``: a composite strategy per call costs more than the
    rule under test.
    """
    chosen = [_one(draw, ceiling) for _ in range(1 + _below(draw, len(ceiling)))]
    return [narrowed_entry(draw, entry) for entry in chosen]


def _within(candidates: list[Entry], ceilings: list[Entry]) -> None:
    set_within(parse_authority_set(candidates), parse_authority_set(ceilings))


def _not_within(candidates: list[Entry], ceilings: list[Entry]) -> None:
    with pytest.raises(AuthorityExceeded):
        _within(candidates, ceilings)


@PROPERTIES
@given(authority_sets)
def test_every_set_is_within_itself(authority: list[Entry]) -> None:
    _within(authority, authority)


@CHAINS
@given(st.data(), authority_sets)
def test_narrowing_stays_within(data: st.DataObject, authority: list[Entry]) -> None:
    _within(narrowed_set(data.draw, authority), authority)


@CHAINS
@given(st.data(), authority_sets)
def test_within_is_transitive_on_narrowing_chains(
    data: st.DataObject, authority: list[Entry]
) -> None:
    middle = narrowed_set(data.draw, authority)
    last = narrowed_set(data.draw, middle)
    _within(middle, authority)
    _within(last, middle)
    _within(last, authority)


# --------------------------------------------------------------------------- widening


@PROPERTIES
@given(st.data(), authority_sets)
def test_an_extra_action_is_never_within(data: st.DataObject, authority: list[Entry]) -> None:
    widened = copy.deepcopy(authority[data.draw(MASKS) % len(authority)])
    widened["actions"].append(WIDE_ACTION)
    _not_within([widened], authority)


@PROPERTIES
@given(st.data(), authority_sets)
def test_an_extra_resource_is_never_within(data: st.DataObject, authority: list[Entry]) -> None:
    widened = copy.deepcopy(authority[data.draw(MASKS) % len(authority)])
    widened["resource"] = WIDE_RESOURCE
    _not_within([*authority, widened], authority)


@PROPERTIES
@given(st.data(), entries())
def test_a_removed_constraint_is_never_within(data: st.DataObject, entry: Entry) -> None:
    removable = [
        key
        for key, value in entry.get("constraints", {}).items()
        if not (key == "requires_action_approval" and value is False)
    ]
    if not removable:
        entry.setdefault("constraints", {})["tenant"] = "acme"
        removable = ["tenant"]
    widened = copy.deepcopy(entry)
    del widened["constraints"][removable[data.draw(MASKS) % len(removable)]]
    _not_within([widened], [entry])


@PROPERTIES
@given(entries(), CONSTRAINT_VALUES["max_amount"], st.integers(min_value=1, max_value=10**6))
def test_a_larger_amount_is_never_within(entry: Entry, limit: dict[str, str], extra: int) -> None:
    entry.setdefault("constraints", {})["max_amount"] = limit
    widened = copy.deepcopy(entry)
    bigger = Decimal(limit["amount"]) + Decimal(extra) / 100
    widened["constraints"]["max_amount"] = {
        "amount": f"{bigger:.2f}",
        "currency": limit["currency"],
    }
    _not_within([widened], [entry])
