"""The MandateTree aggregate: which Mandates exist under one Mission, and who delegated
to whom.

It is the write side's own index for cascades: ending a Mission ends every Mandate
in its tree, revoking a Mandate ends its whole subtree, and narrowing a Mandate
narrows its descendants, all in the same transaction. Every issuance and
delegation records itself here, so concurrent issuances under one Mission are
serialised by this stream's version check and no Mandate escapes a cascade.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from ledger.domain.errors import Conflict
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent


def tree_id(mission_id: str) -> str:
    return f"mandates:{mission_id}"


class MandateTree(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "MandateTree"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "MandateTree.Event"

    @dataclass(frozen=True)
    class Started(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "MandateTree.Started"
        mission_id: str

        def apply(self, aggregate: MandateTree) -> None:
            aggregate.mission_id = self.mission_id
            aggregate.parents = {}

    @dataclass(frozen=True)
    class Recorded(Event):
        TOPIC = TOPIC_PREFIX + "MandateTree.Recorded"
        mandate_id: str
        parent_mandate_id: str | None
        holder: dict[str, Any]

        def apply(self, aggregate: MandateTree) -> None:
            aggregate.parents[self.mandate_id] = self.parent_mandate_id

    if TYPE_CHECKING:
        mission_id: str
        parents: dict[str, str | None]

    @classmethod
    def start(cls, *, mission_id: str, now: datetime) -> MandateTree:
        return cls._create(
            cls.Started, id=tree_id(mission_id), timestamp=now, mission_id=mission_id
        )

    def record(
        self,
        *,
        mandate_id: str,
        parent_mandate_id: str | None,
        holder: dict[str, Any],
        max_derivations: int | None,
        now: datetime,
    ) -> None:
        if max_derivations is not None and len(self.parents) >= max_derivations:
            raise Conflict(
                f"derivations_exhausted: this Mission allows {max_derivations} Mandates "
                "(intent.controls.max_derivations)",
                extensions={"reason": "derivations_exhausted"},
            )
        self.trigger_event(
            self.Recorded,
            timestamp=now,
            mandate_id=mandate_id,
            parent_mandate_id=parent_mandate_id,
            holder=holder,
        )

    @property
    def mandate_ids(self) -> list[str]:
        return list(self.parents)

    def children(self, mandate_id: str) -> list[str]:
        # ``parents`` listed in one step (it holds the interpreter lock throughout): a tree
        # read without a copy may be brought up to date by another thread meanwhile.
        return [child for child, parent in list(self.parents.items()) if parent == mandate_id]

    def descendants(self, mandate_id: str) -> list[str]:
        """Every Mandate below ``mandate_id``, parents before children."""
        found: list[str] = []
        frontier = [mandate_id]
        while frontier:
            current = frontier.pop(0)
            for child in self.children(current):
                found.append(child)
                frontier.append(child)
        return found

    def ancestors(self, mandate_id: str) -> list[str]:
        """Parent first, root last."""
        chain: list[str] = []
        parent = self.parents.get(mandate_id)
        while parent is not None:
            chain.append(parent)
            parent = self.parents.get(parent)
        return chain
