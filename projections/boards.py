"""The approval inbox (proposals) and the mission board (missions): list, filter, due times."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from projections.aggregate_tables import AggregateTable, micros


class ProposalBoard(AggregateTable[Proposal]):
    name = "proposal_board"
    table = "proposal_board"
    key = "proposal_id"
    aggregate_class = Proposal

    def columns(self, aggregate: Proposal) -> Mapping[str, Any]:
        return {
            "status": aggregate.status,
            "client_id": aggregate.client_id,
            "subject_sub": str(aggregate.subject.get("sub")),
            "next_deadline": micros(aggregate.next_deadline()),
        }


class MissionBoard(AggregateTable[Mission]):
    name = "mission_board"
    table = "mission_board"
    key = "mission_id"
    aggregate_class = Mission

    def columns(self, aggregate: Mission) -> Mapping[str, Any]:
        return {
            "state": aggregate.state,
            "client_id": aggregate.client_id,
            "subject_sub": str(aggregate.subject.get("sub")),
            "next_deadline": micros(aggregate.next_deadline()),
        }
