"""Metering writes: reservations, usage reports and expiry, saved in groups.

Every metered permit must be durable before it is answered (a usage report may arrive at
any replica, and the invariant must hold across replicas), so metering is a write on the
decision path. ``MeterWriter`` keeps that write cheap:

* **Group commit.** One thread per process takes every metering operation waiting (from
  any number of concurrent decisions, usage reports and the scheduler), applies them in
  arrival order to the Meters they name, and saves every changed Meter in one transaction:
  decisions that arrive together share one commit. The first operation after an idle
  period is saved at once (no timer); those that arrive while it is being saved form the
  next group.
* **Optimistic concurrency across replicas.** A Meter is an aggregate of its own
  (``ledger.domain.metering``), so metering never contends with governance writes on the
  Mission. The writer keeps each Meter it has seen in memory and applies a group to a
  working copy; if another replica wrote the Meter meanwhile, the store rejects the save
  (same version twice), the writer brings its copies up to date from the store and applies
  the whole group again (each operation's outcome decided anew), with jittered back-off.
  Within one process the writer is the only one writing Meters, so it never races itself
  and needs neither the ``WriteGate`` nor the command cache of ``LedgerBase.execute``.
* A refusal is decided on the store's current state: before a reservation is refused for
  ``budget_exceeded`` or a usage report answers 404, the Meter is brought up to date (another
  replica may have released budget, or made the reservation reported). Accepted operations
  need no such read: if the copy was stale, the save conflicts and the group runs again.

Outcomes are per operation: a reservation refused for ``budget_exceeded`` does not stop
the others of its group.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import ChainMap, OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from eventsourcing.persistence import IntegrityError

from ledger.application.base import LedgerBase
from ledger.application.contention import backoff
from ledger.domain.actors import Actor
from ledger.domain.errors import BudgetExceeded, Conflict, LedgerError, NotFound, Unavailable
from ledger.domain.metering import (
    EXPIRED,
    Bounds,
    Meter,
    MeteredCall,
    Settlement,
    meter_id,
)
from ledger.persistence.reservations import ReservationDeadlines, micros

log = logging.getLogger("mission_ledger.metering")

MAX_ATTEMPTS = 32
MAX_GROUP = 1024
CACHED_METERS = 4096


@dataclass(frozen=True)
class Reserve:
    """Reserve ``call`` for the permit ``evaluation_id`` until ``expires_at``."""

    mission_id: str
    bounds: Bounds
    call: MeteredCall
    evaluation_id: str
    mandate_id: str | None
    expires_at: datetime


@dataclass(frozen=True)
class Report:
    """The PEP's usage report for the permit ``evaluation_id``."""

    mission_id: str
    evaluation_id: str
    outcome: Literal["executed", "aborted"]
    amount: str | None
    actor: Actor


@dataclass(frozen=True)
class Expire:
    """Release the Mission's reservations whose expiry has come."""

    mission_id: str


Operation = Reserve | Report | Expire


@dataclass(frozen=True)
class Reported:
    settlement: Settlement
    replayed: bool


Outcome = None | Reported | int | LedgerError
"""Per operation: ``None`` (reserved), ``Reported``, the number of reservations expired, or
the refusal."""


class _Refresh(Exception):  # control flow: a refusal to check against the store
    def __init__(self, meter: str) -> None:
        super().__init__(meter)
        self.meter = meter


class MeterWriter:
    """The one writer of Meters in this process (see the module docstring)."""

    def __init__(self, ledger: LedgerBase, *, max_group: int = MAX_GROUP) -> None:
        self._ledger = ledger
        self._max_group = max_group
        self._cond = threading.Condition()
        self._queue: list[tuple[Operation, Future[Outcome]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Meters as last saved or read from the store (never a working copy).
        self._meters: OrderedDict[str, Meter] = OrderedDict()
        #: Counters for the metrics endpoint.
        self.groups = 0
        self.operations = 0
        self.conflicts = 0
        self.apply_seconds = 0.0  # applying groups, their saves included
        self.save_seconds = 0.0  # in the store's write transaction

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MeterWriter:
        self._thread = threading.Thread(target=self._run, name="meter-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._cond:
            waiting, self._queue = self._queue, []
        for _, future in waiting:
            future.set_exception(Conflict("the service is shutting down; try again"))

    def __enter__(self) -> MeterWriter:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ submitting

    def submit(self, operation: Operation) -> Future[Outcome]:
        """Queue ``operation``; the future holds its outcome once its group is saved."""
        future: Future[Outcome] = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(Conflict("the service is shutting down; try again"))
                return future
            self._queue.append((operation, future))
            self._cond.notify()
        return future

    def reserve(self, operation: Reserve, timeout: float = 30.0) -> None:
        """Reserve and wait (raises the refusal)."""
        outcome = _raised(self.submit(operation).result(timeout))
        assert outcome is None

    def report(self, operation: Report, timeout: float = 30.0) -> Reported:
        outcome = _raised(self.submit(operation).result(timeout))
        assert isinstance(outcome, Reported)
        return outcome

    def expire(self, mission_id: str, timeout: float = 30.0) -> int:
        outcome = _raised(self.submit(Expire(mission_id)).result(timeout))
        assert isinstance(outcome, int)
        return outcome

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._queue:
                    return
                group = self._queue[: self._max_group]
                del self._queue[: self._max_group]
            self._settle(group)

    def _settle(self, group: list[tuple[Operation, Future[Outcome]]]) -> None:
        try:
            outcomes = self.apply([operation for operation, _ in group])
        except Exception as error:  # the store failed: every caller of the group hears it
            log.warning("metering group of %d failed", len(group), exc_info=True)
            refusal = (
                error
                if isinstance(error, LedgerError)
                else Unavailable(f"the metering write did not complete ({type(error).__name__})")
            )
            for _, future in group:
                future.set_exception(refusal)
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            future.set_result(outcome)

    # ------------------------------------------------------------------ one group

    def apply(self, operations: Sequence[Operation]) -> list[Outcome]:
        """Apply ``operations`` in order and save every changed Meter in one transaction,
        retrying from the store's state after a lost race (the writer thread's body; tests
        may call it directly)."""
        self.groups += 1
        self.operations += len(operations)
        started = time.perf_counter()
        try:
            return self._apply(operations)
        finally:
            self.apply_seconds += time.perf_counter() - started

    def _apply(self, operations: Sequence[Operation]) -> list[Outcome]:
        refreshed: set[str] = set()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return self._attempt(operations, refreshed)
            except _Refresh as refresh:
                self._fast_forward([refresh.meter])
                refreshed.add(refresh.meter)
            except IntegrityError:
                self.conflicts += 1
                touched = sorted({meter_id(op.mission_id) for op in operations})
                self._fast_forward(touched)
                refreshed.update(touched)
                if attempt < MAX_ATTEMPTS:
                    backoff(min(attempt, 6))
            except BaseException:
                # Whatever the store did, these copies may no longer be current.
                self._forget({meter_id(op.mission_id) for op in operations})
                raise
        return [
            Conflict("the Mission's meter kept changing concurrently; try again")
            for _ in operations
        ]

    def _attempt(self, operations: Sequence[Operation], refreshed: set[str]) -> list[Outcome]:
        now = self._ledger.clock.now()
        copies: dict[str, Meter | None] = {}
        outcomes: list[Outcome] = []
        for operation in operations:
            key = meter_id(operation.mission_id)
            if key not in copies:
                held = self._known(key)
                copy = None if held is None else _fork(held)
                if copy is not None:
                    copy.expire_due(now)
                copies[key] = copy
            try:
                outcomes.append(self._one(operation, key, copies, now))
            except (NotFound, BudgetExceeded) as error:
                # Refusals are decided on the store's current state: the copy held here may
                # miss what another replica wrote (a reservation, a release).
                if key not in refreshed:
                    raise _Refresh(key) from None
                outcomes.append(error)
            except LedgerError as error:
                outcomes.append(error)
        changed = [m for m in copies.values() if m is not None and m.pending_events]
        if changed:
            saving = time.perf_counter()
            try:
                self._ledger.save(*changed, reservations=_deadlines(changed))
            finally:
                self.save_seconds += time.perf_counter() - saving
        for key, meter in copies.items():
            if meter is not None:
                self._remember(key, _joined(meter))
        return outcomes

    @staticmethod
    def _one(
        operation: Operation, key: str, copies: dict[str, Meter | None], now: datetime
    ) -> Outcome:
        meter = copies[key]
        if isinstance(operation, Reserve):
            if meter is None:
                meter = Meter.open(
                    mission_id=operation.mission_id, bounds=operation.bounds, now=now
                )
                copies[key] = meter
            meter.reserve(
                operation.call,
                evaluation_id=operation.evaluation_id,
                expires_at=operation.expires_at,
                mandate_id=operation.mandate_id,
                now=now,
            )
            return None
        if isinstance(operation, Report):
            if meter is None:
                raise NotFound(f"no reservation for evaluation {operation.evaluation_id!r}")
            settlement, replayed = meter.report(
                operation.evaluation_id,
                outcome=operation.outcome,
                amount=operation.amount,
                actor=operation.actor,
                now=now,
            )
            return Reported(settlement=settlement, replayed=replayed)
        # Expire: due reservations were released when the Meter was first touched.
        if meter is None:
            return 0
        return sum(
            1
            for event in meter.pending_events
            if isinstance(event, Meter.Released) and event.outcome == EXPIRED
        )

    # ------------------------------------------------------------------ the Meters held

    def _known(self, key: str) -> Meter | None:
        """The Meter as last saved or read, else as stored (``None``: not opened yet)."""
        meter = self._meters.get(key)
        if meter is not None:
            self._meters.move_to_end(key)
            return meter
        loaded = self._load(key)
        if loaded is not None:
            self._remember(key, loaded)
        return loaded

    def _load(self, key: str) -> Meter | None:
        meter: Meter | None = None
        for event in self._ledger.events.get(key):
            assert isinstance(event, Meter.Event)
            meter = event.mutate(meter)
        return meter

    def _fast_forward(self, keys: Sequence[str]) -> None:
        """Bring the held copies of ``keys`` up to what the store holds."""
        for key in keys:
            meter = self._meters.get(key)
            if meter is None:
                continue  # loaded afresh when next needed
            for event in self._ledger.events.get(key, gt=meter.version):
                assert isinstance(event, Meter.Event)
                event.mutate(meter)

    def _remember(self, key: str, meter: Meter) -> None:
        self._meters[key] = meter
        self._meters.move_to_end(key)
        while len(self._meters) > CACHED_METERS:
            self._meters.popitem(last=False)

    def _forget(self, keys: set[str]) -> None:
        for key in keys:
            self._meters.pop(key, None)


def _deadlines(meters: Sequence[Meter]) -> ReservationDeadlines:
    """The deadline rows the pending events of ``meters`` add and remove (written in the
    same transaction: ``ledger.persistence.reservations``)."""
    added: list[tuple[str, str, int]] = []
    removed: list[str] = []
    for meter in meters:
        for event in meter.pending_events:
            if isinstance(event, Meter.Reserved):
                added.append((event.evaluation_id, event.originator_id, micros(event.expires_at)))
            elif isinstance(event, Meter.UsageCommitted | Meter.Released):
                removed.append(event.evaluation_id)
    return ReservationDeadlines(added=tuple(added), removed=tuple(removed))


def _fork(meter: Meter) -> Meter:
    """A working copy of a held Meter for one attempt, in time independent of its history:
    the reservations settled so far (which only grow, and answer repeated reports) are
    shared read-only under an overlay that takes this attempt's settlements."""
    clone = Meter.__new__(Meter)
    state = dict(meter.__dict__)
    for name, value in state.items():
        if name == "settled":
            state[name] = ChainMap({}, value)
        elif isinstance(value, dict | list):
            state[name] = copy.copy(value)  # as ``working_copy``: events change these in place
    state["_pending_events"] = []
    clone.__dict__.update(state)
    return clone


def _joined(meter: Meter) -> Meter:
    """A saved working copy as the Meter to hold: its overlay folded into the shared
    ``settled`` (the held copy it came from is replaced, never used again)."""
    settled = meter.__dict__["settled"]
    if isinstance(settled, ChainMap):
        (base,) = settled.maps[1:]
        base.update(settled.maps[0])
        meter.__dict__["settled"] = base
    return meter


def _raised(outcome: Outcome) -> Outcome:
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome
