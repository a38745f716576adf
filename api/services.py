"""The process-wide objects a request needs, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from ledger.application import Ledger
from ledger.clock import Clock
from ledger.settings import Settings
from projections.boards import MandateRegister, MissionBoard, ProposalBoard
from projections.decision_log import DecisionLog
from projections.evaluation_index import EvaluationIndex
from projections.follower import LogFollower
from projections.key_directory import KeyDirectory
from projections.pdp import DecisionPoint
from projections.signals import SignalLog

if TYPE_CHECKING:
    from api.decision_writer import DecisionWriter
    from api.gc_policy import GcPolicy
    from api.oauth import OAuthVerifier
    from api.push import PushDelivery
    from api.sse_hub import SseHub
    from api.subject_tokens import SubjectTokenVerifier
    from api.tokens import TokenVerifier
    from ledger.signing.keyring import Keyring


@dataclass
class Services:
    settings: Settings
    clock: Clock
    ledger: Ledger
    follower: LogFollower
    proposals: ProposalBoard
    missions: MissionBoard
    mandates: MandateRegister
    signals: SignalLog
    keys: KeyDirectory
    oauth: OAuthVerifier | None
    keyring: Keyring
    tokens: TokenVerifier
    index: EvaluationIndex
    pdp: DecisionPoint
    sse: SseHub
    subject_tokens: SubjectTokenVerifier
    decision_log: DecisionLog
    decisions: DecisionWriter
    push: PushDelivery | None = None  # set by the lifespan once started
    gc: GcPolicy | None = None  # set by the lifespan (settings.gc_freeze)


async def get_services(request: Request) -> Services:
    """(Async on purpose: FastAPI runs plain ``def`` dependencies in a worker thread.)"""
    services = request.app.state.services
    assert isinstance(services, Services)
    return services
