"""Records clock-driven transitions on time: Mission and Mandate expiry, suspension
deadlines, proposal expiry. Every replica may run one; the event store's per-aggregate version
check lets exactly one write of each transition succeed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ledger.application import Ledger
from projections.boards import MandateRegister, MissionBoard, ProposalBoard

log = logging.getLogger("mission_ledger.scheduler")


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        missions: MissionBoard,
        proposals: ProposalBoard,
        mandates: MandateRegister,
        *,
        interval: float,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._missions = missions
        self._proposals = proposals
        self._mandates = mandates
        self._on_tick = on_tick
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorded = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def tick(self) -> int:
        """Record every transition due now; returns how many were written here."""
        now = self._ledger.clock.now()
        written = 0
        for board in (self._missions, self._proposals, self._mandates):
            for aggregate_id in board.due(self._ledger.database, now):
                if self._ledger.record_due_transitions(aggregate_id) is not None:
                    written += 1
        self.recorded += written
        return written

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            if self._on_tick is not None:
                try:
                    self._on_tick()  # also while the store is unreachable
                except Exception:
                    log.exception("scheduler maintenance failed")
