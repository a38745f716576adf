"""Authority Set entries (RFC 9396 ``authorization_details`` of type ``mission_resource_access``).

Parsing is strict (unknown members are rejected at their JSON Pointer) and keeps each entry
exactly as submitted in ``raw``: hashes and responses use that, never a re-serialisation with
defaults filled in. The subset rule (``entry_within``/``set_within``) is structural: resource
within, every action within some ceiling action, every ceiling constraint present and no
broader, delegation no broader. Containment is a removal-only overlay of ``{resource,
actions?}`` items that remove a resource and everything below it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import rfc8785

from ledger.domain.actions import ActionMatcher, action_covers, action_within, validate_action
from ledger.domain.canonical import jcs
from ledger.domain.constraints import (
    constraints_within,
    member_pointer,
    require_array,
    require_int,
    require_object,
    require_string,
    validate_constraints,
)
from ledger.domain.errors import AuthorityExceeded, FieldError, InvalidRequest
from ledger.domain.resources import (
    EXACT,
    MATCH_MODES,
    PREFIX,
    RequestURI,
    ResourceMatcher,
    normalize,
    resource_covers,
    resource_within,
    validate_resource,
)

ENTRY_TYPE = "mission_resource_access"

MAX_ENTRIES = 64
MAX_ACTIONS = 64
MAX_DEPTH = 16
MAX_MATCHERS = 16
MAX_MATCHER_VALUE_LENGTH = 256
MAX_CHILD_LIMIT = 1_000_000
MAX_CONTAINED = 64
DEFAULT_MAX_CHILD_DEPTH = 1

_ENTRY_MEMBERS = frozenset(
    {"type", "resource", "resource_match", "actions", "constraints", "delegation"}
)
_DELEGATION_MEMBERS = frozenset({"max_depth", "allowed_delegates", "children"})
_CHILDREN_MEMBERS = frozenset(
    {"max_children", "max_child_depth", "allowed_child_actors", "child_creation_policy"}
)
# ``sub`` (and ``iss``) match an actor's RFC 8693 ``act`` identity (for our actors, ``sub`` is
# the client_id); the drafts' own vectors use ``{"sub": ...}`` matchers.
_MATCHER_MEMBERS = frozenset({"sub_profile", "client_id", "instance_id", "sub", "iss"})
_CONTAINED_MEMBERS = frozenset({"resource", "actions"})


@dataclass(frozen=True, kw_only=True)
class AuthorityEntry:
    """One parsed ``mission_resource_access`` entry; ``raw`` is the entry as submitted."""

    resource: str
    resource_match: str = EXACT
    actions: tuple[str, ...]
    constraints: Mapping[str, object] = field(default_factory=dict, hash=False)
    delegation: Mapping[str, object] | None = field(default=None, hash=False)
    raw: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ContainedCapability:
    """One containment item: ``resource`` and everything below it, for ``actions`` (all if None)."""

    resource: str
    actions: tuple[str, ...] | None
    raw: Mapping[str, object] = field(default_factory=dict, hash=False)


# --------------------------------------------------------------------------- parsing


def _parse_actions(value: object, pointer: str, *, max_items: int) -> tuple[str, ...]:
    items = require_array(value, pointer, max_items=max_items)
    actions: list[str] = []
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        action = validate_action(item, at)
        if action in actions:
            raise InvalidRequest.at(at, f"duplicate action {action!r}")
        actions.append(action)
    return tuple(actions)


def _parse_matchers(value: object, pointer: str) -> None:
    items = require_array(value, pointer, max_items=MAX_MATCHERS)
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        matcher = require_object(item, at, allowed=_MATCHER_MEMBERS)
        if not matcher:
            raise InvalidRequest.at(
                at, "a matcher needs at least one of sub_profile, client_id, instance_id"
            )
        for name, member in matcher.items():
            require_string(member, member_pointer(at, name), max_length=MAX_MATCHER_VALUE_LENGTH)


def _parse_children(value: object, pointer: str) -> None:
    children = require_object(value, pointer, allowed=_CHILDREN_MEMBERS)
    for name in ("max_children", "max_child_depth"):
        if name in children:
            require_int(
                children[name], member_pointer(pointer, name), minimum=1, maximum=MAX_CHILD_LIMIT
            )
    if "allowed_child_actors" in children:
        _parse_matchers(
            children["allowed_child_actors"], member_pointer(pointer, "allowed_child_actors")
        )
    if "child_creation_policy" in children:
        require_string(
            children["child_creation_policy"],
            member_pointer(pointer, "child_creation_policy"),
            max_length=MAX_MATCHER_VALUE_LENGTH,
        )


def _parse_delegation(value: object, pointer: str) -> None:
    delegation = require_object(value, pointer, allowed=_DELEGATION_MEMBERS)
    if "max_depth" in delegation:
        require_int(
            delegation["max_depth"],
            member_pointer(pointer, "max_depth"),
            minimum=0,
            maximum=MAX_DEPTH,
        )
    if "allowed_delegates" in delegation:
        _parse_matchers(
            delegation["allowed_delegates"], member_pointer(pointer, "allowed_delegates")
        )
    if "children" in delegation:
        _parse_children(delegation["children"], member_pointer(pointer, "children"))


def _require_jcs(value: object, pointer: str) -> None:
    try:
        jcs(value)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRequest.at(pointer, f"cannot be canonicalised (RFC 8785): {exc}") from None


def parse_entry(value: object, pointer: str) -> AuthorityEntry:
    """Parse one ``mission_resource_access`` entry located at ``pointer``."""
    obj = require_object(
        value, pointer, allowed=_ENTRY_MEMBERS, required=frozenset({"type", "resource", "actions"})
    )
    if obj["type"] != ENTRY_TYPE:
        raise InvalidRequest.at(member_pointer(pointer, "type"), f"must be {ENTRY_TYPE!r}")
    match = obj.get("resource_match", EXACT)
    if not isinstance(match, str) or match not in MATCH_MODES:
        raise InvalidRequest.at(
            member_pointer(pointer, "resource_match"), "must be 'exact' or 'prefix'"
        )
    resource = validate_resource(
        obj["resource"], member_pointer(pointer, "resource"), hierarchical=match == PREFIX
    )
    actions = _parse_actions(
        obj["actions"], member_pointer(pointer, "actions"), max_items=MAX_ACTIONS
    )
    if "constraints" in obj:
        validate_constraints(obj["constraints"], member_pointer(pointer, "constraints"))
    if "delegation" in obj:
        _parse_delegation(obj["delegation"], member_pointer(pointer, "delegation"))
    _require_jcs(obj, pointer)
    raw: dict[str, object] = copy.deepcopy(dict(obj))
    constraints = raw.get("constraints")
    delegation = raw.get("delegation")
    return AuthorityEntry(
        resource=resource,
        resource_match=match,
        actions=actions,
        constraints=constraints if isinstance(constraints, dict) else {},
        delegation=delegation if isinstance(delegation, dict) else None,
        raw=raw,
    )


def parse_authority_set(
    value: object, pointer: str = "/authorization_details", *, max_entries: int = MAX_ENTRIES
) -> tuple[AuthorityEntry, ...]:
    """Parse a non-empty array of Authority Set entries."""
    items = require_array(value, pointer, max_items=max_entries)
    return tuple(
        parse_entry(item, member_pointer(pointer, index)) for index, item in enumerate(items)
    )


def authority_json(entries: Sequence[AuthorityEntry]) -> list[dict[str, object]]:
    """The entries as submitted (fresh copies): what hashes cover and responses echo."""
    return [copy.deepcopy(dict(entry.raw)) for entry in entries]


# --------------------------------------------------------------------------- subset rule


def _matcher_within(candidate: Mapping[str, object], ceiling: Mapping[str, object]) -> bool:
    """A matcher is narrower when it keeps every key/value pair of the ceiling's matcher."""
    return all(key in candidate and candidate[key] == value for key, value in ceiling.items())


def _matchers(value: object) -> list[Mapping[str, object]]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _matchers_within(
    name: str, candidate: Mapping[str, object], ceiling: Mapping[str, object]
) -> str | None:
    if name not in ceiling:
        return None  # the ceiling does not restrict actors
    if name not in candidate:
        return f"{name} is absent (the ceiling restricts it)"
    ceiling_matchers = _matchers(ceiling[name])
    for index, matcher in enumerate(_matchers(candidate[name])):
        if not any(_matcher_within(matcher, limit) for limit in ceiling_matchers):
            return f"{name}[{index}] {dict(matcher)} matches actors the ceiling does not allow"
    return None


def _limit_within(
    name: str,
    candidate: Mapping[str, object],
    ceiling: Mapping[str, object],
    default: int | None = None,
) -> str | None:
    limit = ceiling.get(name, default)
    if not isinstance(limit, int):
        return None
    value = candidate.get(name, default)
    if not isinstance(value, int):
        return f"{name} is absent (the ceiling limits it to {limit})"
    if value > limit:
        return f"{name} {value} exceeds {limit}"
    return None


def _children_within(candidate: object, ceiling: object) -> str | None:
    if candidate is None:
        return None
    if not isinstance(ceiling, Mapping):
        return "children is not permitted (the ceiling allows no child Missions)"
    if not isinstance(candidate, Mapping):
        return "children is malformed"
    for reason in (
        _limit_within("max_children", candidate, ceiling),
        _limit_within("max_child_depth", candidate, ceiling, DEFAULT_MAX_CHILD_DEPTH),
        _matchers_within("allowed_child_actors", candidate, ceiling),
    ):
        if reason is not None:
            return f"children.{reason}"
    if candidate.get("child_creation_policy") != ceiling.get("child_creation_policy"):
        return "children.child_creation_policy differs from the ceiling's"
    return None


def delegation_within(
    candidate: Mapping[str, object] | None, ceiling: Mapping[str, object] | None
) -> str | None:
    """``None`` when the candidate delegation policy is no broader than the ceiling's."""
    if candidate is None:
        return None
    if ceiling is None:
        return "delegation is not permitted (the ceiling entry has no delegation policy)"
    for reason in (
        _limit_within("max_depth", candidate, ceiling),
        _matchers_within("allowed_delegates", candidate, ceiling),
        _children_within(candidate.get("children"), ceiling.get("children")),
    ):
        if reason is not None:
            return f"delegation.{reason}"
    return None


def _match_text(entry: AuthorityEntry) -> str:
    return f"{entry.resource!r} ({entry.resource_match})"


def entry_within(candidate: AuthorityEntry, ceiling: AuthorityEntry) -> str | None:
    """``None`` when ``candidate`` is within ``ceiling``; otherwise a precise reason."""
    if not resource_within(
        candidate.resource, candidate.resource_match, ceiling.resource, ceiling.resource_match
    ):
        return f"resource {_match_text(candidate)} is not within {_match_text(ceiling)}"
    for action in candidate.actions:
        if not any(action_within(action, limit) for limit in ceiling.actions):
            return f"action {action!r} is not within {list(ceiling.actions)}"
    reason = constraints_within(candidate.constraints, ceiling.constraints)
    if reason is not None:
        return reason
    return delegation_within(candidate.delegation, ceiling.delegation)


def _same_resource(candidate: AuthorityEntry, ceiling: AuthorityEntry) -> bool:
    try:
        same = normalize(candidate.resource) == normalize(ceiling.resource)
    except ValueError:
        return False
    return same and candidate.resource_match == ceiling.resource_match


def _closest_reason(candidate: AuthorityEntry, ceilings: Sequence[AuthorityEntry]) -> str:
    """The reason from the most comparable ceiling: same resource, else one containing it."""
    containing: str | None = None
    for ceiling in ceilings:
        reason = entry_within(candidate, ceiling) or "not within"
        if _same_resource(candidate, ceiling):
            return reason
        if containing is None and resource_within(
            candidate.resource, candidate.resource_match, ceiling.resource, ceiling.resource_match
        ):
            containing = reason
    if containing is not None:
        return containing
    return f"resource {_match_text(candidate)} is not within any ceiling entry"


def set_within(
    candidates: Sequence[AuthorityEntry],
    ceilings: Sequence[AuthorityEntry],
    pointer: str = "/authorization_details",
) -> None:
    """Every candidate entry must be within at least one ceiling entry.

    Raises ``AuthorityExceeded`` naming the first offending candidate (``<pointer>/<index>``).
    """
    for index, candidate in enumerate(candidates):
        if any(entry_within(candidate, ceiling) is None for ceiling in ceilings):
            continue
        at = member_pointer(pointer, index)
        reason = _closest_reason(candidate, ceilings)
        raise AuthorityExceeded(f"{at}: {reason}", errors=(FieldError(at, reason),))


def entry_covers(entry: AuthorityEntry, resource_uri: str, action: str) -> bool:
    """Whether one entry covers one concrete (resource, action) pair."""
    return resource_covers(entry.resource, entry.resource_match, resource_uri) and any(
        action_covers(granted, action) for granted in entry.actions
    )


# --------------------------------------------------------------------------- containment


def parse_containment(
    value: object, pointer: str = "/contained"
) -> tuple[ContainedCapability, ...]:
    """Parse a non-empty array of ``{resource, actions?}`` containment items."""
    items = require_array(value, pointer, max_items=MAX_CONTAINED)
    out: list[ContainedCapability] = []
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        obj = require_object(item, at, allowed=_CONTAINED_MEMBERS, required=frozenset({"resource"}))
        resource = validate_resource(
            obj["resource"], member_pointer(at, "resource"), hierarchical=False
        )
        actions = None
        if "actions" in obj:
            actions = _parse_actions(
                obj["actions"], member_pointer(at, "actions"), max_items=MAX_ACTIONS
            )
        out.append(ContainedCapability(resource, actions, copy.deepcopy(dict(obj))))
    return tuple(out)


def contained_covers(item: ContainedCapability, resource_uri: str, action: str) -> bool:
    """Whether a containment item removes (resource, action): its resource and all below."""
    if not resource_covers(item.resource, PREFIX, resource_uri):
        return False
    return item.actions is None or any(action_covers(removed, action) for removed in item.actions)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class CompiledEntry:
    """An entry prepared for repeated evaluation: resource normalised once, actions indexed.

    ``covers`` answers exactly what ``entry_covers`` answers, for a request URI parsed once
    with ``parse_request`` and an action checked once with ``is_concrete``.
    """

    entry: AuthorityEntry
    resource: ResourceMatcher
    actions: ActionMatcher

    @classmethod
    def of(cls, entry: AuthorityEntry) -> CompiledEntry:
        return cls(
            entry,
            ResourceMatcher.of(entry.resource, entry.resource_match),
            ActionMatcher(entry.actions),
        )

    def covers(self, request: RequestURI | None, action: str) -> bool:
        return self.resource.covers(request) and self.actions.covers(action)


@dataclass(frozen=True)
class CompiledContainment:
    """A containment item prepared for repeated evaluation (prefix semantics)."""

    item: ContainedCapability
    resource: ResourceMatcher
    actions: ActionMatcher | None

    @classmethod
    def of(cls, item: ContainedCapability) -> CompiledContainment:
        matcher = None if item.actions is None else ActionMatcher(item.actions)
        return cls(item, ResourceMatcher.of(item.resource, PREFIX), matcher)

    def covers(self, request: RequestURI | None, action: str) -> bool:
        if not self.resource.covers(request):
            return False
        return self.actions is None or self.actions.covers(action)


def compile_entries(entries: Sequence[AuthorityEntry]) -> tuple[CompiledEntry, ...]:
    return tuple(CompiledEntry.of(entry) for entry in entries)


def compile_containment(items: Sequence[ContainedCapability]) -> tuple[CompiledContainment, ...]:
    return tuple(CompiledContainment.of(item) for item in items)
