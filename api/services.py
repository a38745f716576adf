"""The process-wide objects a request needs, owned by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from api.evidence import DecisionRecordSource, no_decision_records
from ledger.application import Ledger
from ledger.application.metering import MeterWriter
from ledger.clock import Clock
from ledger.settings import Settings
from projections.boards import AccessRequestBoard, MandateRegister, MissionBoard, ProposalBoard
from projections.decision_log import DecisionLog
from projections.evaluation_index import EvaluationIndex
from projections.follower import LogFollower
from projections.key_directory import KeyDirectory
from projections.pdp import DecisionPoint
from projections.signals import SignalLog

if TYPE_CHECKING:
    from api.console.live import MissionWatch
    from api.gc_policy import GcPolicy
    from api.oauth import OAuthVerifier
    from api.requests_in_progress import RequestsInProgress
    from api.subject_tokens import SubjectTokenVerifier
    from api.tokens import TokenVerifier
    from api.workers.callbacks import CallbackDelivery
    from api.workers.checkpoints import Checkpointer
    from api.workers.decision_writer import DecisionRecorder
    from api.workers.proof_process import ProofVerifier
    from api.workers.push import PushDelivery
    from api.workers.sse_hub import SseHub
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
    access_requests: AccessRequestBoard
    signals: SignalLog
    keys: KeyDirectory
    oauth: OAuthVerifier | None
    keyring: Keyring
    tokens: TokenVerifier
    index: EvaluationIndex
    pdp: DecisionPoint
    sse: SseHub
    subject_tokens: SubjectTokenVerifier
    meters: MeterWriter
    console_watch: MissionWatch
    decision_log: DecisionLog
    decisions: DecisionRecorder
    #: Access-request callbacks: the submission check and the delivery worker.
    callbacks: CallbackDelivery
    #: The signatures of DPoP proofs, checked while the decision is made (decision 0023).
    proofs: ProofVerifier
    #: The HTTP requests in progress (whether a decision is the only one).
    requests: RequestsInProgress
    push: PushDelivery | None = None  # set by the lifespan once started
    gc: GcPolicy | None = None  # set by the lifespan (settings.gc_freeze)
    checkpoints: Checkpointer | None = None  # set by the lifespan once started
    #: Decision records for evidence bundles (api/evidence.py); the decision log plugs in here.
    decision_records: DecisionRecordSource = no_decision_records


async def get_services(request: Request) -> Services:
    """(Async on purpose: FastAPI runs plain ``def`` dependencies in a worker thread.)"""
    services = request.app.state.services
    assert isinstance(services, Services)
    return services
