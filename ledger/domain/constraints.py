"""Common Constraints: value syntax, the subset rule, and evaluation at use time.

Every comparison happens in value space: decimals with exact ``Decimal`` arithmetic (``"500"``
equals ``"500.00"``), instants normalised to UTC, DNS names case-insensitively without a
trailing dot. Anything incomparable refuses; an unknown key fails closed.

The small JSON-shape helpers at the top (pointers, objects, strings, arrays, integers) are
shared by the other request parsers of the domain (authority, intent).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ledger.domain.errors import InvalidRequest, UnsupportedControl
from ledger.domain.instants import format_instant, parse_instant

# --------------------------------------------------------------------------- JSON shapes


def member_pointer(pointer: str, token: str | int) -> str:
    """``pointer`` extended by one reference token, escaped per RFC 6901."""
    text = str(token).replace("~", "~0").replace("/", "~1")
    return f"{pointer}/{text}"


def require_object(
    value: object,
    pointer: str,
    *,
    allowed: frozenset[str],
    required: frozenset[str] = frozenset(),
) -> Mapping[str, object]:
    """A JSON object whose members are all ``allowed`` and include every ``required`` one."""
    if not isinstance(value, Mapping):
        raise InvalidRequest.at(pointer, "must be a JSON object")
    for name in value:
        if not isinstance(name, str) or name not in allowed:
            raise InvalidRequest.at(member_pointer(pointer, str(name)), "unknown member")
    for name in sorted(required):
        if name not in value:
            raise InvalidRequest.at(member_pointer(pointer, name), "is required")
    return value


def require_string(value: object, pointer: str, *, max_length: int, min_length: int = 1) -> str:
    """A string of ``min_length``..``max_length`` characters."""
    if not isinstance(value, str):
        raise InvalidRequest.at(pointer, "must be a string")
    if len(value) < min_length:
        raise InvalidRequest.at(pointer, "must not be empty")
    if len(value) > max_length:
        raise InvalidRequest.at(pointer, f"must be at most {max_length} characters")
    return value


def require_array(
    value: object, pointer: str, *, max_items: int, min_items: int = 1
) -> Sequence[object]:
    """A JSON array of ``min_items``..``max_items`` items."""
    if not isinstance(value, list | tuple):
        raise InvalidRequest.at(pointer, "must be a JSON array")
    if len(value) < min_items:
        raise InvalidRequest.at(
            pointer, "must not be empty" if min_items == 1 else f"needs at least {min_items} items"
        )
    if len(value) > max_items:
        raise InvalidRequest.at(pointer, f"must have at most {max_items} items")
    return value


def require_int(value: object, pointer: str, *, minimum: int, maximum: int) -> int:
    """An integer (never a boolean) in ``minimum``..``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest.at(pointer, "must be an integer")
    if not minimum <= value <= maximum:
        raise InvalidRequest.at(pointer, f"must be between {minimum} and {maximum}")
    return value


def require_unique_strings(
    value: object, pointer: str, *, max_items: int, max_length: int
) -> tuple[str, ...]:
    """A non-empty array of unique non-empty strings."""
    items = require_array(value, pointer, max_items=max_items)
    texts: list[str] = []
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        text = require_string(item, at, max_length=max_length)
        if text in texts:
            raise InvalidRequest.at(at, f"duplicate value {text[:64]!r}")
        texts.append(text)
    return tuple(texts)


# --------------------------------------------------------------------------- value syntax

DECIMAL_PATTERN = re.compile(r"^[0-9]+(\.[0-9]{1,18})?\Z")
CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}\Z")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")

MAX_AMOUNT = "max_amount"
RESOURCE_ISSUED_AFTER = "resource_issued_after"
RESOURCE_ISSUED_BEFORE = "resource_issued_before"
TENANT = "tenant"
RECIPIENT_DOMAIN = "recipient_domain"
TIME_WINDOW = "time_window"
DATA_CLASSIFICATION = "data_classification"
ALLOWED_TOOLS = "allowed_tools"
REQUIRES_ACTION_APPROVAL = "requires_action_approval"
TERMINAL_WHEN = "terminal_when"
CALL_CLASS = "call_class"

MAX_STRING_SET_ITEMS = 64
MAX_STRING_SET_LENGTH = 128
MAX_TENANT_LENGTH = 256
MAX_TERMINAL_CONDITIONS = 64
MAX_EVENT_TYPE_LENGTH = 2048
MAX_CALL_CLASS_LENGTH = 128


#: The grammar sets no bound on the integer digits; this service takes at most this many (no
#: amount needs more, and Python turns at most 4,300 digits into an integer: a longer amount
#: once failed a decision with a server error).
MAX_INTEGER_DIGITS = 36
DECIMAL_RULE = (
    f"must be a decimal string: up to {MAX_INTEGER_DIGITS} digits, "
    "then optionally a point and 1 to 18 digits"
)


def is_decimal(text: str) -> bool:
    """``text`` is a decimal string of the Common Constraints grammar (``DECIMAL_PATTERN``: no
    sign, exponent or separators) with at most ``MAX_INTEGER_DIGITS`` integer digits."""
    return (
        DECIMAL_PATTERN.match(text) is not None
        and len(text.partition(".")[0]) <= MAX_INTEGER_DIGITS
    )


def parse_decimal(value: object) -> Decimal | None:
    """The exact value of a decimal string (``is_decimal``), else ``None``."""
    if not isinstance(value, str) or not is_decimal(value):
        return None
    return Decimal(value)


def require_decimal(value: object, pointer: str) -> Decimal:
    """A decimal string (``is_decimal``)."""
    parsed = parse_decimal(value)
    if parsed is None:
        raise InvalidRequest.at(pointer, DECIMAL_RULE)
    return parsed


def require_currency(value: object, pointer: str) -> str:
    """An ISO 4217 alphabetic code (three capital letters)."""
    if not isinstance(value, str) or CURRENCY_PATTERN.match(value) is None:
        raise InvalidRequest.at(pointer, "must be an ISO 4217 currency code (three capitals)")
    return value


def require_money(value: object, pointer: str) -> tuple[Decimal, str]:
    """``{amount: decimal string, currency: ISO 4217}``, both required, nothing else."""
    if isinstance(value, Mapping) and len(value) == 2:
        amount, currency = value.get("amount"), value.get("currency")
        if isinstance(amount, str) and isinstance(currency, str):
            parsed = _money(amount, currency)
            if parsed is not None:
                return parsed
    obj = require_object(
        value,
        pointer,
        allowed=frozenset({"amount", "currency"}),
        required=frozenset({"amount", "currency"}),
    )
    amount = require_decimal(obj["amount"], member_pointer(pointer, "amount"))
    return amount, require_currency(obj["currency"], member_pointer(pointer, "currency"))


@functools.lru_cache(maxsize=4096)
def _money(amount: str, currency: str) -> tuple[Decimal, str] | None:
    """The fast path for a well-formed amount (evaluations repeat the same ceilings)."""
    decimal = parse_decimal(amount)
    if decimal is None or CURRENCY_PATTERN.match(currency) is None:
        return None
    return decimal, currency


def dns_name(value: object) -> str | None:
    """The comparison form of a DNS name (lowercase, no trailing dot), or ``None``."""
    if not isinstance(value, str):
        return None
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if not all(_DNS_LABEL.match(label) for label in labels):
        return None
    return name.lower()


def domain_within(candidate: str, reference: str) -> bool:
    """Equal, or a subdomain of ``reference`` in whole labels (both already normalised)."""
    return candidate == reference or candidate.endswith("." + reference)


def _validate_time_window(value: object, pointer: str) -> None:
    obj = require_object(value, pointer, allowed=frozenset({"not_before", "not_after"}))
    if not obj:
        raise InvalidRequest.at(pointer, "needs not_before, not_after or both")
    bounds = {
        name: parse_instant(obj[name], member_pointer(pointer, name))
        for name in ("not_before", "not_after")
        if name in obj
    }
    if len(bounds) == 2 and not bounds["not_before"] < bounds["not_after"]:
        raise InvalidRequest.at(
            member_pointer(pointer, "not_after"), "must be later than not_before"
        )


def _validate_terminal_when(value: object, pointer: str) -> None:
    items = require_array(value, pointer, max_items=MAX_TERMINAL_CONDITIONS)
    for index, item in enumerate(items):
        at = member_pointer(pointer, index)
        obj = require_object(
            item,
            at,
            allowed=frozenset({"event_type", "discharge_policy"}),
            required=frozenset({"event_type"}),
        )
        require_string(
            obj["event_type"], member_pointer(at, "event_type"), max_length=MAX_EVENT_TYPE_LENGTH
        )
        if "discharge_policy" in obj:
            require_string(
                obj["discharge_policy"],
                member_pointer(at, "discharge_policy"),
                max_length=MAX_EVENT_TYPE_LENGTH,
            )


def validate_call_class(value: object, pointer: str) -> str:
    """A call class: a non-empty string of printable characters (``max_calls`` names it)."""
    text = require_string(value, pointer, max_length=MAX_CALL_CLASS_LENGTH)
    if not text.isprintable():
        raise InvalidRequest.at(pointer, "must not contain control characters")
    return text


def _validate_domain(value: object, pointer: str) -> None:
    if dns_name(value) is None:
        raise InvalidRequest.at(
            pointer, "must be a DNS name (letter-digit-hyphen labels of 1-63, at most 253)"
        )


def _validate_bool(value: object, pointer: str) -> None:
    if not isinstance(value, bool):
        raise InvalidRequest.at(pointer, "must be true or false")


def _validate_string_set(value: object, pointer: str) -> None:
    require_unique_strings(
        value, pointer, max_items=MAX_STRING_SET_ITEMS, max_length=MAX_STRING_SET_LENGTH
    )


_VALIDATORS: dict[str, Callable[[object, str], object]] = {
    MAX_AMOUNT: require_money,
    RESOURCE_ISSUED_AFTER: parse_instant,
    RESOURCE_ISSUED_BEFORE: parse_instant,
    TENANT: lambda value, pointer: require_string(value, pointer, max_length=MAX_TENANT_LENGTH),
    RECIPIENT_DOMAIN: _validate_domain,
    TIME_WINDOW: _validate_time_window,
    DATA_CLASSIFICATION: _validate_string_set,
    ALLOWED_TOOLS: _validate_string_set,
    REQUIRES_ACTION_APPROVAL: _validate_bool,
    TERMINAL_WHEN: _validate_terminal_when,
    CALL_CLASS: validate_call_class,
}

COMMON_CONSTRAINT_KEYS = frozenset(_VALIDATORS)


def validate_constraint(key: str, value: object, pointer: str) -> None:
    """Check one Common Constraint value; an unknown key is rejected at ``pointer``."""
    validator = _VALIDATORS.get(key)
    if validator is None:
        raise UnsupportedControl.at(pointer, f"unknown constraint {key!r}: nothing enforces it")
    validator(value, pointer)


def validate_constraints(value: object, pointer: str) -> dict[str, object]:
    """Check a ``constraints`` object and return it unchanged."""
    if not isinstance(value, dict):
        raise InvalidRequest.at(pointer, "must be a JSON object")
    for key, item in value.items():
        validate_constraint(str(key), item, member_pointer(pointer, str(key)))
    return value


# --------------------------------------------------------------------------- subset rule


def _window(value: object) -> tuple[datetime | None, datetime | None]:
    if not isinstance(value, Mapping):
        raise TypeError(value)
    lower = parse_instant(value["not_before"]) if "not_before" in value else None
    upper = parse_instant(value["not_after"]) if "not_after" in value else None
    return lower, upper


def _window_within(candidate: object, reference: object) -> bool:
    c_lower, c_upper = _window(candidate)
    r_lower, r_upper = _window(reference)
    if r_lower is not None and (c_lower is None or c_lower < r_lower):
        return False
    return not (r_upper is not None and (c_upper is None or c_upper > r_upper))


def _money_within(candidate: object, reference: object) -> bool:
    c_amount, c_currency = require_money(candidate, "")
    r_amount, r_currency = require_money(reference, "")
    return c_currency == r_currency and c_amount <= r_amount


def _domain_pair_within(candidate: object, reference: object) -> bool:
    c_name, r_name = dns_name(candidate), dns_name(reference)
    return c_name is not None and r_name is not None and domain_within(c_name, r_name)


def _set_within(candidate: object, reference: object) -> bool:
    if not isinstance(candidate, list | tuple) or not isinstance(reference, list | tuple):
        return False
    return set(candidate) <= set(reference)


def _conditions_within(candidate: object, reference: object) -> bool:
    if not isinstance(candidate, list | tuple) or not isinstance(reference, list | tuple):
        return False
    return all(condition in candidate for condition in reference)


_SUBSET: dict[str, Callable[[object, object], bool]] = {
    MAX_AMOUNT: _money_within,
    RESOURCE_ISSUED_AFTER: lambda c, r: parse_instant(c) >= parse_instant(r),
    RESOURCE_ISSUED_BEFORE: lambda c, r: parse_instant(c) <= parse_instant(r),
    TENANT: lambda c, r: isinstance(c, str) and c == r,
    RECIPIENT_DOMAIN: _domain_pair_within,
    TIME_WINDOW: _window_within,
    DATA_CLASSIFICATION: _set_within,
    ALLOWED_TOOLS: _set_within,
    REQUIRES_ACTION_APPROVAL: lambda c, r: c is True or (c is False and r is False),
    TERMINAL_WHEN: _conditions_within,
    CALL_CLASS: lambda c, r: isinstance(c, str) and c == r,
}


def constraint_within(key: str, candidate_value: object, reference_value: object) -> bool:
    """Whether ``candidate_value`` is no broader than ``reference_value`` under ``key``'s rule.

    An unknown key or a malformed value is undecidable and refuses (``False``).
    """
    rule = _SUBSET.get(key)
    if rule is None:
        return False
    try:
        return rule(candidate_value, reference_value)
    except (InvalidRequest, TypeError, KeyError):
        return False


def _show(key: str, value: object) -> str:
    """A short human rendering of a constraint value for reasons."""
    if key == MAX_AMOUNT and isinstance(value, Mapping):
        return f"{value.get('amount')} {value.get('currency')}"
    if key == TIME_WINDOW and isinstance(value, Mapping):
        lower = value.get("not_before", "-inf")
        upper = value.get("not_after", "+inf")
        return f"[{lower}, {upper}]"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _broader_reason(key: str, candidate: object, reference: object) -> str:
    shown_c, shown_r = _show(key, candidate), _show(key, reference)
    if key == MAX_AMOUNT and isinstance(candidate, Mapping) and isinstance(reference, Mapping):
        if candidate.get("currency") != reference.get("currency"):
            return (
                f"constraint 'max_amount' currency {candidate.get('currency')} is not comparable"
                f" with {reference.get('currency')} (no conversion)"
            )
        return f"constraint 'max_amount' {shown_c} exceeds {shown_r}"
    if key == RESOURCE_ISSUED_AFTER:
        return f"constraint {key!r} {shown_c} is earlier than the ceiling's {shown_r}"
    if key == RESOURCE_ISSUED_BEFORE:
        return f"constraint {key!r} {shown_c} is later than the ceiling's {shown_r}"
    if key == RECIPIENT_DOMAIN:
        return f"constraint {key!r} {shown_c} is neither {shown_r} nor a subdomain of it"
    if key in (TENANT, CALL_CLASS):
        return f"constraint {key!r} {shown_c} differs from {shown_r}"
    if key == TIME_WINDOW:
        return f"constraint {key!r} {shown_c} is not inside {shown_r}"
    if key in (DATA_CLASSIFICATION, ALLOWED_TOOLS):
        extra = sorted(
            str(item)
            for item in (candidate if isinstance(candidate, list | tuple) else ())
            if not isinstance(reference, list | tuple) or item not in reference
        )
        return f"constraint {key!r} adds {', '.join(extra) or 'values'} beyond {shown_r}"
    if key == REQUIRES_ACTION_APPROVAL:
        return f"constraint {key!r} is {shown_c}; it may be added, never removed"
    if key == TERMINAL_WHEN:
        return f"constraint {key!r} drops a completion condition of the ceiling's {shown_r}"
    return f"constraint {key!r} cannot be compared (unknown or malformed)"


def constraints_within(
    candidate: Mapping[str, object] | None, reference: Mapping[str, object] | None
) -> str | None:
    """``None`` when the candidate constraints are no broader than the reference's.

    Every reference key must be present in the candidate and no broader; the candidate may add
    keys (a constraint narrows). ``requires_action_approval: false`` equals its absence.
    Otherwise the result is a precise, human-readable reason.
    """
    cand = candidate or {}
    ref = reference or {}
    for key in sorted(ref):
        ref_value = ref[key]
        if key == REQUIRES_ACTION_APPROVAL and ref_value is False:
            continue
        if key not in cand:
            return f"constraint {key!r} is absent (the ceiling has it)"
        if not constraint_within(key, cand[key], ref_value):
            return _broader_reason(key, cand[key], ref_value)
    return None


# --------------------------------------------------------------------------- evaluation

PARAMETER_VIOLATION = "parameter_violation"
CONSTRAINT_UNSUPPORTED = "constraint_unsupported"
APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True)
class Facts:
    """What a decision knows about one attempted action (AuthZEN request plus the clock)."""

    action_properties: Mapping[str, object]
    resource_properties: Mapping[str, object]
    context: Mapping[str, object]
    now: datetime


@dataclass(frozen=True)
class Violation:
    """Why one constraint is not satisfied. ``reason`` is a denial reason code."""

    reason: str
    constraint: str
    detail: str


def _param(constraint: str, detail: str) -> Violation:
    return Violation(PARAMETER_VIOLATION, constraint, detail)


def _present(properties: Mapping[str, object], name: str) -> bool:
    return properties.get(name) is not None


def _action_or_context(facts: Facts, name: str) -> tuple[object, str] | None:
    if _present(facts.action_properties, name):
        return facts.action_properties[name], f"action.properties.{name}"
    if _present(facts.context, name):
        return facts.context[name], f"context.{name}"
    return None


def _check_max_amount(value: object, facts: Facts) -> Violation | None:
    max_amount, max_currency = require_money(value, "")
    amount_input = _action_or_context(facts, "amount")
    if amount_input is None:
        return _param(MAX_AMOUNT, "amount is absent (action.properties.amount or context.amount)")
    amount = parse_decimal(amount_input[0])
    if amount is None:
        return _param(MAX_AMOUNT, f"{amount_input[1]} is not a decimal string")
    currency_input = _action_or_context(facts, "currency")
    if currency_input is None:
        return _param(MAX_AMOUNT, "currency is absent (action.properties.currency or context)")
    currency = currency_input[0]
    if not isinstance(currency, str) or CURRENCY_PATTERN.match(currency) is None:
        return _param(MAX_AMOUNT, f"{currency_input[1]} is not an ISO 4217 code")
    if currency != max_currency:
        return _param(
            MAX_AMOUNT, f"currency {currency} is not comparable with {max_currency} (no conversion)"
        )
    if amount > max_amount:
        return _param(
            MAX_AMOUNT, f"amount {amount_input[0]} {currency} exceeds {_show(MAX_AMOUNT, value)}"
        )
    return None


def _check_allowed_tools(value: object, facts: Facts) -> Violation | None:
    tool = facts.action_properties.get("tool")
    if tool is None:
        return _param(ALLOWED_TOOLS, "action.properties.tool is absent")
    if not isinstance(tool, str):
        return _param(ALLOWED_TOOLS, "action.properties.tool is not a string")
    if not isinstance(value, list | tuple) or tool not in value:
        return _param(ALLOWED_TOOLS, f"tool {tool[:64]!r} is not among the allowed tools")
    return None


def _check_recipient_domain(value: object, facts: Facts) -> Violation | None:
    recipient = facts.action_properties.get("recipient")
    if recipient is None:
        return _param(RECIPIENT_DOMAIN, "action.properties.recipient is absent")
    if not isinstance(recipient, str):
        return _param(RECIPIENT_DOMAIN, "action.properties.recipient is not a string")
    domain = dns_name(recipient.rpartition("@")[2])
    allowed = dns_name(value)
    if domain is None or allowed is None:
        return _param(RECIPIENT_DOMAIN, "action.properties.recipient has no valid domain")
    if not domain_within(domain, allowed):
        return _param(RECIPIENT_DOMAIN, f"recipient domain {domain} is outside {allowed}")
    return None


def _check_time_window(value: object, facts: Facts) -> Violation | None:
    lower, upper = _window(value)
    if lower is not None and facts.now < lower:
        return _param(TIME_WINDOW, f"not before {format_instant(lower)}")
    if upper is not None and facts.now > upper:
        return _param(TIME_WINDOW, f"not after {format_instant(upper)}")
    return None


def _check_tenant(value: object, facts: Facts) -> Violation | None:
    tenant = facts.context.get("tenant")
    if tenant is None:
        return _param(TENANT, "context.tenant is absent")
    if tenant != value:
        return _param(TENANT, "context.tenant does not match")
    return None


def _check_data_classification(value: object, facts: Facts) -> Violation | None:
    given = facts.resource_properties.get("data_classification")
    if given is None:
        return _param(DATA_CLASSIFICATION, "resource.properties.data_classification is absent")
    labels = [given] if isinstance(given, str) else given
    if (
        not isinstance(labels, list | tuple)
        or not labels
        or not all(isinstance(label, str) for label in labels)
    ):
        return _param(DATA_CLASSIFICATION, "resource.properties.data_classification is malformed")
    allowed = value if isinstance(value, list | tuple) else ()
    outside = [label for label in labels if label not in allowed]
    if outside:
        return _param(DATA_CLASSIFICATION, f"classification {outside[0]!r} is not allowed")
    return None


def _issued_at(facts: Facts, key: str) -> datetime | Violation:
    given = facts.resource_properties.get("issued_at")
    if given is None:
        return _param(key, "resource.properties.issued_at is absent")
    try:
        return parse_instant(given)
    except InvalidRequest:
        return _param(key, "resource.properties.issued_at is not an RFC 3339 date-time")


def _check_issued_after(value: object, facts: Facts) -> Violation | None:
    issued = _issued_at(facts, RESOURCE_ISSUED_AFTER)
    if isinstance(issued, Violation):
        return issued
    if issued < parse_instant(value):
        return _param(RESOURCE_ISSUED_AFTER, f"resource issued before {value}")
    return None


def _check_issued_before(value: object, facts: Facts) -> Violation | None:
    issued = _issued_at(facts, RESOURCE_ISSUED_BEFORE)
    if isinstance(issued, Violation):
        return issued
    if issued > parse_instant(value):
        return _param(RESOURCE_ISSUED_BEFORE, f"resource issued after {value}")
    return None


def _check_approval(value: object, facts: Facts) -> Violation | None:
    del facts
    if value is True:
        return Violation(
            APPROVAL_REQUIRED, REQUIRES_ACTION_APPROVAL, "the action needs an action-bound approval"
        )
    return None


def _check_terminal_when(value: object, facts: Facts) -> Violation | None:
    del value, facts  # completion conditions discharge entries; they do not gate a decision
    return None


def _check_call_class(value: object, facts: Facts) -> Violation | None:
    del value, facts  # a class for metering (ledger.domain.metering), not a gate of its own
    return None


_CHECKS: dict[str, Callable[[object, Facts], Violation | None]] = {
    MAX_AMOUNT: _check_max_amount,
    RESOURCE_ISSUED_AFTER: _check_issued_after,
    RESOURCE_ISSUED_BEFORE: _check_issued_before,
    TENANT: _check_tenant,
    RECIPIENT_DOMAIN: _check_recipient_domain,
    TIME_WINDOW: _check_time_window,
    DATA_CLASSIFICATION: _check_data_classification,
    ALLOWED_TOOLS: _check_allowed_tools,
    REQUIRES_ACTION_APPROVAL: _check_approval,
    TERMINAL_WHEN: _check_terminal_when,
    CALL_CLASS: _check_call_class,
}


def evaluate_constraints(
    constraints: Mapping[str, object], facts: Facts, *, validated: bool = False
) -> Violation | None:
    """The first unsatisfied constraint in sorted key order, or ``None`` when all hold.

    The action-approval gate (``requires_action_approval``) is judged last: an
    ``approval_required`` denial means every other constraint holds, so it is a denial an
    approval can lift (SPEC 7.1) and never hides another violation.

    An unknown key, or a constraint value that is itself malformed, fails closed with
    ``constraint_unsupported``; a missing or malformed input is a ``parameter_violation``.
    ``validated`` skips re-checking the constraint values (they came from a parsed entry).
    """
    for key in sorted(constraints, key=lambda name: (name == REQUIRES_ACTION_APPROVAL, name)):
        check = _CHECKS.get(key)
        if check is None:
            return Violation(CONSTRAINT_UNSUPPORTED, key, f"constraint {key!r} is not supported")
        value = constraints[key]
        if not validated:
            try:
                validate_constraint(key, value, "")
            except InvalidRequest:
                return Violation(CONSTRAINT_UNSUPPORTED, key, f"constraint {key!r} is malformed")
        violation = check(value, facts)
        if violation is not None:
            return violation
    return None
