"""What the console's pages show, built from ledger objects (no HTML here).

The words come from ``ledger.domain.rendering`` (the one plain-language rendering, shared
with the API's ``rendered_authority``); this module arranges them for the templates and
turns the approval form back into ``authorization_details`` (the ledger then checks, as
for the API, that it narrows the proposal and never widens it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ledger.domain.actions import is_family
from ledger.domain.actors import Actor
from ledger.domain.authority import AuthorityEntry, parse_authority_set
from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import format_instant, parse_instant
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.rendering import (
    action_text,
    constraint_text,
    delegation_text,
    describe_entry,
    describe_terms,
    resource_text,
)
from ledger.persistence.eventlog import LoggedEvent

#: Intent members written by the agent (shown fenced as untrusted text).
AGENT_PROSE = ("goal", "purpose", "constraints", "success_criteria")


@dataclass(frozen=True)
class ActionView:
    name: str
    text: str
    family: bool


@dataclass(frozen=True)
class EntryView:
    index: int
    resource: str
    where: str
    actions: list[ActionView]
    constraints: list[tuple[str, str]]
    #: ``(amount, currency)`` when the entry bounds amounts (the approver may lower it).
    max_amount: tuple[str, str] | None
    delegation: str
    sentence: str


def entry_view(index: int, entry: AuthorityEntry) -> EntryView:
    money = entry.constraints.get("max_amount")
    return EntryView(
        index=index,
        resource=entry.resource,
        where=resource_text(entry),
        actions=[ActionView(a, action_text(a), is_family(a)) for a in entry.actions],
        constraints=[(k, constraint_text(k, v)) for k, v in sorted(entry.constraints.items())],
        max_amount=(
            (str(money.get("amount")), str(money.get("currency")))
            if isinstance(money, Mapping)
            else None
        ),
        delegation=delegation_text(entry.delegation),
        sentence=describe_entry(entry),
    )


def entry_views(raw: Sequence[Mapping[str, Any]] | None) -> list[EntryView]:
    if not raw:
        return []
    return [entry_view(i, e) for i, e in enumerate(parse_authority_set(list(raw)))]


def terms(expires_at: datetime | str, intent: Mapping[str, Any]) -> list[str]:
    controls = intent.get("controls")
    return describe_terms(
        expires_at=expires_at if isinstance(expires_at, str) else format_instant(expires_at),
        controls=controls if isinstance(controls, Mapping) else None,
    )


def agent_prose(intent: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """The agent-written members of an Intent, as (label, paragraphs)."""
    labels = {
        "goal": "Goal",
        "purpose": "Purpose",
        "constraints": "Constraints it states",
        "success_criteria": "Success criteria",
    }
    out = []
    for name in AGENT_PROSE:
        value = intent.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            out.append((labels[name], [str(v) for v in value]))
        elif isinstance(value, Mapping):
            out.append((labels[name], [f"{k}: {v}" for k, v in value.items()]))
        else:
            out.append((labels[name], [str(value)]))
    return out


def countdown(now: datetime, until: datetime) -> str:
    """``2 d 3 h``, ``4 h 12 min``, ``9 min``, or ``expired``."""
    seconds = int((until - now).total_seconds())
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = max(1, rest // 60) if not (days or hours) else rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def actor_text(actor: Mapping[str, Any] | None) -> str:
    if not actor:
        return "unknown"
    who = Actor.from_json(actor)
    text = who.name
    if who.role:
        text += f" ({who.role})"
    if who.type == "oauth" and who.iss:
        text += f" at {who.iss}"
    elif who.type == "api_key":
        text += ", API key"
    elif who.type == "system":
        text += ", automatic"
    return text


def parse_requested_expiry(intent: Mapping[str, Any]) -> datetime:
    """The Mission expiry the agent asked for (``intent.expires_at``)."""
    return parse_instant(intent.get("expires_at"), "/intent/expires_at")


@dataclass
class MandateNode:
    id: str
    holder: str
    state: str
    expires_at: str
    depth: int
    children: list[MandateNode] = field(default_factory=list)


def mandate_tree(mandates: Sequence[ExecutionMandate], now: datetime) -> list[MandateNode]:
    """The Mission's Mandates as a forest: root Mandates, each with its delegations."""
    nodes = {
        m.id: MandateNode(
            id=m.id,
            holder=", ".join(f"{k} {v}" for k, v in sorted(m.holder.items()) if v is not None),
            state=m.own_state(now),
            expires_at=format_instant(m.expires_at),
            depth=m.depth,
        )
        for m in mandates
    }
    roots: list[MandateNode] = []
    for mandate in mandates:
        parent = nodes.get(mandate.parent_mandate_id or "")
        (parent.children if parent is not None else roots).append(nodes[mandate.id])
    return roots


@dataclass(frozen=True)
class DecisionRow:
    evaluation_id: str
    at: str
    permit: bool
    reason: str
    agent: str
    action: str
    resource: str
    mission: str | None
    mission_version: int | None
    mandate: str | None
    approval: str | None
    caller: str
    index_position: int


def _member(value: Any, name: str) -> str:
    return str(value.get(name, "")) if isinstance(value, Mapping) else ""


def decision_row(record: Any) -> DecisionRow:
    """One decision log record (``projections.decision_log.StoredDecision``) for a table."""
    return DecisionRow(
        evaluation_id=record.evaluation_id,
        at=format_instant(record.evaluated_at),
        permit=bool(record.decision),
        reason=record.reason or "",
        agent=_member(record.subject, "id"),
        action=_member(record.action, "name"),
        resource=_member(record.resource, "id"),
        mission=record.mission_id,
        mission_version=record.mission_version,
        mandate=record.mandate_id,
        approval=record.approval_id,
        caller=actor_text(record.principal) if record.principal else "unknown",
        index_position=record.index_position,
    )


def usage_facts(usage: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """A metered Mission's ``usage`` (SPEC 7.3, as ``GET /v1/missions/{id}`` shows it) as
    (label, text) pairs; empty when the Mission meters nothing."""
    if not usage:
        return []
    facts: list[tuple[str, str]] = []
    currency = usage.get("currency")
    if currency is not None:
        facts += [
            ("Budget", f"{usage.get('budget')} {currency}"),
            ("Spent", f"{usage.get('spent')} {currency}"),
            ("Reserved", f"{usage.get('reserved')} {currency}"),
            ("Remaining", f"{usage.get('remaining')} {currency}"),
        ]
    calls = f"{usage.get('calls')}"
    if usage.get("max_calls") is not None:
        calls += f" of {usage['max_calls']} ({usage.get('calls_remaining')} left)"
    facts.append(("Calls", calls))
    for item in usage.get("call_classes") or []:
        label = f"Calls of class {item.get('call_class')}"
        facts.append((label, f"{item.get('calls')} of {item.get('max')}"))
    return facts


# ---------------------------------------------------------------------- narrowing


def narrowed_authority(
    proposed: Sequence[Mapping[str, Any]], form: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The approver's choice, from the form: per entry ``e<i>.action`` (the ticked actions)
    and ``e<i>.max_amount`` (a lower bound's amount). An entry left with no action is not
    granted. Anything else of an entry is kept as proposed."""
    granted: list[dict[str, Any]] = []
    for index, raw in enumerate(proposed):
        ticked = set(_values(form, f"e{index}.action"))
        actions = [a for a in raw.get("actions", []) if a in ticked]
        extra = sorted(ticked - set(raw.get("actions", [])))
        if extra:
            raise InvalidRequest.at(
                f"/authorization_details/{index}/actions",
                f"{extra[0]!r} was not asked for: an approval only narrows",
            )
        if not actions:
            continue
        entry = copy.deepcopy(dict(raw))
        entry["actions"] = actions
        amount = form.get(f"e{index}.max_amount")
        constraints = entry.get("constraints")
        if isinstance(amount, str) and amount.strip() and isinstance(constraints, dict):
            bound = constraints.get("max_amount")
            if isinstance(bound, dict):
                constraints["max_amount"] = {**bound, "amount": amount.strip()}
        granted.append(entry)
    if not granted:
        raise InvalidRequest.at(
            "/authorization_details", "nothing is left to grant: deny the request instead"
        )
    return granted


def _values(form: Any, name: str) -> list[str]:
    getlist = getattr(form, "getlist", None)
    values = getlist(name) if getlist is not None else form.get(name, [])
    if isinstance(values, str):
        values = [values]
    return [v for v in values if isinstance(v, str)]


def expiry_input(value: datetime) -> str:
    """The ``datetime-local`` form of an instant (UTC, minutes)."""
    return value.strftime("%Y-%m-%dT%H:%M")


def form_instant(value: str, pointer: str) -> str:
    """A ``datetime-local`` value (UTC, minutes or seconds), or an RFC 3339 instant, as an
    RFC 3339 instant."""
    text = value.strip()
    if len(text) == 16:  # datetime-local without seconds
        text += ":00"
    if len(text) == 19:  # no offset: the form's times are UTC
        text += "Z"
    return format_instant(parse_instant(text, pointer))


def chosen_expiry(form: Mapping[str, Any], requested: datetime) -> str | None:
    """The expiry the approver chose (UTC), or None for the requested one."""
    value = form.get("expires_at")
    if not isinstance(value, str) or not value.strip():
        return None
    if value.strip() == expiry_input(requested):
        return None
    return form_instant(value, "/expires_at")


@dataclass(frozen=True)
class Change:
    entry: int
    text: str


def changes(
    proposed: Sequence[Mapping[str, Any]], granted: Sequence[Mapping[str, Any]]
) -> list[Change]:
    """What the approver took away, entry by entry (entries are matched by resource)."""
    out: list[Change] = []
    remaining = list(granted)
    for index, asked in enumerate(proposed):
        match = next((g for g in remaining if g.get("resource") == asked.get("resource")), None)
        if match is None:
            out.append(Change(index, f"not granted at all ({asked.get('resource')})"))
            continue
        remaining.remove(match)
        removed = [a for a in asked.get("actions", []) if a not in match.get("actions", [])]
        if removed:
            out.append(Change(index, "removed " + ", ".join(removed)))
        before = (asked.get("constraints") or {}).get("max_amount")
        after = (match.get("constraints") or {}).get("max_amount")
        if isinstance(before, Mapping) and isinstance(after, Mapping) and before != after:
            out.append(
                Change(
                    index,
                    f"amount lowered from {before.get('amount')} to {after.get('amount')} "
                    f"{after.get('currency')}",
                )
            )
    return out


# ---------------------------------------------------------------------- timeline

_TITLES = {
    "Approved": "Approved: the Mission began",
    "Suspended": "Suspended",
    "Resumed": "Resumed",
    "Revoked": "Revoked",
    "Completed": "Completed",
    "Expired": "Expired",
    "Superseded": "Superseded by an expansion",
    "CapabilityContained": "Capability contained",
    "EntryDischarged": "Entry discharged by a completion event",
}


@dataclass(frozen=True)
class TimelineItem:
    position: int
    version: int
    title: str
    at: str
    actor: str
    reason: str | None
    details: list[str] = field(default_factory=list)


def timeline(history: Sequence[LoggedEvent]) -> list[TimelineItem]:
    items = []
    for logged in history:
        event = logged.event
        kind = type(event).__name__
        details: list[str] = []
        if kind == "Approved":
            details.append(f"approver {actor_text(getattr(event, 'approver', None))}")
        if kind == "Suspended" and getattr(event, "suspend_until", None) is not None:
            details.append(f"until {format_instant(event.suspend_until)}")  # type: ignore[attr-defined]
        if kind == "CapabilityContained":
            for item in getattr(event, "contained", []):
                actions = item.get("actions")
                what = ", ".join(actions) if actions else "every action"
                details.append(f"removed {what} on {item.get('resource')} and below")
        if kind == "EntryDischarged":
            details.append(f"event {getattr(event, 'event_type', '')}")
        if kind == "Superseded":
            details.append(f"successor {getattr(event, 'successor', '')}")
        items.append(
            TimelineItem(
                position=logged.position,
                version=event.originator_version,
                title=_TITLES.get(kind, kind),
                at=format_instant(event.timestamp),
                actor=actor_text(getattr(event, "actor", None)),
                reason=getattr(event, "reason", None),
                details=details,
            )
        )
    return items
