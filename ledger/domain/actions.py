"""Action identifiers of Authority Set entries: literal names and ``name.*`` families.

A family covers every action extending its name at a dot boundary (``invoices.*`` covers
``invoices.read`` and ``invoices.q3.*``, not ``invoices`` itself nor ``invoicesX``). A family
is never within a literal action, and a requested action that is itself a family is never
covered: evaluation is of one concrete action.
"""

from __future__ import annotations

import re

from ledger.domain.errors import InvalidRequest

MAX_ACTION_LENGTH = 128
FAMILY_SUFFIX = ".*"

_NAME = re.compile(r"^[A-Za-z0-9_.:-]+\Z")


def is_family(action: str) -> bool:
    """``name.*``: a family of actions."""
    return action.endswith(FAMILY_SUFFIX)


def is_valid_action(value: object) -> bool:
    """A literal identifier or a family, at most 128 characters."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ACTION_LENGTH:
        return False
    name = value[: -len(FAMILY_SUFFIX)] if is_family(value) else value
    return _NAME.match(name) is not None


def validate_action(value: object, pointer: str) -> str:
    """Check an action identifier or family and return it unchanged."""
    if not isinstance(value, str):
        raise InvalidRequest.at(pointer, "must be an action name string")
    if not is_valid_action(value):
        raise InvalidRequest.at(
            pointer,
            f"{value[:64]!r} is not an action name ([A-Za-z0-9_.:-]+, or name.* for a family,"
            f" at most {MAX_ACTION_LENGTH} characters)",
        )
    return value


def _extends_family(candidate: str, family: str) -> bool:
    """``candidate`` extends the family's name at a dot boundary with something non-empty."""
    stem = family[: -len("*")]  # keeps the dot: "invoices."
    return candidate.startswith(stem) and len(candidate) > len(stem)


def action_within(candidate: str, reference: str) -> bool:
    """Whether every action ``candidate`` denotes is denoted by ``reference``."""
    if not (is_valid_action(candidate) and is_valid_action(reference)):
        return False
    if is_family(reference):
        return candidate == reference or _extends_family(candidate, reference)
    return not is_family(candidate) and candidate == reference


def is_concrete(requested: object) -> bool:
    """A requested action is a valid literal (a family is never a concrete request)."""
    return is_valid_action(requested) and not is_family(str(requested))


class ActionMatcher:
    """An entry's actions compiled once: literals, and the stems of its families."""

    __slots__ = ("_literals", "_stems")

    def __init__(self, actions: tuple[str, ...]) -> None:
        valid = [a for a in actions if is_valid_action(a)]
        self._literals = frozenset(a for a in valid if not is_family(a))
        self._stems = tuple(a[: -len("*")] for a in valid if is_family(a))

    def covers(self, requested: str) -> bool:
        """For a requested action already checked with ``is_concrete``."""
        if requested in self._literals:
            return True
        return any(requested.startswith(s) and len(requested) > len(s) for s in self._stems)


def action_covers(entry_action: str, requested: str) -> bool:
    """Whether an entry action (literal or family) covers one concrete requested action."""
    if not is_valid_action(requested) or is_family(requested):
        return False
    return action_within(requested, entry_action)
