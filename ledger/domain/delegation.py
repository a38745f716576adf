"""Attenuation rules for Execution Mandates: grants, delegation and narrowing.

Every derived authority is a subset of its ceiling (domain.md 2.5):

* a root Mandate's entries lie within the Mission's *Effective* Authority Set;
* a delegated Mandate's entries lie within entries of its parent that opted into
  delegation (``delegation`` policy), at a depth no greater than that entry's
  ``max_depth`` (the approved agent is depth 0; each delegate adds one), for a
  delegate the entry's ``allowed_delegates`` admit, bound to a key of its own;
* narrowing only removes.

Every refusal names the offending entry and rule (``AuthorityExceeded``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.domain.actions import action_within
from ledger.domain.authority import (
    AuthorityEntry,
    ContainedCapability,
    entry_within,
    parse_authority_set,
)
from ledger.domain.errors import AuthorityExceeded, FieldError, InvalidRequest
from ledger.domain.resources import resource_covers

JKT_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}\Z")
MAX_DELEGATION_DEPTH = 16


@dataclass(frozen=True)
class ActorRef:
    """The concrete agent (runtime instance) that holds a Mandate."""

    client_id: str
    instance_id: str | None = None
    sub_profile: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"client_id": self.client_id}
        if self.instance_id is not None:
            out["instance_id"] = self.instance_id
        if self.sub_profile is not None:
            out["sub_profile"] = self.sub_profile
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ActorRef:
        return cls(
            client_id=str(value["client_id"]),
            instance_id=value.get("instance_id"),
            sub_profile=value.get("sub_profile"),
        )

    def matches(self, matcher: Mapping[str, object]) -> bool:
        """An ``allowed_delegates`` matcher admits this actor when every member it names
        equals the actor's attribute (``sub`` is the actor's RFC 8693 subject: its
        client_id). A member the actor cannot show (``iss``) never matches: fail closed."""
        attributes = {
            "client_id": self.client_id,
            "sub": self.client_id,
            "instance_id": self.instance_id,
            "sub_profile": self.sub_profile,
        }
        return all(attributes.get(key) == value for key, value in matcher.items())


def validate_jkt(value: object, pointer: str = "/cnf/jkt") -> str:
    """An RFC 7638 JWK SHA-256 thumbprint: 43 base64url characters."""
    if not isinstance(value, str) or not JKT_PATTERN.match(value):
        raise InvalidRequest.at(pointer, "must be an RFC 7638 SHA-256 JWK thumbprint (base64url)")
    return value


def _refuse(index: int, reason: str, pointer: str = "/authorization_details") -> AuthorityExceeded:
    at = f"{pointer}/{index}"
    return AuthorityExceeded(
        f"authorization_details[{index}]: {reason}", errors=(FieldError(at, reason),)
    )


def check_grant(requested: Sequence[AuthorityEntry], effective: Sequence[AuthorityEntry]) -> None:
    """A root Mandate may carry only what the Mission's Effective Authority Set holds."""
    for index, entry in enumerate(requested):
        if not effective:
            raise _refuse(index, "the Mission has no effective authority left")
        reasons = [entry_within(entry, ceiling) for ceiling in effective]
        if all(reason is not None for reason in reasons):
            raise _refuse(index, _best(entry, effective, reasons, "the Mission's authority"))


def check_delegation(
    requested: Sequence[AuthorityEntry],
    parent: Sequence[AuthorityEntry],
    *,
    depth: int,
    delegate: ActorRef,
) -> None:
    """A delegated Mandate: each entry within a delegable parent entry that admits the
    delegate at this depth."""
    if depth > MAX_DELEGATION_DEPTH:
        raise AuthorityExceeded(f"delegation depth {depth} exceeds the limit of 16")
    for index, entry in enumerate(requested):
        problems: list[str] = []
        for ceiling in parent:
            reason = entry_within(entry, ceiling)
            if reason is not None:
                problems.append(reason)
                continue
            policy = ceiling.delegation
            if policy is None:
                problems.append(
                    f"the parent's entry for {ceiling.resource} is not delegable "
                    "(it has no delegation policy)"
                )
                continue
            max_depth = policy.get("max_depth")
            if isinstance(max_depth, int) and depth > max_depth:
                problems.append(f"delegation depth {depth} exceeds max_depth {max_depth}")
                continue
            allowed = policy.get("allowed_delegates")
            if isinstance(allowed, list) and not any(
                isinstance(m, Mapping) and delegate.matches(m) for m in allowed
            ):
                problems.append(
                    f"delegate {delegate.to_json()} matches none of allowed_delegates {allowed}"
                )
                continue
            break
        else:
            raise _refuse(index, _closest(problems) if problems else "the parent holds nothing")


def delegable_entries(parent: Sequence[AuthorityEntry]) -> list[AuthorityEntry]:
    return [entry for entry in parent if entry.delegation is not None]


def restrict(
    entries: Sequence[AuthorityEntry], ceiling: Sequence[AuthorityEntry]
) -> list[dict[str, Any]]:
    """Keep the entries that are still within ``ceiling`` (removal only)."""
    return [
        dict(entry.raw) for entry in entries if any(entry_within(entry, c) is None for c in ceiling)
    ]


def without_contained(
    entries: Sequence[AuthorityEntry], contained: Sequence[ContainedCapability]
) -> list[dict[str, Any]]:
    """Remove contained capability: actions overlapping a containment item that covers an
    entry's whole resource go; an entry left without actions goes. Containment of part of
    an entry's resource cannot be written as an entry and is enforced at evaluation."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        actions = list(entry.actions)
        for item in contained:
            if not resource_covers(item.resource, "prefix", entry.resource):
                continue
            if item.actions is None:
                actions = []
            else:
                actions = [
                    a
                    for a in actions
                    if not any(action_within(a, r) or action_within(r, a) for r in item.actions)
                ]
        if actions:
            raw = dict(entry.raw)
            raw["actions"] = actions
            out.append(raw)
    return out


def parse_entries(raw: Sequence[Mapping[str, Any]]) -> tuple[AuthorityEntry, ...]:
    return parse_authority_set(list(raw)) if raw else ()


def _best(
    entry: AuthorityEntry,
    ceilings: Sequence[AuthorityEntry],
    reasons: Sequence[str | None],
    what: str,
) -> str:
    for ceiling, reason in zip(ceilings, reasons, strict=True):
        if reason is not None and ceiling.resource == entry.resource:
            return reason
    return f"{entry.resource} {list(entry.actions)} is not within {what}"


def _closest(problems: Sequence[str]) -> str:
    """Prefer a policy reason (depth, delegates, not delegable) over a plain subset miss."""
    for marker in ("max_depth", "allowed_delegates", "not delegable"):
        for problem in problems:
            if marker in problem:
                return problem
    return problems[0]
