"""Authority in plain language, for approvers and inspectors.

Families (``invoices.*``) and prefix resources are spelled out as the breadth they
are, because an approver must see what they consent to, not just a name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.domain.actions import is_family
from ledger.domain.authority import AuthorityEntry


def _join(values: Sequence[str]) -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _action_text(action: str) -> str:
    if is_family(action):
        return f"ANY action in the {action} family (broad)"
    return action


def _constraint_text(key: str, value: object) -> str:
    if key == "max_amount" and isinstance(value, Mapping):
        return f"amounts up to {value.get('amount')} {value.get('currency')}"
    if key == "allowed_tools" and isinstance(value, list):
        return f"only with the tools {_join(value)}"
    if key == "recipient_domain":
        return f"only to recipients at {value} or its subdomains"
    if key == "tenant":
        return f"only in tenant {value}"
    if key == "data_classification" and isinstance(value, list):
        return f"only data classified {_join(value)}"
    if key == "time_window" and isinstance(value, Mapping):
        start, end = value.get("not_before"), value.get("not_after")
        if start and end:
            return f"only between {start} and {end}"
        return f"only after {start}" if start else f"only before {end}"
    if key == "resource_issued_after":
        return f"only resources issued after {value}"
    if key == "resource_issued_before":
        return f"only resources issued before {value}"
    if key == "requires_action_approval" and value is True:
        return "each action needs its own approval"
    if key == "terminal_when" and isinstance(value, list):
        events = [str(c.get("event_type")) for c in value if isinstance(c, Mapping)]
        return f"ends when {_join(events)} happens"
    if key == "call_class":
        return f"each call counts as a {value!r} call against the Mission's max_calls"
    return f"{key} = {value}"


def describe_entry(entry: AuthorityEntry) -> str:
    where = entry.resource
    if entry.resource_match == "prefix":
        where = f"{entry.resource} and everything below it"
    text = f"May {_join([_action_text(a) for a in entry.actions])} on {where}"
    conditions = [
        _constraint_text(key, value)
        for key, value in sorted(entry.constraints.items())
        if not (key == "requires_action_approval" and value is False)
    ]
    if conditions:
        text += "; " + "; ".join(conditions)
    if entry.delegation is None:
        text += "; not delegable"
    else:
        depth = entry.delegation.get("max_depth")
        who = entry.delegation.get("allowed_delegates")
        text += "; delegable"
        if depth is not None:
            text += f" up to depth {depth}"
        if isinstance(who, list):
            text += " to " + " or ".join(
                ", ".join(f"{k}={v}" for k, v in sorted(m.items()))
                for m in who
                if isinstance(m, Mapping)
            )
    return text + "."


def describe_authority(entries: Sequence[AuthorityEntry]) -> list[str]:
    return [describe_entry(entry) for entry in entries]


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
