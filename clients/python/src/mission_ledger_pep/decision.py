"""An AuthZEN decision as the enforcement point sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PDP_UNAVAILABLE = "pdp_unavailable"


@dataclass(frozen=True)
class Decision:
    """``allowed`` is True only for a well-formed ``{"decision": true}`` answer."""

    allowed: bool
    reason: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    #: The evaluation request this decision answers (what ``request_access`` echoes).
    request: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def unavailable(cls, detail: str) -> Decision:
        """The fail-closed deny: the PDP could not be asked or did not answer sensibly."""
        return cls(
            allowed=False,
            reason=PDP_UNAVAILABLE,
            context={"reason": PDP_UNAVAILABLE, "detail": detail},
        )

    @classmethod
    def from_json(cls, body: object, request: Mapping[str, Any] | None = None) -> Decision:
        """A decision object, or the fail-closed deny when ``body`` is not one."""
        if not isinstance(body, dict) or not isinstance(body.get("decision"), bool):
            return cls.unavailable("the PDP answered something that is not a decision")
        context = body.get("context")
        if context is None:
            context = {}
        if not isinstance(context, dict):
            return cls.unavailable("the decision context is not an object")
        reason = context.get("reason")
        return cls(body["decision"], reason if isinstance(reason, str) else None, context, request)

    @property
    def access_request(self) -> Mapping[str, Any] | None:
        """``context.access_request`` of a requestable denial, else None."""
        value = self.context.get("access_request")
        return value if not self.allowed and isinstance(value, dict) else None
