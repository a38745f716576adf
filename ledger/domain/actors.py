"""Who did something: the acting principal recorded on every event.

An actor is stored as a small JSON object so that new credential kinds can be
added without an upcaster:

* ``{"type": "api_key", "name": "ops-1", "role": "operator"}``
* ``{"type": "oauth", "iss": "https://idp", "sub": "u1", "client_id": "c", "role": "approver"}``
* ``{"type": "system", "name": "scheduler"}`` for clock-driven transitions
* ``{"type": "cli", "name": "keys"}`` for changes made by the command line
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    """The authenticated principal behind a command."""

    type: str
    name: str
    role: str | None = None
    iss: str | None = None
    client_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "name": self.name}
        if self.role is not None:
            out["role"] = self.role
        if self.iss is not None:
            out["iss"] = self.iss
        if self.client_id is not None:
            out["client_id"] = self.client_id
        return out

    @property
    def key(self) -> str:
        """A stable identity string used to scope nonces and idempotency keys."""
        return f"{self.type}:{self.iss or ''}:{self.name}"

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Actor:
        return cls(
            type=str(value["type"]),
            name=str(value["name"]),
            role=value.get("role"),
            iss=value.get("iss"),
            client_id=value.get("client_id"),
        )


SCHEDULER = Actor(type="system", name="scheduler")
