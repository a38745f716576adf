"""The Mission Intent: what the agent asks a human to approve.

Prose members (``goal``, ``constraints``, ``success_criteria``) are shown to the approver and
never derive, widen or gate authority. ``resources`` bounds every derived entry's resource.
``controls`` carries machine bounds. Parsing is strict: an unknown member anywhere is rejected
at its JSON Pointer. ``raw`` keeps the Intent exactly as submitted, for ``intent_hash``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import rfc8785

from ledger.domain.canonical import jcs
from ledger.domain.constraints import (
    member_pointer,
    require_array,
    require_int,
    require_money,
    require_object,
    require_string,
    validate_call_class,
)
from ledger.domain.errors import InvalidRequest, UnsupportedControl
from ledger.domain.instants import parse_instant
from ledger.domain.resources import PREFIX, normalize, resource_covers, validate_resource

MAX_GOAL_LENGTH = 4096
MAX_PROSE_LENGTH = 4096
MAX_PROSE_ITEM_LENGTH = 1024
MAX_PROSE_ITEMS = 32
MAX_RESOURCES = 64
MAX_LANG_LENGTH = 35
MAX_CONTROL_STRING_LENGTH = 256
MAX_DERIVATIONS = 1_000_000
MAX_DEPLOYMENT_MEMBERS = 8
MAX_CALL_RULES = 32
MAX_EXCLUSIVE_GROUPS = 64
MAX_DURATION_LENGTH = 64
MAX_SAFE_INTEGER = 2**53 - 1  # I-JSON / RFC 8785 integer range

_LANG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*\Z")
_DURATION = re.compile(r"^P(?!\Z)(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?\Z")

_INTENT_MEMBERS = frozenset(
    {
        "goal",
        "goal_lang",
        "resources",
        "constraints",
        "success_criteria",
        "purpose",
        "expires_at",
        "controls",
    }
)
_CONTROL_MEMBERS = frozenset(
    {
        "acr",
        "max_derivations",
        "agent_deployment",
        "max_budget",
        "max_calls",
        "max_duration",
        "max_egress_volume",
        "exclusive",
    }
)
_EGRESS_MEMBERS = frozenset({"bytes", "messages"})


@dataclass(frozen=True)
class Intent:
    """A parsed Mission Intent. ``expires_at`` is the requested ceiling (UTC)."""

    goal: str
    resources: tuple[str, ...]
    expires_at: datetime
    raw: Mapping[str, object] = field(default_factory=dict, hash=False)


def _parse_resources(value: object, pointer: str) -> tuple[str, ...]:
    items = require_array(value, pointer, max_items=MAX_RESOURCES)
    resources: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        resource = validate_resource(item, at, hierarchical=False)
        key = normalize(resource)
        if key in seen:
            raise InvalidRequest.at(at, f"duplicate resource {resource[:64]!r}")
        seen.add(key)
        resources.append(resource)
    return tuple(resources)


def _parse_prose_constraints(value: object, pointer: str) -> None:
    if isinstance(value, str):
        require_string(value, pointer, max_length=MAX_PROSE_LENGTH)
        return
    if not isinstance(value, list | tuple):
        raise InvalidRequest.at(pointer, "must be a string or an array of strings")
    items = require_array(value, pointer, max_items=MAX_PROSE_ITEMS)
    for index, item in enumerate(items):
        require_string(item, member_pointer(pointer, index), max_length=MAX_PROSE_ITEM_LENGTH)


def _parse_agent_deployment(value: object, pointer: str) -> None:
    if not isinstance(value, Mapping):
        raise InvalidRequest.at(pointer, "must be a JSON object")
    if len(value) > MAX_DEPLOYMENT_MEMBERS:
        raise InvalidRequest.at(pointer, f"must have at most {MAX_DEPLOYMENT_MEMBERS} members")
    for name, item in value.items():
        require_string(
            item, member_pointer(pointer, str(name)), max_length=MAX_CONTROL_STRING_LENGTH
        )


def _parse_max_calls(value: object, pointer: str) -> None:
    """An integer (every metered call) or ``[{call_class, max}]`` (per class, each once)."""
    if isinstance(value, int) and not isinstance(value, bool):
        require_int(value, pointer, minimum=0, maximum=MAX_SAFE_INTEGER)
        return
    if not isinstance(value, list | tuple):
        raise InvalidRequest.at(pointer, "must be an integer or an array of {call_class, max}")
    items = require_array(value, pointer, max_items=MAX_CALL_RULES)
    seen: set[str] = set()
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        rule = require_object(
            item,
            at,
            allowed=frozenset({"call_class", "max"}),
            required=frozenset({"call_class", "max"}),
        )
        name = validate_call_class(rule["call_class"], member_pointer(at, "call_class"))
        if name in seen:
            raise InvalidRequest.at(member_pointer(at, "call_class"), f"duplicate class {name!r}")
        seen.add(name)
        require_int(rule["max"], member_pointer(at, "max"), minimum=0, maximum=MAX_SAFE_INTEGER)


def _parse_max_duration(value: object, pointer: str) -> None:
    text = require_string(value, pointer, max_length=MAX_DURATION_LENGTH)
    if _DURATION.match(text) is None:
        raise InvalidRequest.at(pointer, "must be an ISO 8601 duration such as P1D or PT30M")


def _parse_egress(value: object, pointer: str) -> None:
    egress = require_object(value, pointer, allowed=_EGRESS_MEMBERS)
    for name, item in egress.items():
        require_int(item, member_pointer(pointer, name), minimum=0, maximum=MAX_SAFE_INTEGER)


def _parse_exclusive(value: object, pointer: str) -> None:
    items = require_array(value, pointer, max_items=MAX_EXCLUSIVE_GROUPS, min_items=0)
    for index, item in enumerate(items):
        require_string(item, member_pointer(pointer, index), max_length=MAX_CONTROL_STRING_LENGTH)


#: The controls a decision or an approval enforces today (SPEC 7.3 "no inert controls"):
#: ``acr`` (what the approver must meet), ``max_derivations`` (how many Mandates), and the
#: metered ``max_budget`` and ``max_calls`` (``ledger.domain.metering``). The others are
#: parsed, so a well-formed Intent still hashes as the drafts say, but a proposal carrying one
#: is refused (``refuse_unenforced_controls``) until something enforces it.
ENFORCED_CONTROLS = frozenset({"acr", "max_derivations", "max_budget", "max_calls"})


def _parse_controls(value: object, pointer: str) -> None:
    if isinstance(value, Mapping):
        for name in value:
            if name not in _CONTROL_MEMBERS:
                raise UnsupportedControl.at(
                    member_pointer(pointer, str(name)),
                    f"unknown control {str(name)[:64]!r}: nothing enforces it",
                )
    controls = require_object(value, pointer, allowed=_CONTROL_MEMBERS)

    def at(name: str) -> str:
        return member_pointer(pointer, name)

    if "acr" in controls:
        require_string(controls["acr"], at("acr"), max_length=MAX_CONTROL_STRING_LENGTH)
    if "max_derivations" in controls:
        require_int(
            controls["max_derivations"], at("max_derivations"), minimum=1, maximum=MAX_DERIVATIONS
        )
    if "agent_deployment" in controls:
        _parse_agent_deployment(controls["agent_deployment"], at("agent_deployment"))
    if "max_budget" in controls:
        require_money(controls["max_budget"], at("max_budget"))
    if "max_calls" in controls:
        _parse_max_calls(controls["max_calls"], at("max_calls"))
    if "max_duration" in controls:
        _parse_max_duration(controls["max_duration"], at("max_duration"))
    if "max_egress_volume" in controls:
        _parse_egress(controls["max_egress_volume"], at("max_egress_volume"))
    if "exclusive" in controls:
        _parse_exclusive(controls["exclusive"], at("exclusive"))


def refuse_unenforced_controls(intent: Intent, pointer: str = "/intent") -> None:
    """Refuse an Intent whose ``controls`` name a bound this release does not enforce."""
    controls = intent.raw.get("controls")
    if not isinstance(controls, Mapping):
        return
    for name in controls:
        if name not in ENFORCED_CONTROLS:
            raise UnsupportedControl.at(
                member_pointer(member_pointer(pointer, "controls"), str(name)),
                f"{name!r} is not enforced by this release: remove it (an approver would "
                "be shown a bound that nothing enforces)",
            )


def parse_intent(value: object, pointer: str = "/intent") -> Intent:
    """Parse a Mission Intent located at ``pointer``."""
    obj = require_object(
        value,
        pointer,
        allowed=_INTENT_MEMBERS,
        required=frozenset({"goal", "resources", "expires_at"}),
    )

    def at(name: str) -> str:
        return member_pointer(pointer, name)

    goal = require_string(obj["goal"], at("goal"), max_length=MAX_GOAL_LENGTH)
    if not goal.strip():
        raise InvalidRequest.at(at("goal"), "must not be blank")
    if "goal_lang" in obj:
        lang = require_string(obj["goal_lang"], at("goal_lang"), max_length=MAX_LANG_LENGTH)
        if _LANG.match(lang) is None:
            raise InvalidRequest.at(at("goal_lang"), "must be a BCP 47 language tag")
    resources = _parse_resources(obj["resources"], at("resources"))
    if "constraints" in obj:
        _parse_prose_constraints(obj["constraints"], at("constraints"))
    if "success_criteria" in obj:
        require_string(obj["success_criteria"], at("success_criteria"), max_length=MAX_PROSE_LENGTH)
    if "purpose" in obj:
        validate_resource(obj["purpose"], at("purpose"), hierarchical=False)
    expires_at = parse_instant(obj["expires_at"], at("expires_at"))
    if "controls" in obj:
        _parse_controls(obj["controls"], at("controls"))
    try:
        jcs(obj)
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRequest.at(pointer, f"cannot be canonicalised (RFC 8785): {exc}") from None
    return Intent(
        goal=goal, resources=resources, expires_at=expires_at, raw=copy.deepcopy(dict(obj))
    )


def resource_in_intent(intent: Intent, resource_uri: str) -> bool:
    """The URI is one of the Intent's resources or lies below one at a path-segment boundary."""
    return any(resource_covers(resource, PREFIX, resource_uri) for resource in intent.resources)
