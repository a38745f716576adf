"""The Mission and Mandate resources now or as they stood at an instant, and the replay of a
Mission (SPEC 7.4 "Replay").

One composition for every reader: ``GET /v1/missions/{id}``, ``GET /v1/mandates/{id}`` (with
or without ``as_of``) and ``mission-ledger audit replay`` build their bodies here, from the
ledger's reads (``as_of``: each aggregate rebuilt from its events recorded by then) and the
same views (``api/views.py``, ``api/mandate_views.py``). A resource at an instant therefore
has exactly the shape of the live resource, computed as if read at that instant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from api.mandate_views import mandate_view
from api.views import event_view, mission_view
from ledger.application import Ledger
from ledger.domain.mandates import ExecutionMandate, Validity
from ledger.domain.missions import Mission
from ledger.persistence.eventlog import LoggedEvent

#: Called as ``(done, total)`` while a replay works through a Mission's Mandates.
Progress = Callable[[int, int], None]


class Reads(Protocol):
    """What the resources are built from: the live ledger, or ``Ledger.at(instant)``."""

    def mission_usage(self, mission: Mission) -> dict[str, Any] | None: ...

    def children_of(self, mandate: ExecutionMandate) -> list[str]: ...

    def mandate_validity(self, mandate: ExecutionMandate, now: datetime) -> Validity: ...

    def ancestors_of(self, mandate: ExecutionMandate) -> list[ExecutionMandate]: ...

    def history(self, originator_id: str) -> list[LoggedEvent]: ...


def _no_progress(done: int, total: int) -> None:
    del done, total


def mission_resource(reads: Reads, mission: Mission, now: datetime) -> dict[str, Any]:
    """The Mission resource at ``now``, as ``reads`` holds it."""
    return mission_view(mission, now, usage=reads.mission_usage(mission))


def mandate_resource(reads: Reads, mandate: ExecutionMandate, now: datetime) -> dict[str, Any]:
    """The Mandate resource at ``now`` (state, delegation chain, children, history), as
    ``reads`` holds it and what surrounds it."""
    return mandate_view(
        mandate,
        validity=reads.mandate_validity(mandate, now),
        ancestors=reads.ancestors_of(mandate),
        children=reads.children_of(mandate),
        history=reads.history(mandate.id),
        event_view=event_view,
        now=now,
    )


def mission_at(ledger: Ledger, mission_id: str, instant: datetime) -> dict[str, Any]:
    """The Mission resource as it stood at ``instant`` (``NotFound`` before its approval)."""
    past = ledger.at(instant)
    return mission_resource(past, past.get_mission(mission_id), instant)


def mandate_at(ledger: Ledger, mandate_id: str, instant: datetime) -> dict[str, Any]:
    """The Mandate resource as it stood at ``instant`` (``NotFound`` before its issuance)."""
    past = ledger.at(instant)
    return mandate_resource(past, past.get_mandate(mandate_id), instant)


def replay_mission(
    ledger: Ledger, mission_id: str, as_of: datetime, *, progress: Progress = _no_progress
) -> dict[str, Any]:
    """``{mission, mandates, events}``: the Mission resource at ``as_of``, every Mandate
    recorded under it by then (issuance order, delegations included) as its resource at
    ``as_of``, and the events of all of them up to ``as_of`` in log order.
    ``NotFound`` when the Mission had not been approved by ``as_of``."""
    past = ledger.at(as_of)
    mission = mission_resource(past, past.get_mission(mission_id), as_of)
    tree = past.get_tree(mission_id)
    mandate_ids = [] if tree is None else tree.mandate_ids
    progress(0, len(mandate_ids))
    mandates: list[dict[str, Any]] = []
    for done, mandate_id in enumerate(mandate_ids, start=1):
        mandates.append(mandate_resource(past, past.get_mandate(mandate_id), as_of))
        progress(done, len(mandate_ids))
    events = [event_view(e) for e in past.history(mission_id)]
    events.extend(event for view in mandates for event in view["history"])
    events.sort(key=lambda event: int(event["position"]))
    return {"mission": mission, "mandates": mandates, "events": events}
