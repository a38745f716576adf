"""The ApiKey aggregate: a named credential with one role.

Keys are part of the ledger so that issuing and revoking credentials is itself
hash-chained and auditable, and so that every replica learns of a revocation
from the same log it already follows. Only a SHA-256 digest of the secret is
stored; the secret is shown once, by whoever created the key.

The aggregate id is ``apikey:<name>``: a name identifies one principal (for an
``agent`` key, the name is its ``client_id``). A revoked name can be reinstated
with a fresh secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import Actor
from ledger.domain.errors import Conflict, InvalidRequest
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent
from ledger.domain.roles import Role

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")


def api_key_id(name: str) -> str:
    """The aggregate id of the key named ``name`` (validating the name)."""
    if not NAME_PATTERN.match(name):
        raise InvalidRequest.at(
            "/name",
            "a key name is 1-128 characters of letters, digits and . _ : @ -, "
            "starting with a letter or digit",
        )
    return f"apikey:{name}"


class ApiKey(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "ApiKey"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "ApiKey.Event"

    @dataclass(frozen=True)
    class Created(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "ApiKey.Created"
        name: str
        role: str
        key_id: str
        secret_sha256: str
        actor: dict[str, Any]

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.name = self.name
            aggregate.role = self.role
            aggregate.key_id = self.key_id
            aggregate.secret_sha256 = self.secret_sha256
            aggregate.revoked = False
            aggregate.created_at = self.timestamp

    @dataclass(frozen=True)
    class Revoked(Event):
        TOPIC = TOPIC_PREFIX + "ApiKey.Revoked"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.revoked = True

    @dataclass(frozen=True)
    class Reinstated(Event):
        TOPIC = TOPIC_PREFIX + "ApiKey.Reinstated"
        role: str
        key_id: str
        secret_sha256: str
        actor: dict[str, Any]

        def apply(self, aggregate: ApiKey) -> None:
            aggregate.role = self.role
            aggregate.key_id = self.key_id
            aggregate.secret_sha256 = self.secret_sha256
            aggregate.revoked = False
            aggregate.created_at = self.timestamp

    if TYPE_CHECKING:
        name: str
        role: str
        key_id: str
        secret_sha256: str
        revoked: bool
        created_at: datetime

    @classmethod
    def create(
        cls,
        *,
        name: str,
        role: Role,
        key_id: str,
        secret_sha256: str,
        actor: Actor,
        now: datetime,
    ) -> ApiKey:
        return cls._create(
            cls.Created,
            id=api_key_id(name),
            timestamp=now,
            name=name,
            role=role.value,
            key_id=key_id,
            secret_sha256=secret_sha256,
            actor=actor.to_json(),
        )

    def reinstate(
        self, *, role: Role, key_id: str, secret_sha256: str, actor: Actor, now: datetime
    ) -> None:
        if not self.revoked:
            raise Conflict(f"an active key named {self.name!r} already exists; revoke it first")
        self.trigger_event(
            self.Reinstated,
            timestamp=now,
            role=role.value,
            key_id=key_id,
            secret_sha256=secret_sha256,
            actor=actor.to_json(),
        )

    def revoke(self, *, reason: str | None, actor: Actor, now: datetime) -> bool:
        """Returns False when the key is already revoked."""
        if self.revoked:
            return False
        self.trigger_event(self.Revoked, timestamp=now, reason=reason, actor=actor.to_json())
        return True
