"""How changes to Missions and Mandates reach the Mandates below them.

* A Mission reaching a terminal state cascades every live Mandate under it.
* Mission containment narrows the Mandates whose authority it touches (and ends
  those left with nothing).
* Entry discharge narrows every Mandate to what remains within the Mission's
  Effective Authority Set (and ends those left with nothing).
* A Mandate revoked, narrowed or ended takes its whole subtree with it.

All of it is written in the same transaction as the cause. Each cascade also
records the version of the ``MandateTree`` it read as a commit-time expectation,
so a Mandate issued concurrently is either seen by the cascade or refused by its
own check of the Mission/parent version: none escapes.
"""

from __future__ import annotations

from datetime import datetime

from eventsourcing.domain import BaseAggregate

from ledger.application.base import LedgerBase
from ledger.application.replay import LedgerAt, MandateReads
from ledger.domain.actors import Actor
from ledger.domain.authority import AuthorityEntry
from ledger.domain.delegation import parse_entries, restrict, without_contained
from ledger.domain.mandate_tree import tree_id
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission, discharge_cause
from ledger.domain.states import MissionState


class Effects:
    """Aggregates a cascade changed, and the versions it read (commit-time checks)."""

    def __init__(self) -> None:
        self.changed: list[BaseAggregate[str]] = []
        self.expect: dict[str, int] = {}

    def add(self, aggregate: BaseAggregate[str]) -> None:
        if aggregate.pending_events and all(a.id != aggregate.id for a in self.changed):
            self.changed.append(aggregate)


class MandateCascades(LedgerBase, MandateReads):
    """Mandate reads (``MandateReads``) on the live ledger, and the cascades."""

    def at(self, instant: datetime) -> LedgerAt:
        """The ledger as it stood at ``instant`` (reads only), for replay and ``as_of``."""
        return LedgerAt(self, instant)

    # ------------------------------------------------------------------ cascades

    def mandate_effects(
        self, mission: Mission, *, actor: Actor, now: datetime, effects: Effects | None = None
    ) -> Effects:
        """What the Mission's pending events do to its Mandates."""
        effects = effects or Effects()
        if not mission.pending_events:
            return effects
        ended = mission.state not in {MissionState.ACTIVE.value, MissionState.SUSPENDED.value}
        contained = any(isinstance(e, Mission.CapabilityContained) for e in mission.pending_events)
        discharges = [e for e in mission.pending_events if isinstance(e, Mission.EntryDischarged)]
        if discharges and not ended:
            return self._discharge_effects(mission, discharges[0], actor=actor, now=now)
        if not ended and not contained:
            # Suspend/resume touch no Mandate (validity follows the Mission); a concurrent
            # issuance is refused by its own check of the Mission's version.
            return effects
        tree = self.get_tree(mission.id)
        effects.expect[tree_id(mission.id)] = 0 if tree is None else tree.version
        if tree is None:
            return effects
        removed = mission.contained_capabilities()
        for mandate_id in tree.mandate_ids:
            mandate = self.get_mandate(mandate_id)
            if not mandate.is_live():
                continue
            if ended:
                mandate.cascade(
                    cause={"kind": "mission", "id": mission.id, "state": mission.state},
                    reason=f"Mission {mission.id} is {mission.state}",
                    actor=actor,
                    now=now,
                )
            else:
                remaining = without_contained(mandate.entries(), removed)
                if not remaining:
                    mandate.cascade(
                        cause={"kind": "containment", "id": mission.id},
                        reason="all of its authority was contained on the Mission",
                        actor=actor,
                        now=now,
                    )
                else:
                    mandate.narrow(
                        remaining,
                        cause="containment",
                        reason="Mission containment",
                        actor=actor,
                        now=now,
                    )
            effects.add(mandate)
        return effects

    def _discharge_effects(
        self, mission: Mission, event: Mission.EntryDischarged, *, actor: Actor, now: datetime
    ) -> Effects:
        """Every live Mandate keeps only the entries still within the Mission's Effective
        Authority Set (a delegated Mandate's entries lie within its parent's, so narrowing
        each against the Mission keeps every child within its parent)."""
        effects = Effects()
        tree = self.get_tree(mission.id)
        effects.expect[tree_id(mission.id)] = 0 if tree is None else tree.version
        if tree is None:
            return effects
        effective = parse_entries(mission.effective_authority())
        cause = discharge_cause(event)
        reason = f"completion event {event.event_type!r} discharged Mission authority"
        for mandate_id in tree.mandate_ids:
            mandate = self.get_mandate(mandate_id)
            if not mandate.is_live():
                continue
            remaining = restrict(mandate.entries(), effective)
            if not remaining:
                mandate.cascade(cause=cause, reason=reason, actor=actor, now=now)
            else:
                mandate.narrow(
                    remaining,
                    cause="discharge",
                    reason=reason,
                    actor=actor,
                    now=now,
                )
            effects.add(mandate)
        return effects

    def subtree_effects(
        self,
        root: ExecutionMandate,
        *,
        actor: Actor,
        now: datetime,
        effects: Effects | None = None,
    ) -> Effects:
        """After ``root`` changed (revoked, cascaded, narrowed): end or narrow its descendants."""
        effects = effects or Effects()
        tree = self.get_tree(root.mission_id)
        effects.expect[tree_id(root.mission_id)] = 0 if tree is None else tree.version
        if tree is None:
            return effects
        ceilings: dict[str, tuple[AuthorityEntry, ...] | None] = {
            root.id: root.entries() if root.is_live() else None
        }
        for child_id in tree.descendants(root.id):
            child = self.get_mandate(child_id)
            parent_id = child.parent_mandate_id
            assert parent_id is not None
            ceiling = ceilings.get(parent_id)
            if not child.is_live():
                ceilings[child.id] = None
                continue
            if ceiling is None:
                child.cascade(
                    cause={"kind": "parent", "id": parent_id},
                    reason=f"its parent Mandate {parent_id} ended",
                    actor=actor,
                    now=now,
                )
                ceilings[child.id] = None
            else:
                remaining = restrict(child.entries(), ceiling)
                if not remaining:
                    child.cascade(
                        cause={"kind": "parent", "id": parent_id},
                        reason=f"nothing it held remains within its parent {parent_id}",
                        actor=actor,
                        now=now,
                    )
                    ceilings[child.id] = None
                else:
                    child.narrow(
                        remaining,
                        cause="parent_narrowed",
                        reason=f"its parent Mandate {parent_id} was narrowed",
                        actor=actor,
                        now=now,
                    )
                    ceilings[child.id] = parse_entries(remaining)
            effects.add(child)
        return effects
