"""Aggregate-state read models: the approval inbox (proposals), the mission board and the
mandate register. Each lists, filters, and finds clock deadlines that are due."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.domain.mandates import ExecutionMandate
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


class MandateRegister(AggregateTable[ExecutionMandate]):
    """Every Mandate's current state: inspection, the kill switch's reach, expiry times."""

    name = "mandate_register"
    table = "mandate_register"
    key = "mandate_id"
    aggregate_class = ExecutionMandate

    def columns(self, aggregate: ExecutionMandate) -> Mapping[str, Any]:
        return {
            "mission_id": aggregate.mission_id,
            "state": aggregate.state,
            "client_id": str(aggregate.holder.get("client_id")),
            "instance_id": aggregate.holder.get("instance_id"),
            "parent_mandate_id": aggregate.parent_mandate_id,
            "depth": aggregate.depth,
            "expires_at": micros(aggregate.expires_at),
            "next_deadline": micros(aggregate.next_deadline()),
        }
