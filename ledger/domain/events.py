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

from dataclasses import dataclass
from datetime import datetime

from eventsourcing.domain import CanInitAggregate, CanMutateAggregate

TOPIC_PREFIX = "mission-ledger:"


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
