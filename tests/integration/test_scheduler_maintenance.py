"""The scheduler's maintenance hook (signing-key refresh, retention, the GC policy) runs on
every tick even while recording due transitions fails, e.g. with the store unreachable."""

from __future__ import annotations

import threading

import pytest

from api.workers.scheduler import Scheduler
from ledger.application import Ledger
from ledger.persistence.snapshots import StateCodec
from projections.boards import MandateRegister, MissionBoard, ProposalBoard


def test_maintenance_runs_while_recording_due_transitions_fails(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = StateCodec(ledger.mapper.transcoder)
    missions = MissionBoard(codec)

    def unreachable(*_args: object) -> list[str]:
        raise ConnectionError("the store does not answer")

    monkeypatch.setattr(missions, "due", unreachable)
    ticks = threading.Semaphore(0)
    scheduler = Scheduler(
        ledger,
        missions,
        ProposalBoard(codec),
        MandateRegister(codec),
        interval=0.01,
        on_tick=ticks.release,
    )
    scheduler.start()
    try:
        for _ in range(3):
            assert ticks.acquire(timeout=5)
    finally:
        scheduler.stop()
    assert scheduler.recorded == 0
