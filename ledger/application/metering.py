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

import copy
import logging
import secrets
import threading
import time
from collections import ChainMap, OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from eventsourcing.persistence import IntegrityError

from ledger.application.base import LedgerBase
from ledger.application.contention import backoff
from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.errors import BudgetExceeded, Conflict, LedgerError, NotFound, Unavailable
from ledger.domain.metering import (
    EXPIRED,
    Bounds,
    Lease,
    Meter,
    MeteredCall,
    Settlement,
    meter_id,
    parse_units,
)
from ledger.persistence.reservations import ReservationDeadlines, micros

log = logging.getLogger("mission_ledger.metering")

#: Exceptions that come from one operation's data or this module's code, never from the
#: store (whose errors are the library's, ``sqlite3``'s or psycopg's own classes): a group
#: that raises one is applied again one operation at a time (``MeterWriter.apply``).
OPERATION_FAULTS = (ValueError, TypeError, KeyError, ArithmeticError, AttributeError)

MAX_ATTEMPTS = 32
MAX_GROUP = 1024
CACHED_METERS = 4096

#: A lease takes 1/LEASE_SHARE of what remains of each bound (at least the permit's need).
LEASE_SHARE = 8
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


@dataclass(frozen=True)
class Reserve:
    """Reserve ``call`` for the permit ``evaluation_id`` until ``expires_at``."""

    mission_id: str
    bounds: Bounds
    call: MeteredCall
    evaluation_id: str
    mandate_id: str | None
    expires_at: datetime
    #: An approved ``mission_budget_increase`` whose use this permit spends: the bounds are
    #: raised by what the call needs (never under a lease).
    approval_id: str | None = None


@dataclass(frozen=True)
class Draw:
    """A permit already answered from this replica's lease ``lease_id``: record it."""

    mission_id: str
    lease_id: str
    call: MeteredCall
    evaluation_id: str
    mandate_id: str | None
    expires_at: datetime


@dataclass(frozen=True)
class ReturnLease:
    """This replica no longer draws from ``lease_id``: give back what it still holds."""

    mission_id: str
    lease_id: str


@dataclass(frozen=True)
class Renew:
    """Replace the Mission's lease ``lease_id`` (it runs low or old) by a fresh one; no
    waiter."""

    mission_id: str
    lease_id: str
    bounds: Bounds


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


Operation = Reserve | Report | Expire | Draw | ReturnLease | Renew


@dataclass(frozen=True)
class Reported:
    settlement: Settlement
    replayed: bool


Outcome = None | Reported | int | LedgerError
"""Per operation: ``None`` (reserved), ``Reported``, the number of reservations expired, or
the refusal."""


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
        refusal = (
            exception
            if isinstance(exception, LedgerError)
            else Unavailable("the metering write did not complete")
        )
        self._batch.settle(self._index, refusal)


class _Refresh(Exception):  # control flow: a refusal to check against the store
    def __init__(self, meter: str) -> None:
        super().__init__(meter)
        self.meter = meter


class MeterWriter:
    """The one writer of Meters in this process (see the module docstring)."""

    def __init__(
        self,
        ledger: LedgerBase,
        *,
        max_group: int = MAX_GROUP,
        lease_seconds: float = 0,
        holder: str | None = None,
    ) -> None:
        self._ledger = ledger
        self._max_group = max_group
        #: Lease lifetime (0: no leases, a durable reservation per permit).
        self._lease_ttl = timedelta(seconds=lease_seconds)
        self._margin = min(LEASE_MARGIN, self._lease_ttl / 3)
        self.holder = holder or "rpl_" + secrets.token_hex(6)
        self._cond = threading.Condition()
        #: Operations waiting for a group, each with when it was queued (monotonic).
        self._queue: list[tuple[Operation, Waiter | None, float]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Meters as last saved or read from the store (never a working copy).
        self._meters: OrderedDict[str, Meter] = OrderedDict()
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
            if self._stopping or lease is None or now >= lease.use_until or not lease.take(call):
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
            refusal = (
                error
                if isinstance(error, LedgerError)
                else Unavailable(f"the metering write did not complete ({type(error).__name__})")
            )
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
        """Apply ``operations`` in order and save every changed Meter in one transaction,
        retrying from the store's state after a lost race (the writer thread's body; tests
        may call it directly)."""
        self.groups += 1
        self.operations += len(operations)
        started = time.perf_counter()
        try:
            try:
                return self._apply(operations)
            except OPERATION_FAULTS as error:
                if len(operations) == 1:
                    raise
                # One operation's fault (not the store's) must not fail the others: each is
                # applied alone, and only the faulty one answers that the write did not
                # complete. (A malformed amount once failed whole groups this way.)
                log.error(
                    "metering group of %d failed on an operation (%s); applying them one by one",
                    len(operations),
                    type(error).__name__,
                    exc_info=True,
                )
                return [self._alone(operation) for operation in operations]
        finally:
            self.apply_seconds += time.perf_counter() - started

    def _alone(self, operation: Operation) -> Outcome:
        try:
            return self._apply([operation])[0]
        except OPERATION_FAULTS as error:
            log.error("metering %s failed", type(operation).__name__, exc_info=True)
            return Unavailable(f"the metering write did not complete ({type(error).__name__})")

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
        grants: dict[str, str] = {}  # Mission -> the lease this attempt granted it
        outcomes: list[Outcome] = []

        def working(key: str) -> Meter | None:
            if key not in copies:
                held = self._known(key)
                copy = None if held is None else _fork(held)
                if copy is not None:
                    copy.expire_due(now)
                copies[key] = copy
            return copies[key]

        # Draws first (a group lists them first), one LeaseDrawn event per lease.
        drawn: dict[tuple[str, str], list[int]] = {}
        for index, operation in enumerate(operations):
            if isinstance(operation, Draw):
                drawn.setdefault((meter_id(operation.mission_id), operation.lease_id), [])
                drawn[(meter_id(operation.mission_id), operation.lease_id)].append(index)
        later: dict[int, Outcome] = {}
        for (key, lease_id), indexes in drawn.items():
            meter = working(key)
            if meter is None:
                for index in indexes:
                    later[index] = NotFound(f"no Meter for lease {lease_id!r}")
                continue
            batch = [operations[i] for i in indexes]
            results = meter.draw_many(
                lease_id,
                [
                    (d.call, d.evaluation_id, d.expires_at, d.mandate_id)
                    for d in batch
                    if isinstance(d, Draw)
                ],
                now=now,
            )
            later.update(zip(indexes, results, strict=True))
        # No pauses between operations: a group is applied as fast as the interpreter lock
        # allows (the short switch interval bounds what a decision waits for it). Pausing after
        # each operation made groups larger and commits rarer, but under load it also left the
        # writer far behind the decisions: usage reports waited for whole groups of half a
        # second and fell ever further behind (decision 0019, "Revisited (late evening)").
        for index, operation in enumerate(operations):
            key = meter_id(operation.mission_id)
            working(key)
            if isinstance(operation, Draw):
                outcomes.append(later[index])
                continue
            try:
                outcomes.append(self._one(operation, key, copies, grants, now))
            except (NotFound, BudgetExceeded) as error:
                # Refusals are decided on the store's current state: the copy held here may
                # miss what another replica wrote (a reservation, a release).
                if key not in refreshed and not isinstance(operation, Draw | Renew):
                    raise _Refresh(key) from None
                outcomes.append(error)
            except LedgerError as error:
                outcomes.append(error)
        changed = [m for m in copies.values() if m is not None and m.pending_events]
        if changed:
            saving = time.perf_counter()
            try:
                self._ledger.save(*changed, reservations=deadlines_of(changed))
            finally:
                self.save_seconds += time.perf_counter() - saving
        for key, meter in copies.items():
            if meter is not None:
                self._remember(key, _joined(meter))
        self._install(grants, copies)
        return outcomes

    def _one(
        self,
        operation: Reserve | Renew | ReturnLease | Report | Expire,
        key: str,
        copies: dict[str, Meter | None],
        grants: dict[str, str],
        now: datetime,
    ) -> Outcome:
        meter = copies[key]
        if isinstance(operation, Reserve | Renew):
            if meter is None:
                meter = Meter.open(
                    mission_id=operation.mission_id, bounds=operation.bounds, now=now
                )
                copies[key] = meter
            if isinstance(operation, Renew):
                self._lease(meter, operation.mission_id, None, grants, now)
                return None
            target = meter

            def reserve(lease_id: str | None = None, approval_id: str | None = None) -> None:
                target.reserve(
                    operation.call,
                    evaluation_id=operation.evaluation_id,
                    expires_at=operation.expires_at,
                    mandate_id=operation.mandate_id,
                    now=now,
                    lease_id=lease_id,
                    approval_id=approval_id,
                )

            if operation.approval_id is not None or not self.leasing:
                reserve(approval_id=operation.approval_id)
                return None
            granted = grants.get(operation.mission_id)
            if granted is not None:
                try:  # a lease granted earlier in this group may have room
                    reserve(lease_id=granted)
                    return None
                except BudgetExceeded:
                    pass
            reserve(lease_id=self._lease(meter, operation.mission_id, operation.call, grants, now))
            return None
        if isinstance(operation, ReturnLease):
            if meter is not None:
                meter.return_lease(operation.lease_id, outcome="returned", actor=SCHEDULER, now=now)
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

    def _lease(
        self,
        meter: Meter,
        mission_id: str,
        call: MeteredCall | None,
        grants: dict[str, str],
        now: datetime,
    ) -> str:
        """Grant this replica a fresh lease on ``meter`` (returning the one this attempt
        granted before, if any); refused when ``call`` (or, for a renewal, one call) does
        not fit."""
        earlier = grants.pop(mission_id, None)
        if earlier is not None:
            meter.return_lease(earlier, outcome="returned", actor=SCHEDULER, now=now)
        lease_id = "lse_" + secrets.token_hex(8)
        meter.grant_lease(
            call or MeteredCall(amount=None, currency=None, call_class=None),
            lease_id=lease_id,
            holder=self.holder,
            expires_at=now + self._lease_ttl,
            share=LEASE_SHARE,
            now=now,
        )
        grants[mission_id] = lease_id
        return lease_id

    def _install(self, grants: dict[str, str], copies: dict[str, Meter | None]) -> None:
        """After the save: the leases granted become what the decision path draws from."""
        if not grants:
            return
        with self._cond:
            for mission_id, lease_id in grants.items():
                meter = copies[meter_id(mission_id)]
                lease: Lease | None = None if meter is None else meter.leases.get(lease_id)
                if lease is None:
                    continue
                if self._stopping or mission_id in self._leases:
                    # Nothing may draw from it (stopping, or a lease installed meanwhile).
                    self._returning = [*self._returning, ReturnLease(mission_id, lease_id)]
                    self._cond.notify()
                    continue
                assert meter is not None
                use_until = lease.expires_at - self._margin
                self._leases[mission_id] = HeldLease(
                    mission_id=mission_id,
                    lease_id=lease_id,
                    bounds=meter.bounds,
                    currency=meter.bounds.currency,
                    units=lease.units,
                    calls=lease.calls,
                    classes=dict(lease.classes),
                    use_until=use_until,
                    renew_after=use_until - (self._lease_ttl - self._margin) / 2,
                    granted_units=lease.units,
                    granted_calls=lease.calls,
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


def _drawn(operation: Reserve, lease_id: str) -> Draw:
    return Draw(
        mission_id=operation.mission_id,
        lease_id=lease_id,
        call=operation.call,
        evaluation_id=operation.evaluation_id,
        mandate_id=operation.mandate_id,
        expires_at=operation.expires_at,
    )


def deadlines_of(meters: Sequence[Meter]) -> ReservationDeadlines:
    """The deadline rows the pending events of ``meters`` add and remove (written in the
    same transaction: ``ledger.persistence.reservations``).

    A reservation (or lease) made and ended by the same save needs no row at all: under
    load a permit's draw and its usage report are often recorded by the same group, and its
    row was inserted only to be deleted in the same transaction. Its events are saved all
    the same."""
    added: dict[str, tuple[str, str, int]] = {}  # by evaluation (or lease) id, in order
    removed: list[str] = []
    for meter in meters:
        for event in meter.pending_events:
            if isinstance(event, Meter.Reserved):
                added[event.evaluation_id] = (
                    event.evaluation_id,
                    event.originator_id,
                    micros(event.expires_at),
                )
            elif isinstance(event, Meter.UsageCommitted | Meter.Released):
                _end(event.evaluation_id, added, removed)
            elif isinstance(event, Meter.LeaseDrawn):
                for held in event.reservations:
                    evaluation_id = held["evaluation_id"]
                    added[evaluation_id] = (
                        evaluation_id,
                        event.originator_id,
                        micros(datetime.fromisoformat(held["expires_at"])),
                    )
            elif isinstance(event, Meter.LeaseGranted):  # a lease expires like a reservation
                added[event.lease_id] = (
                    event.lease_id,
                    event.originator_id,
                    micros(event.expires_at),
                )
            elif isinstance(event, Meter.LeaseReturned):
                _end(event.lease_id, added, removed)
    return ReservationDeadlines(added=tuple(added.values()), removed=tuple(removed))


def _end(key: str, added: dict[str, tuple[str, str, int]], removed: list[str]) -> None:
    """The reservation (or lease) ``key`` ended: no row if this save made it, else delete
    the stored one."""
    if added.pop(key, None) is None:
        removed.append(key)


def _fork(meter: Meter) -> Meter:
    """A working copy of a held Meter for one attempt, in time independent of its history:
    the reservations settled so far (which only grow, and answer repeated reports) are
    shared read-only under an overlay that takes this attempt's settlements."""
    clone = Meter.__new__(Meter)
    state = dict(meter.__dict__)
    for name, value in state.items():
        if name == "settled":
            state[name] = _Overlay({}, value)
        elif isinstance(value, dict | list):
            state[name] = copy.copy(value)  # as ``working_copy``: events change these in place
    state["_pending_events"] = []
    clone.__dict__.update(state)
    return clone


class _Overlay(ChainMap[str, Settlement]):
    """A working copy's ``settled``: this attempt's settlements over the held copy's.
    ``ChainMap`` looks through any number of maps in Python (a generator for ``in``, a
    caught ``KeyError`` for a miss); a Meter asks for every reservation it touches, so
    these two-map lookups are written out."""

    def __contains__(self, key: object) -> bool:
        return key in self.maps[0] or key in self.maps[1]

    def __getitem__(self, key: str) -> Settlement:
        top = self.maps[0]
        return top[key] if key in top else self.maps[1][key]

    def get(self, key: str, default: Settlement | None = None) -> Settlement | None:  # type: ignore[override]
        top = self.maps[0]
        return top[key] if key in top else self.maps[1].get(key, default)


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
