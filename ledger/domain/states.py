"""Lifecycle states of proposals and Missions, and the legal-operation table."""

from __future__ import annotations

from enum import StrEnum


class ProposalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class MissionState(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"
    COMPLETED = "completed"
    SUPERSEDED = "superseded"
    CASCADED = "cascaded"


TERMINAL_MISSION_STATES = frozenset(
    {
        MissionState.REVOKED,
        MissionState.EXPIRED,
        MissionState.COMPLETED,
        MissionState.SUPERSEDED,
        MissionState.CASCADED,
    }
)


class Operation(StrEnum):
    """Operations of the lifecycle endpoint."""

    REVOKE = "revoke"
    SUSPEND = "suspend"
    RESUME = "resume"
    COMPLETE = "complete"


class OnExpiry(StrEnum):
    """What happens when a suspension deadline passes."""

    RESUME = "resume"
    REVOKE = "revoke"


# (operation) -> (states it may start from, the state it leads to).
# A request whose target equals the current state is an idempotent success without an
# event, except ``resume``, which is legal only from ``suspended``.
LEGAL_OPERATIONS: dict[Operation, tuple[frozenset[str], MissionState]] = {
    Operation.REVOKE: (
        frozenset({MissionState.ACTIVE, MissionState.SUSPENDED}),
        MissionState.REVOKED,
    ),
    Operation.SUSPEND: (frozenset({MissionState.ACTIVE}), MissionState.SUSPENDED),
    Operation.RESUME: (frozenset({MissionState.SUSPENDED}), MissionState.ACTIVE),
    Operation.COMPLETE: (
        frozenset({MissionState.ACTIVE, MissionState.SUSPENDED}),
        MissionState.COMPLETED,
    ),
}


def is_active(state: str) -> bool:
    """Fail-safe rule: only the exact string ``active`` is active; unknown values are not."""
    return state == MissionState.ACTIVE.value
