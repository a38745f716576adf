"""Base classes for every stored event.

Aggregates here have string ids (``msn_…``, ``prp_…``) rather than the library's
UUIDs, so the event bases are declared explicitly (eventsourcing 9.5 ``Event``
and ``Created`` for ``BaseAggregate[str]``).

Stored topics are explicit strings of the form ``mission-ledger:<Aggregate>.<Event>``
and are independent of module paths: a class may move freely, but a topic, once
released, must never change without an upcaster (``class_version`` +
``upcast_vN_vN+1``). ``tests/unit/test_event_topics.py`` pins the full list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.domain import BaseAggregate, CanInitAggregate, CanMutateAggregate

TOPIC_PREFIX = "mission-ledger:"

#: The optional member by which an event names the ledger write that recorded it (see
#: ``name_the_write``): ``{"kind": "write", "id": <originator_id>, "version": <n>}`` of that
#: write's first event. Events recorded before it existed have none.
CAUSED_BY = "caused_by"
WRITE = "write"


@dataclass(frozen=True)
class LedgerEvent(CanMutateAggregate[str]):
    """Any event of any Mission Ledger aggregate."""

    originator_id: str
    originator_version: int
    timestamp: datetime


@dataclass(frozen=True)
class LedgerCreated(LedgerEvent, CanInitAggregate[str]):
    """The first event of an aggregate."""

    originator_topic: str


def write_cause(event: LedgerEvent) -> dict[str, Any]:
    return {"kind": WRITE, "id": event.originator_id, "version": event.originator_version}


def written_by(event: LedgerEvent) -> Mapping[str, Any] | None:
    """The write cause an event records (None: it records none, or another kind)."""
    cause = getattr(event, CAUSED_BY, None)
    if isinstance(cause, Mapping) and cause.get("kind") == WRITE:
        return cause
    return None


def name_the_write(
    changed: Sequence[BaseAggregate[str]], first: BaseAggregate[str] | None = None
) -> None:
    """Before one ledger write is saved: every pending event that has a ``caused_by``
    member names the write's first event, that of ``first`` (the command's result) if it
    has one, else the first of ``changed`` (itself, for that event). Every consequence of
    one write — a cascade, a supersession, a clock transition found on the way — so names
    one cause, whatever aggregate it belongs to."""
    pending = [*(first.pending_events if first is not None else ())]
    pending += [e for a in changed for e in a.pending_events]
    if not pending:
        return
    root = pending[0]
    assert isinstance(root, LedgerEvent)
    cause = write_cause(root)
    for aggregate in changed:
        events = aggregate.pending_events
        for index, event in enumerate(events):
            if _names_its_write(event) and getattr(event, CAUSED_BY) is None:
                events[index] = dataclasses.replace(event, **{CAUSED_BY: dict(cause)})  # type: ignore[type-var]


def _names_its_write(event: object) -> bool:
    cls = type(event)
    known = _CAUSE_MEMBER.get(cls)
    if known is None:
        known = dataclasses.is_dataclass(cls) and any(
            f.name == CAUSED_BY for f in dataclasses.fields(cls)
        )
        _CAUSE_MEMBER[cls] = known
    return known


_CAUSE_MEMBER: dict[type, bool] = {}  # event class -> whether it has a caused_by member
