"""The ledger as it stood at an instant: the reads behind ``as_of`` and ``audit replay``.

``LedgerAt`` answers the same reads as the ledger (a Mission, a Mandate, a Mission's
mandate tree, an agent instance, a Mandate's ancestors and validity, an aggregate's
history), each aggregate rebuilt by the repository at the last version recorded by the
instant (``LedgerBase.history(as_of=)``, ``LedgerBase.rebuild_at``). Every aggregate is read
at most once per ``LedgerAt`` (a replay of a Mission with many Mandates reads its tree and
its holders' instances once, not once per Mandate), so one ``LedgerAt`` is one consistent
look at the past; make a new one for every request.

The reads of Mandates and the rules that combine them (a Mandate's delegation chain, its
validity) are written once here (``MandateReads``), for the live ledger and the past alike.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any, TypeVar

from eventsourcing.domain import BaseAggregate

from ledger.application.base import LedgerBase
from ledger.domain.errors import NotFound
from ledger.domain.instances import AgentInstance, instance_id_of
from ledger.domain.mandate_tree import MandateTree, tree_id
from ledger.domain.mandates import ExecutionMandate, Validity, validity
from ledger.domain.missions import Mission
from ledger.persistence.eventlog import LoggedEvent

A = TypeVar("A", bound=BaseAggregate[str])


class MandateReads:
    """Reads of Mandates and what surrounds them, and the rules that combine them (a
    Mandate's delegation chain, its validity), over whatever ``_get`` and ``get_mission``
    read: the live ledger (``MandateCascades``) or the ledger at an instant (``LedgerAt``)."""

    def _get(self, cls: type[A], aggregate_id: str, what: str) -> A:
        raise NotImplementedError

    def _read(self, cls: type[A], aggregate_id: str, what: str) -> A:
        """As ``_get``, for a caller that only reads what it is given (never changes it, never
        saves it): the live ledger may then hand over what it holds without a copy."""
        return self._get(cls, aggregate_id, what)

    def get_mission(self, mission_id: str) -> Mission:
        raise NotImplementedError

    def get_mandate(self, mandate_id: str) -> ExecutionMandate:
        return self._get(ExecutionMandate, mandate_id, "Mandate")

    def get_tree(self, mission_id: str) -> MandateTree | None:
        try:
            return self._get(MandateTree, tree_id(mission_id), "mandate tree")
        except NotFound:
            return None

    def children_of(self, mandate: ExecutionMandate) -> list[str]:
        """The Mandates delegated from ``mandate`` directly. The Mission's tree (every Mandate
        of the Mission) is read, not copied (``MandateTree.children`` lists it in one step)."""
        try:
            tree = self._read(MandateTree, tree_id(mandate.mission_id), "mandate tree")
        except NotFound:
            return []
        return tree.children(mandate.id)

    def get_instance(self, client_id: str, instance_id: str) -> AgentInstance | None:
        try:
            return self._get(AgentInstance, instance_id_of(client_id, instance_id), "instance")
        except NotFound:
            return None

    def ancestors_of(self, mandate: ExecutionMandate) -> list[ExecutionMandate]:
        """The Mandate's delegation chain: parent first, root last."""
        chain: list[ExecutionMandate] = []
        parent_id = mandate.parent_mandate_id
        while parent_id is not None:
            parent = self.get_mandate(parent_id)
            chain.append(parent)
            parent_id = parent.parent_mandate_id
        return chain

    def mandate_validity(
        self, mandate: ExecutionMandate, now: datetime, *, mission: Mission | None = None
    ) -> Validity:
        """Whether the Mandate authorises anything at ``now`` (own state and expiry, its
        Mission, every ancestor, the holder's instance), as read here."""
        mission = mission or self.get_mission(mandate.mission_id)
        instance_id = mandate.holder.get("instance_id")
        instance = None
        if instance_id is not None:
            # Read, not copied: an instance holds every Mandate ever issued to it.
            with contextlib.suppress(NotFound):
                instance = self._read(
                    AgentInstance,
                    instance_id_of(str(mandate.holder["client_id"]), str(instance_id)),
                    "instance",
                )
        return validity(
            mandate,
            mission_state=mission.effective_state(now),
            ancestors=self.ancestors_of(mandate),
            instance_revoked=instance is not None and instance.revoked,
            now=now,
        )


class LedgerAt(MandateReads):
    """Reads of the ledger as it stood at ``instant`` (see the module docstring); validity
    is asked at the instant itself."""

    def __init__(self, ledger: LedgerBase, instant: datetime) -> None:
        self.ledger = ledger
        self.instant = instant
        self._histories: dict[str, list[LoggedEvent]] = {}
        self._aggregates: dict[str, BaseAggregate[str]] = {}

    def history(self, originator_id: str) -> list[LoggedEvent]:
        """The aggregate's events recorded by the instant, in version order."""
        known = self._histories.get(originator_id)
        if known is None:
            known = self.ledger.history(originator_id, as_of=self.instant)
            self._histories[originator_id] = known
        return known

    def get_mission(self, mission_id: str) -> Mission:
        return self._get(Mission, mission_id, "Mission")

    def mission_usage(self, mission: Mission) -> dict[str, Any] | None:
        return self.ledger.mission_usage(mission, as_of=self.instant)

    def _get(self, cls: type[A], aggregate_id: str, what: str) -> A:
        aggregate = self._aggregates.get(aggregate_id)
        if aggregate is None:
            history = self.history(aggregate_id)
            aggregate = self.ledger.rebuild_at(cls, aggregate_id, what, history, self.instant)
            self._aggregates[aggregate_id] = aggregate
        if not isinstance(aggregate, cls):
            raise NotFound(f"no {what} with id {aggregate_id!r}")
        return aggregate
