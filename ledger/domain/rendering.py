"""Authority in plain language, for approvers and inspectors.

An approver must see what they consent to, not just a name, so nothing is left out or
softened: families (``invoices.*``) are spelled out as the open-ended breadth they are,
prefix resources as everything below them, every constraint with its exact bound (one
this module has no words for is still shown, as ``key = value``), delegation, the Mission's
expiry and every control of its Intent. The sentences are pure functions of the stored
values (no clock: a countdown is the caller's).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ledger.domain.actions import FAMILY_SUFFIX, is_family
from ledger.domain.authority import AuthorityEntry


def _join(values: Sequence[object], word: str = "and") -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def _shown(value: object) -> str:
    """A value exactly as stored (JSON for structures), for anything without words."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def action_text(action: str) -> str:
    """One action: a literal as is; a family as the open-ended set it is."""
    if is_family(action):
        stem = action[: -len(FAMILY_SUFFIX)]
        return (
            f"ANY action in the {action} family (broad: every action named {stem}.something, "
            "including ones added later)"
        )
    return action


def resource_text(entry: AuthorityEntry) -> str:
    if entry.resource_match == "prefix":
        return f"{entry.resource} and everything below it"
    return f"{entry.resource} (this resource only)"


def constraint_text(key: str, value: object) -> str:
    """One constraint of an entry, with its exact bound."""
    if key == "max_amount" and isinstance(value, Mapping):
        return f"each amount at most {value.get('amount')} {value.get('currency')}"
    if key == "allowed_tools" and isinstance(value, list):
        return f"only with the tools {_join(value, 'or')}"
    if key == "recipient_domain":
        return f"only to recipients at {value} or its subdomains"
    if key == "tenant":
        return f"only in tenant {value}"
    if key == "data_classification" and isinstance(value, list):
        return f"only data classified {_join(value, 'or')}"
    if key == "time_window" and isinstance(value, Mapping):
        start, end = value.get("not_before"), value.get("not_after")
        if start and end:
            return f"only between {start} and {end}"
        return f"only from {start} on" if start else f"only until {end}"
    if key == "resource_issued_after":
        return f"only resources issued after {value}"
    if key == "resource_issued_before":
        return f"only resources issued before {value}"
    if key == "requires_action_approval" and isinstance(value, bool):
        return (
            "each action needs its own approval"
            if value
            else "no per-action approval needed (stated explicitly)"
        )
    if key == "terminal_when" and isinstance(value, list):
        events = []
        for condition in value:
            if not isinstance(condition, Mapping):
                events.append(_shown(condition))
                continue
            text = str(condition.get("event_type"))
            if condition.get("discharge_policy") is not None:
                text += f" (discharge policy {condition.get('discharge_policy')})"
            events.append(text)
        return f"ends when {_join(events, 'or')} is reported"
    return f"{key} = {_shown(value)}"


def _matchers_text(matchers: object) -> str:
    if not isinstance(matchers, list):
        return _shown(matchers)
    return " or ".join(
        ", ".join(f"{k}={v}" for k, v in sorted(m.items())) if isinstance(m, Mapping) else _shown(m)
        for m in matchers
    )


def delegation_text(delegation: Mapping[str, object] | None) -> str:
    if delegation is None:
        return "not delegable"
    text = "delegable"
    depth = delegation.get("max_depth")
    if depth is not None:
        text += f" up to depth {depth}"
    if "allowed_delegates" in delegation:
        text += " to " + _matchers_text(delegation["allowed_delegates"])
    children = delegation.get("children")
    if isinstance(children, Mapping):
        parts = [f"{key} {_shown(children[key])}" for key in sorted(children)]
        text += "; child Missions allowed (" + "; ".join(parts) + ")"
    return text


def describe_entry(entry: AuthorityEntry) -> str:
    text = f"May {_join([action_text(a) for a in entry.actions])} on {resource_text(entry)}"
    conditions = [constraint_text(key, value) for key, value in sorted(entry.constraints.items())]
    if conditions:
        text += "; " + "; ".join(conditions)
    return f"{text}; {delegation_text(entry.delegation)}."


def describe_authority(entries: Sequence[AuthorityEntry]) -> list[str]:
    return [describe_entry(entry) for entry in entries]


def control_text(name: str, value: object) -> str:
    """One control of a Mission Intent."""
    if name == "acr":
        return f"the approver must have signed in at assurance level (acr) {value}"
    if name == "max_derivations":
        return f"at most {value} Mandates may be derived from the Mission"
    return f"{name} = {_shown(value)}"


def describe_terms(*, expires_at: str, controls: Mapping[str, object] | None) -> list[str]:
    """The Mission-wide terms an approver consents to besides the entries."""
    lines = [f"The Mission ends at {expires_at} at the latest."]
    for name, value in sorted((controls or {}).items()):
        text = control_text(name, value)
        lines.append(text[:1].upper() + text[1:] + ".")
    return lines


def describe_mandate(
    *,
    mandate_id: str,
    holder: Mapping[str, object],
    subject: Mapping[str, object],
    mission_id: str,
    expires_at: str,
    state: str,
    depth: int,
    parent_mandate_id: str | None,
    entries: Sequence[AuthorityEntry],
) -> list[str]:
    """A few sentences a human can check: who holds it, for whom, until when, what it allows."""
    who = str(holder.get("client_id"))
    details = [
        f"{k} {holder[k]}" for k in ("instance_id", "sub_profile") if holder.get(k) is not None
    ]
    if details:
        who += f" ({', '.join(details)})"
    lines = [
        f"Mandate {mandate_id} lets {who} act for {subject.get('sub')} under Mission "
        f"{mission_id} until {expires_at}. It is {state}."
    ]
    if parent_mandate_id is not None:
        lines.append(f"It was delegated from Mandate {parent_mandate_id} (depth {depth}).")
    lines.extend(describe_authority(entries))
    return lines
