"""The durable read models of one process, built in one place (the app and the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.application import Ledger
from ledger.persistence.snapshots import StateCodec
from ledger.signing.keyring import Keyring
from projections.boards import MandateRegister, MissionBoard, ProposalBoard
from projections.follower import DurableProjection
from projections.signals import SignalLog


@dataclass(frozen=True)
class ReadModels:
    proposals: ProposalBoard
    missions: MissionBoard
    mandates: MandateRegister
    signals: SignalLog

    @property
    def durable(self) -> list[DurableProjection]:
        """In the order the follower applies them."""
        return [self.proposals, self.missions, self.mandates, self.signals]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.durable]


def read_models(ledger: Ledger, signer: Keyring, issuer: str) -> ReadModels:
    codec = StateCodec(ledger.mapper.transcoder)
    return ReadModels(
        proposals=ProposalBoard(codec),
        missions=MissionBoard(codec),
        mandates=MandateRegister(codec),
        signals=SignalLog(codec, signer, issuer),
    )
