"""The AgentInstance aggregate: one runtime instance of an agent client, and its kill switch.

An operator revoking an instance ends every Mandate it holds and refuses any new
one. Each Mandate issued or delegated to an instance is recorded here, so the kill
switch sees all of them in the same transaction, and an issuance racing with the
kill switch is serialised by this stream's version check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import Actor
from ledger.domain.errors import Conflict
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent


def instance_id_of(client_id: str, instance_id: str) -> str:
    return f"instance:{client_id}:{instance_id}"


class AgentInstance(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "AgentInstance"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "AgentInstance.Event"

    @dataclass(frozen=True)
    class Registered(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "AgentInstance.Registered"
        client_id: str
        instance_id: str

        def apply(self, aggregate: AgentInstance) -> None:
            aggregate.client_id = self.client_id
            aggregate.instance_id = self.instance_id
            aggregate.holdings = []
            aggregate.revoked = False
            aggregate.revoked_reason = None

    @dataclass(frozen=True)
    class MandateHeld(Event):
        TOPIC = TOPIC_PREFIX + "AgentInstance.MandateHeld"
        mandate_id: str
        mission_id: str

        def apply(self, aggregate: AgentInstance) -> None:
            aggregate.holdings.append([self.mandate_id, self.mission_id])

    @dataclass(frozen=True)
    class Revoked(Event):
        TOPIC = TOPIC_PREFIX + "AgentInstance.Revoked"
        reason: str | None
        actor: dict[str, Any]

        def apply(self, aggregate: AgentInstance) -> None:
            aggregate.revoked = True
            aggregate.revoked_reason = self.reason

    if TYPE_CHECKING:
        client_id: str
        instance_id: str
        holdings: list[list[str]]
        revoked: bool
        revoked_reason: str | None

    @classmethod
    def register(cls, *, client_id: str, instance_id: str, now: datetime) -> AgentInstance:
        return cls._create(
            cls.Registered,
            id=instance_id_of(client_id, instance_id),
            timestamp=now,
            client_id=client_id,
            instance_id=instance_id,
        )

    def hold(self, *, mandate_id: str, mission_id: str, now: datetime) -> None:
        if self.revoked:
            raise Conflict(
                f"agent instance {self.client_id}/{self.instance_id} has been revoked; "
                "it cannot hold new Mandates",
                extensions={"reason": "instance_revoked"},
            )
        self.trigger_event(
            self.MandateHeld, timestamp=now, mandate_id=mandate_id, mission_id=mission_id
        )

    def revoke(self, *, reason: str | None, actor: Actor, now: datetime) -> bool:
        if self.revoked:
            return False
        self.trigger_event(self.Revoked, timestamp=now, reason=reason, actor=actor.to_json())
        return True
