"""Aggregate-state read models: the approval inbox (proposals), the mission board, the
mandate register and the access-request board. Each lists, filters, and finds clock
deadlines that are due."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ledger.domain.access_requests import AccessRequest
from ledger.domain.actors import Actor
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.persistence.database import Database
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
            "approver_key": approver_key(aggregate),
            "next_deadline": micros(aggregate.next_deadline()),
        }

    def fill_approver_keys(self, db: Database, batch: int = 1_000) -> int:
        """Set ``approver_key`` on rows written before the column existed (migration 0009),
        from their snapshots; returns how many rows it set. A Mission's approver never
        changes, so this races with nothing the follower writes."""
        filled = 0
        while True:
            rows = db.fetchall(
                "SELECT mission_id, snapshot FROM mission_board "
                "WHERE approver_key IS NULL LIMIT %s",
                (batch,),
            )
            if not rows:
                return filled
            with db.transaction() as cur:
                for row in rows:
                    mission = self.codec.thaw(bytes(row["snapshot"]))
                    assert isinstance(mission, Mission)
                    cur.execute(
                        "UPDATE mission_board SET approver_key = %s WHERE mission_id = %s",
                        (approver_key(mission), row["mission_id"]),
                    )
            filled += len(rows)


def approver_key(mission: Mission) -> str:
    """The identity of the principal that approved the Mission (``Actor.key``)."""
    return Actor.from_json(mission.approver).key


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


class AccessRequestBoard(AggregateTable[AccessRequest]):
    """Access requests: the approver inbox, task expiry, each caller's recent submissions."""

    name = "access_request_board"
    table = "access_request_board"
    key = "task_id"
    aggregate_class = AccessRequest

    def columns(self, aggregate: AccessRequest) -> Mapping[str, Any]:
        return {
            "status": aggregate.status,
            "mission_id": aggregate.mission_id,
            "client_id": aggregate.client_id,
            "requester_scope": aggregate.requester_scope,
            "created_at": micros(aggregate.created_on),
            "next_deadline": micros(aggregate.next_deadline()),
        }

    def submitted_since(self, db: Database, requester_scope: str, since: datetime) -> list[int]:
        """When (microseconds) each task the caller submitted after ``since`` was created,
        oldest first: the per-caller rate limit's window."""
        rows = db.fetchall(
            "SELECT created_at FROM access_request_board "
            "WHERE requester_scope = %s AND created_at > %s ORDER BY created_at",
            (requester_scope, micros(since)),
        )
        return [int(row["created_at"]) for row in rows]
