"""Stored event topics are data: this list may only grow (with an upcaster for changes)."""

from __future__ import annotations

from pathlib import Path

from eventsourcing.utils import resolve_topic

from ledger.domain.access_requests import AccessRequest
from ledger.domain.apikeys import ApiKey
from ledger.domain.events import LedgerEvent
from ledger.domain.instances import AgentInstance
from ledger.domain.mandate_tree import MandateTree
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.metering import Meter
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.domain.streams import Stream

PINNED = Path(__file__).resolve().parents[1] / "fixtures" / "event_topics.txt"
AGGREGATES = (
    AccessRequest,
    AgentInstance,
    ApiKey,
    ExecutionMandate,
    MandateTree,
    Meter,
    Mission,
    Proposal,
    Stream,
)


def current_topics() -> set[str]:
    topics = set()
    for aggregate in AGGREGATES:
        topics.add(aggregate.TOPIC)
        for value in vars(aggregate).values():
            if isinstance(value, type) and issubclass(value, LedgerEvent):
                topics.add(value.TOPIC)
    return topics


def pinned_topics() -> set[str]:
    return {line.strip() for line in PINNED.read_text().splitlines() if line.strip()}


def test_no_released_topic_disappears() -> None:
    assert pinned_topics() - current_topics() == set()


def test_every_topic_is_pinned() -> None:
    assert current_topics() - pinned_topics() == set()


def test_every_pinned_topic_resolves_to_a_class() -> None:
    for topic in pinned_topics():
        assert resolve_topic(topic) is not None
