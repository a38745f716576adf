"""Metering writes: reservations, usage reports and expiry, saved in groups.

Every metered permit must be durable before it is answered (a usage report may arrive at
any replica, and the invariant must hold across replicas), so metering is a write on the
decision path. ``MeterWriter`` keeps that write cheap:

* **Group commit.** One thread per process takes every metering operation waiting (from
  any number of concurrent decisions, usage reports and the scheduler) and has them applied
  in arrival order to the Meters they name, every changed Meter saved in one transaction:
  decisions that arrive together share one commit. The first operation after an idle
  period is saved at once (no timer); those that arrive while it is being saved form the
  next group.
* **Two halves.** This module is the half that stays beside the decision path: the queue,
  the groups, the leases held in memory and their draws. Applying a group to the Meters and
  saving it is ``meter_book.MeterBook``'s (optimistic concurrency across replicas, refusals
  decided on the store's current state: see its docstring), behind the ``MeterBackend``
  interface: on this thread (``METER_WRITER=thread``), or in a process of its own
  (``METER_WRITER=process``, ``api/workers/meter_process.py``) so that its work does not
  take turns with the decision path at the interpreter lock (decision 0019, "A writer
  process").

Outcomes are per operation: a reservation refused for ``budget_exceeded`` does not stop
the others of its group.

**Budget leases** (decision 0019): the writer takes, with the first metered permit of a
Mission, a slice of what remains of its bounds in one event (``LeaseGranted``, this replica
its holder) and reserves that permit from it. Later permits reserve from the slice in memory
(``draw``: no database, no waiting) and are answered at once; the writer records them
(``Reserved`` under the lease) with its next group, so a usage report reaching any replica
finds them a few milliseconds later. A permit the lease cannot cover goes the durable way:
its group returns the lease (every draw made from it is recorded first) and takes a new one.
A lease is renewed in the background when it runs low, returned when idle, at shutdown, and
used only until ``LEASE_MARGIN`` before its expiry, when the Meter itself ends it (a crashed
holder's unused slice, and the unrecorded draws in it, come back exactly once).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ledger.application.base import LedgerBase
from ledger.application.meter_book import MeterBook
from ledger.application.meter_operations import (
    Applied,
    Draw,
    Expire,
    GrantedLease,
    Operation,
    Outcome,
    Renew,
    Report,
    Reported,
    Reserve,
    ReturnLease,
    write_failure,
)
from ledger.domain.errors import Conflict, LedgerError
from ledger.domain.metering import Bounds, MeteredCall, parse_units

__all__ = [  # the operations are part of this module's interface (routes import them here)
    "Applied",
    "Draw",
    "Expire",
    "MeterBackend",
    "MeterWriter",
    "Operation",
    "Outcome",
    "Renew",
    "Report",
    "Reported",
    "Reserve",
    "ReturnLease",
]

log = logging.getLogger("mission_ledger.metering")

MAX_GROUP = 1024
#: A lease is used until this long before its expiry (time to record its last draws).
LEASE_MARGIN = timedelta(seconds=10)
#: A lease nobody drew from for this long is returned.
LEASE_IDLE_SECONDS = 2.0
#: How often the writer looks for leases to return when nothing else wakes it.
HOUSEKEEPING_SECONDS = 0.5
#: How long draws (permits already answered) wait to be recorded together, unless something
#: else wakes the writer first: one commit for many of them.
DRAW_LINGER_SECONDS = 0.02
#: A group starts at once when this many draws wait.
DRAW_BATCH = 512
#: Nothing more is drawn from a lease while the oldest draw not yet recorded is older than
#: this share of the lease's margin: a draw recorded after its lease's expiry is refused by
#: the Meter, and its permit was answered already. Permits then take the durable way and
#: wait for the writer, which slows the decision path down to the writer's pace.
DRAW_BACKLOG_SHARE = 0.25


class MeterBackend(Protocol):
    """Where groups are applied and saved: ``MeterBook`` on the writer thread, or the Meter
    writer process's proxy (``api/workers/meter_process.py``). ``apply`` raises when the
    group could not be written (the store failed, the process died): every operation of
    the group is then answered with that failure."""

    #: Times its process was started again after one died (0 on the writer thread).
    restarts: int
    #: Times its process was retired for being starved under ``SCHED_IDLE`` (decision 0025).
    starved: int

    def apply(self, operations: Sequence[Operation]) -> Applied: ...

    def close(self) -> None: ...


@dataclass
class HeldLease:
    """This replica's lease on one Meter, as the decision path draws from it (in memory)."""

    mission_id: str
    lease_id: str
    bounds: Bounds
    currency: str | None
    units: int | None
    calls: int | None
    classes: dict[str, int]
    #: Drawn from until then (the lease's expiry minus a margin), renewed after.
    use_until: datetime
    renew_after: datetime
    #: The slice as granted, to tell when it runs low.
    granted_units: int | None
    granted_calls: int | None
    last_used: float = field(default_factory=time.monotonic)
    renewing: bool = False

    def take(self, call: MeteredCall) -> bool:
        """Take ``call`` from the slice when it fits (False: it does not)."""
        units = 0
        if self.units is not None and call.amount is not None:
            if call.currency != self.currency:
                return False
            units = parse_units(call.amount) or 0
            if units > self.units:
                return False
        if self.calls is not None and self.calls < 1:
            return False
        klass = call.call_class
        if klass is not None and klass in self.classes and self.classes[klass] < 1:
            return False
        if self.units is not None:
            self.units -= units
        if self.calls is not None:
            self.calls -= 1
        if klass is not None and klass in self.classes:
            self.classes[klass] -= 1
        self.last_used = time.monotonic()
        return True

    def low(self) -> bool:
        """A quarter or less of the slice is left (time to renew in the background)."""
        return (
            self.units is not None
            and self.granted_units is not None
            and self.units * 4 <= self.granted_units
        ) or (
            self.calls is not None
            and self.granted_calls is not None
            and self.calls * 4 <= self.granted_calls
        )


class Waiter(Protocol):
    """Who hears an operation's outcome: a ``Future``, or one share of a batch."""

    def set_result(self, result: Outcome) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...


def _answer(waiter: Waiter, outcome: Outcome) -> None:
    """Give ``waiter`` its outcome (a refusal too is an outcome). Its caller may have given
    up meanwhile: an awaiting request cancelled (``asyncio.wrap_future`` cancels the future
    too) must not end the writer thread, which still has the rest of the group to answer
    and its draws to record."""
    try:
        waiter.set_result(outcome)
    except InvalidStateError:
        log.info("a metering outcome was not delivered: its caller had given up")


def _fail(waiter: Waiter, error: BaseException) -> None:
    """``waiter``'s operation could not be applied (as ``_answer``: once, if still wanted)."""
    try:
        waiter.set_exception(error)
    except InvalidStateError:
        log.info("a metering failure was not delivered: its caller had given up")


class _Batch:
    """The outcomes of operations submitted together (``submit_many``): one future, set
    once every one of them is settled, instead of one future (and one wake-up of the event
    loop) per operation."""

    def __init__(self, size: int) -> None:
        self.future: Future[list[Outcome]] = Future()
        self._outcomes: list[Outcome] = [None] * size
        self._left = size
        self._lock = threading.Lock()
        if not size:
            self.future.set_result([])

    def settle(self, index: int, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes[index] = outcome
            self._left -= 1
            done = self._left == 0
        if done:
            try:
                self.future.set_result(self._outcomes)
            except InvalidStateError:  # its caller gave up (see ``_answer``)
                log.info("metering outcomes were not delivered: their caller had given up")


class _Share:
    """One operation's place in a ``_Batch`` (a ``Waiter``). A failed group answers each
    of its operations with the refusal (a ``LedgerError``) as that operation's outcome."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    def set_result(self, result: Outcome) -> None:
        self._batch.settle(self._index, result)

    def set_exception(self, exception: BaseException | None) -> None:
        self._batch.settle(self._index, write_failure(exception))


class MeterWriter:
    """The one writer of Meters in this process (see the module docstring)."""

    def __init__(
        self,
        ledger: LedgerBase,
        *,
        max_group: int = MAX_GROUP,
        lease_seconds: float = 0,
        holder: str | None = None,
        backend: MeterBackend | None = None,
    ) -> None:
        """``backend``: where groups are applied (default: a ``MeterBook`` on ``ledger``,
        on the writer thread); it must lease for ``holder`` with ``lease_seconds``."""
        self._ledger = ledger
        self._max_group = max_group
        #: Lease lifetime (0: no leases, a durable reservation per permit).
        self._lease_ttl = timedelta(seconds=lease_seconds)
        self._margin = min(LEASE_MARGIN, self._lease_ttl / 3)
        self._draw_backlog = self._margin.total_seconds() * DRAW_BACKLOG_SHARE
        self.holder = holder or "rpl_" + secrets.token_hex(6)
        self._backend = backend or MeterBook(
            ledger, holder=self.holder, lease_seconds=lease_seconds
        )
        self._cond = threading.Condition()
        #: Operations waiting for a group, each with when it was queued (monotonic).
        self._queue: list[tuple[Operation, Waiter | None, float]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: This replica's leases by Mission, and the draws not yet handed to a group.
        self._leases: dict[str, HeldLease] = {}
        self._draws: list[Draw] = []
        self._first_draw = 0.0  # when the oldest waiting draw was made (monotonic)
        self._returning: list[ReturnLease] = []
        #: Counters for the metrics endpoint.
        self.groups = 0
        self.operations = 0
        self.conflicts = 0
        self.drawn = 0  # permits answered from a lease, without waiting
        self.reserved_durably = 0  # permits that waited for a group
        self.apply_seconds = 0.0  # applying groups, their saves included
        self.save_seconds = 0.0  # in the store's write transaction

    @property
    def leasing(self) -> bool:
        return self._lease_ttl > timedelta(0)

    @property
    def restarts(self) -> int:
        """Meter writer processes started again after one died (``METER_WRITER=process``)."""
        return self._backend.restarts

    @property
    def starved(self) -> int:
        """Meter writer processes retired because they were starved under ``SCHED_IDLE``."""
        return self._backend.starved

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MeterWriter:
        self._thread = threading.Thread(target=self._run, name="meter-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Record every draw, return every lease, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._backend.close()
        with self._cond:
            waiting, self._queue = self._queue, []
        for _, future, _ in waiting:
            if future is not None:
                _fail(future, Conflict("the service is shutting down; try again"))

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
            self._queue.append((operation, future, time.monotonic()))
            if isinstance(operation, Reserve):
                self.reserved_durably += 1
            self._cond.notify()
        return future

    def submit_many(self, operations: Sequence[Reserve | Report | Expire]) -> Future[list[Outcome]]:
        """Queue ``operations`` together; the future holds their outcomes, in order, once
        every one is saved (a refusal, or a failed group's error, as that operation's
        outcome: never raised)."""
        batch = _Batch(len(operations))
        with self._cond:
            if self._stopping:
                refusal = Conflict("the service is shutting down; try again")
                for index in range(len(operations)):
                    batch.settle(index, refusal)
                return batch.future
            queued = time.monotonic()
            for index, operation in enumerate(operations):
                self._queue.append((operation, _Share(batch, index), queued))
                if isinstance(operation, Reserve):
                    self.reserved_durably += 1
            if operations:
                self._cond.notify()
        return batch.future

    def backlog(self) -> tuple[int, float]:
        """(how many operations wait for a group, how long the oldest has waited in
        seconds): usage reports, durable reservations, expiries, lease renewals, and
        permits drawn from a lease but not yet recorded. A backlog that grows, or ages,
        means the writer is not keeping up (each waiting report holds its reservation,
        which may expire)."""
        with self._cond:
            count = len(self._queue) + len(self._draws)
            since = [self._queue[0][2]] if self._queue else []
            if self._draws:
                since.append(self._first_draw)
        return count, (time.monotonic() - min(since)) if since else 0.0

    def draw(
        self,
        *,
        mission_id: str,
        call: MeteredCall,
        evaluation_id: str,
        mandate_id: str | None,
        expires_at: datetime,
        now: datetime,
    ) -> bool:
        """Reserve ``call`` from this replica's lease on the Mission, in memory: True when
        the lease covered it (the permit may be answered now; the writer records it with its
        next group), False when the permit must be reserved the durable way (``submit``)."""
        with self._cond:
            lease = self._leases.get(mission_id)
            if self._stopping or lease is None or now >= lease.use_until or self._behind():
                return False
            if not lease.take(call):
                return False
            self._draws.append(
                Draw(
                    mission_id=mission_id,
                    lease_id=lease.lease_id,
                    call=call,
                    evaluation_id=evaluation_id,
                    mandate_id=mandate_id,
                    expires_at=expires_at,
                )
            )
            self.drawn += 1
            if len(self._draws) == 1:
                self._first_draw = time.monotonic()
            if not lease.renewing and (lease.low() or now >= lease.renew_after):
                lease.renewing = True
                renew = Renew(mission_id, lease.lease_id, lease.bounds)
                self._queue.append((renew, None, time.monotonic()))
                self._cond.notify()
            elif len(self._draws) >= DRAW_BATCH:
                self._cond.notify()
            return True

    def _behind(self) -> bool:
        """The writer has not recorded the oldest draw within ``DRAW_BACKLOG_SHARE`` of the
        lease margin (under the lock): starved of CPU, or its store slow."""
        return bool(self._draws) and time.monotonic() - self._first_draw > self._draw_backlog

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
                while not (self._queue or self._returning or self._stopping):
                    if self._draws:
                        linger = self._first_draw + DRAW_LINGER_SECONDS - time.monotonic()
                        if linger <= 0 or len(self._draws) >= DRAW_BATCH:
                            break
                        self._cond.wait(linger)
                    elif self._leases:
                        self._cond.wait(HOUSEKEEPING_SECONDS)
                        if self._retire_unused():
                            break
                    else:
                        self._cond.wait()
                stopping = self._stopping
                if stopping and not (self._queue or self._draws or self._returning or self._leases):
                    return
                group = self._group()
            if group:
                self._settle(group)

    def _group(self) -> list[tuple[Operation, Waiter | None]]:
        """The next group (under the lock): every draw made so far, then the leases this
        group returns (each after its draws), then the waiting operations. A permit that
        waited for the durable way is drawn from a lease installed meanwhile when it fits;
        a Mission whose permit does not fit its lease, or that asks for a renewal, has its
        lease retired here: from now on nothing draws from it."""
        now = self._ledger.clock.now()
        taken = self._queue[: self._max_group]
        del self._queue[: self._max_group]
        ops: list[tuple[Operation, Waiter | None]] = []
        for operation, future, _ in taken:
            lease = self._leases.get(operation.mission_id)
            if isinstance(operation, Renew):
                if lease is None or lease.lease_id != operation.lease_id:
                    continue  # replaced already
                self._retire(operation.mission_id)
            elif isinstance(operation, Reserve) and operation.approval_id is None and lease:
                if now < lease.use_until and lease.take(operation.call):
                    self._draws.append(_drawn(operation, lease.lease_id))
                    assert future is not None
                    _answer(future, None)
                    continue
                self._retire(operation.mission_id)
            ops.append((operation, future))
        if self._stopping:
            for mission_id in list(self._leases):
                self._retire(mission_id)
        draws: list[tuple[Operation, Waiter | None]] = [(d, None) for d in self._draws]
        returns: list[tuple[Operation, Waiter | None]] = [(r, None) for r in self._returning]
        self._draws, self._returning = [], []
        return [*draws, *returns, *ops]

    def _retire(self, mission_id: str) -> None:
        lease = self._leases.pop(mission_id)
        self._returning = [*self._returning, ReturnLease(mission_id, lease.lease_id)]

    def _retire_unused(self) -> bool:
        """Retire leases idle for ``LEASE_IDLE_SECONDS`` or past their use (under the lock);
        True when there is something to record."""
        now = self._ledger.clock.now()
        idle = time.monotonic() - LEASE_IDLE_SECONDS
        for mission_id, lease in list(self._leases.items()):
            if lease.last_used < idle or now >= lease.use_until:
                self._retire(mission_id)
        return bool(self._returning)

    def _settle(self, group: list[tuple[Operation, Waiter | None]]) -> None:
        try:
            outcomes = self.apply([operation for operation, _ in group])
        except Exception as error:  # the store failed: every caller of the group hears it
            log.warning("metering group of %d failed", len(group), exc_info=True)
            refusal = write_failure(error)
            for _, future in group:
                if future is not None:
                    _fail(future, refusal)
            return
        for (operation, future), outcome in zip(group, outcomes, strict=True):
            if future is not None:
                _answer(future, outcome)
            elif isinstance(outcome, LedgerError) and not isinstance(operation, Renew):
                # A draw the Meter refused was answered as a permit already: its lease
                # covered it, and still does until the lease expires.
                log.error("metering %s refused: %s", type(operation).__name__, outcome.detail)

    # ------------------------------------------------------------------ one group

    def apply(self, operations: Sequence[Operation]) -> list[Outcome]:
        """Have ``operations`` applied in order and saved in one transaction (the writer
        thread's body; tests may call it directly); the leases granted become what the
        decision path draws from."""
        self.groups += 1
        self.operations += len(operations)
        applied = self._backend.apply(operations)
        self.conflicts += applied.conflicts
        self.apply_seconds += applied.apply_seconds
        self.save_seconds += applied.save_seconds
        self._install(applied.granted)
        return applied.outcomes

    def _install(self, granted: Sequence[GrantedLease]) -> None:
        """After the save: the leases granted become what the decision path draws from."""
        if not granted:
            return
        with self._cond:
            for lease in granted:
                mission_id = lease.mission_id
                if self._stopping or mission_id in self._leases:
                    # Nothing may draw from it (stopping, or a lease installed meanwhile).
                    self._returning = [*self._returning, ReturnLease(mission_id, lease.lease_id)]
                    self._cond.notify()
                    continue
                use_until = lease.expires_at - self._margin
                self._leases[mission_id] = HeldLease(
                    mission_id=mission_id,
                    lease_id=lease.lease_id,
                    bounds=lease.bounds,
                    currency=lease.bounds.currency,
                    units=lease.units,
                    calls=lease.calls,
                    classes=dict(lease.classes),
                    use_until=use_until,
                    renew_after=use_until - (self._lease_ttl - self._margin) / 2,
                    granted_units=lease.units,
                    granted_calls=lease.calls,
                )


def _drawn(operation: Reserve, lease_id: str) -> Draw:
    return Draw(
        mission_id=operation.mission_id,
        lease_id=lease_id,
        call=operation.call,
        evaluation_id=operation.evaluation_id,
        mandate_id=operation.mandate_id,
        expires_at=operation.expires_at,
    )


def _raised(outcome: Outcome) -> Outcome:
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome
