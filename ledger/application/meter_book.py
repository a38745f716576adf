"""The Meters of one replica and how a group of metering operations is applied to them:
the store's half of the Meter writer (``metering.MeterWriter`` keeps the queue and the
leases the decision path draws from; see its docstring for the rules).

A ``MeterBook`` runs wherever the writer's store work runs: on the writer thread
(``METER_WRITER=thread``) or in a process of its own (``METER_WRITER=process``,
``api/workers/meter_child.py``), which is why everything it returns (``Applied``) is plain
data (``meter_operations``).

* **Group commit.** A group's operations are applied in order to working copies of the
  Meters they name, and every changed Meter is saved in one transaction.
* **Optimistic concurrency across replicas.** The book keeps each Meter it has seen in
  memory; if another replica wrote one meanwhile, the store rejects the save (same version
  twice), the book brings its copies up to date from the store and applies the whole group
  again (each operation's outcome decided anew), with jittered back-off. Within one process
  the book is the only one writing Meters, so it never races itself.
* A refusal is decided on the store's current state: before a reservation is refused for
  ``budget_exceeded`` or a usage report answers 404, the Meter is brought up to date.
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from eventsourcing.persistence import IntegrityError

from ledger.application.base import LedgerBase
from ledger.application.contention import backoff
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
)
from ledger.domain.actors import SCHEDULER
from ledger.domain.errors import BudgetExceeded, Conflict, LedgerError, NotFound, Unavailable
from ledger.domain.metering import (
    EXPIRED,
    Lease,
    Meter,
    MeteredCall,
    Settlement,
    meter_id,
)
from ledger.persistence.reservations import ReservationDeadlines, micros

log = logging.getLogger("mission_ledger.metering")

#: Exceptions that come from one operation's data or this module's code, never from the
#: store (whose errors are the library's, ``sqlite3``'s or psycopg's own classes): a group
#: that raises one is applied again one operation at a time (``MeterBook.apply``).
OPERATION_FAULTS = (ValueError, TypeError, KeyError, ArithmeticError, AttributeError)

MAX_ATTEMPTS = 32
CACHED_METERS = 4096

#: A lease takes 1/LEASE_SHARE of what remains of each bound (at least the permit's need).
LEASE_SHARE = 8


class _Refresh(Exception):  # control flow: a refusal to check against the store
    def __init__(self, meter: str) -> None:
        super().__init__(meter)
        self.meter = meter


class MeterBook:
    """The Meters this replica writes, and the one place groups are applied to them."""

    def __init__(self, ledger: LedgerBase, *, holder: str, lease_seconds: float = 0) -> None:
        self._ledger = ledger
        self.holder = holder
        #: Lease lifetime (0: no leases, a durable reservation per permit).
        self._lease_ttl = timedelta(seconds=lease_seconds)
        #: Meters as last saved or read from the store (never a working copy).
        self._meters: OrderedDict[str, Meter] = OrderedDict()
        #: What the group being applied cost and granted so far (``Applied``).
        self._conflicts = 0
        self._save_seconds = 0.0
        self._granted: list[GrantedLease] = []
        self.restarts = 0  # (a ``MeterBackend``: nothing here is ever restarted)
        self.starved = 0  # (nor retired)

    @property
    def leasing(self) -> bool:
        return self._lease_ttl > timedelta(0)

    def close(self) -> None:
        """Nothing to release: the Ledger is its owner's."""

    def apply(self, operations: Sequence[Operation]) -> Applied:
        """Apply ``operations`` in order and save every changed Meter in one transaction,
        retrying from the store's state after a lost race."""
        self._conflicts, self._save_seconds, self._granted = 0, 0.0, []
        started = time.perf_counter()
        outcomes = self._outcomes(operations)
        return Applied(
            outcomes=outcomes,
            granted=self._granted,
            conflicts=self._conflicts,
            apply_seconds=time.perf_counter() - started,
            save_seconds=self._save_seconds,
        )

    def _outcomes(self, operations: Sequence[Operation]) -> list[Outcome]:
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
                self._conflicts += 1
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
        outcomes: dict[int, Outcome] = {}  # by the operation's place in the group

        def working(key: str) -> Meter | None:
            if key not in copies:
                held = self._known(key)
                copy = None if held is None else _fork(held)
                if copy is not None:
                    copy.expire_due(now)
                copies[key] = copy
            return copies[key]

        later = _drawn(operations, working, now)
        # No pauses between operations: a group is applied as fast as the interpreter lock
        # allows (the short switch interval bounds what a decision waits for it). Pausing after
        # each operation made groups larger and commits rarer, but under load it also left the
        # writer far behind the decisions: usage reports waited for whole groups of half a
        # second and fell ever further behind (decision 0019, "Revisited (late evening)").
        #
        # Usage reports are gathered per Meter and recorded in one ``UsageReported`` event,
        # before anything else of the group touches that Meter (so each operation still sees
        # the ones before it) and at the end.
        reports: dict[str, list[tuple[int, Report]]] = {}
        for index, operation in enumerate(operations):
            key = meter_id(operation.mission_id)
            working(key)
            if isinstance(operation, Draw):
                outcomes[index] = later[index]
                continue
            if isinstance(operation, Report):  # decided when its Meter's reports are recorded
                reports.setdefault(key, []).append((index, operation))
                continue
            if key in reports:
                self._report(key, reports.pop(key), copies, outcomes, refreshed, now)
            try:
                outcomes[index] = self._one(operation, key, copies, grants, now)
            except (NotFound, BudgetExceeded) as error:
                # Refusals are decided on the store's current state: the copy held here may
                # miss what another replica wrote (a reservation, a release).
                if key not in refreshed and not isinstance(operation, Renew):
                    raise _Refresh(key) from None
                outcomes[index] = error
            except LedgerError as error:
                outcomes[index] = error
        for key, waiting in reports.items():
            self._report(key, waiting, copies, outcomes, refreshed, now)
        decided = [outcomes[index] for index in range(len(operations))]  # every one, in order
        changed = [m for m in copies.values() if m is not None and m.pending_events]
        if changed:
            saving = time.perf_counter()
            try:
                self._ledger.save(*changed, reservations=deadlines_of(changed))
            finally:
                self._save_seconds += time.perf_counter() - saving
        for key, meter in copies.items():
            if meter is not None:
                self._remember(key, _joined(meter))
        self._granted += granted_leases(grants, copies)
        return decided

    def _report(
        self,
        key: str,
        reports: list[tuple[int, Report]],
        copies: dict[str, Meter | None],
        outcomes: dict[int, Outcome],
        refreshed: set[str],
        now: datetime,
    ) -> None:
        """Record the usage reports of one Meter (at their places in ``outcomes``). A report
        the Meter does not know is decided on the store's current state first."""
        meter = copies[key]
        if meter is None:
            if key not in refreshed:
                raise _Refresh(key)
            for index, report in reports:
                outcomes[index] = NotFound(
                    f"no reservation for evaluation {report.evaluation_id!r}"
                )
            return
        answers = meter.report_many(
            [(r.evaluation_id, r.outcome, r.amount, r.actor) for _, r in reports], now=now
        )
        if key not in refreshed and any(isinstance(a, NotFound) for a in answers):
            raise _Refresh(key)
        for (index, _), answer in zip(reports, answers, strict=True):
            if isinstance(answer, LedgerError):
                outcomes[index] = answer
            else:
                settlement, replayed = answer
                outcomes[index] = Reported(settlement=settlement, replayed=replayed)

    def _one(
        self,
        operation: Reserve | Renew | ReturnLease | Expire,
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


def _drawn(
    operations: Sequence[Operation], working: Callable[[str], Meter | None], now: datetime
) -> dict[int, Outcome]:
    """The outcomes of a group's draws (a group lists them first), by their places: one
    ``LeaseDrawn`` event per lease, on the working copies ``working`` gives."""
    drawn: dict[tuple[str, str], list[Draw]] = {}
    places: dict[tuple[str, str], list[int]] = {}
    for index, operation in enumerate(operations):
        if isinstance(operation, Draw):
            lease = (meter_id(operation.mission_id), operation.lease_id)
            drawn.setdefault(lease, []).append(operation)
            places.setdefault(lease, []).append(index)
    later: dict[int, Outcome] = {}
    for (key, lease_id), draws in drawn.items():
        meter = working(key)
        indexes = places[(key, lease_id)]
        if meter is None:
            for index in indexes:
                later[index] = NotFound(f"no Meter for lease {lease_id!r}")
            continue
        results = meter.draw_many(
            lease_id,
            [(d.call, d.evaluation_id, d.expires_at, d.mandate_id) for d in draws],
            now=now,
        )
        later.update(zip(indexes, results, strict=True))
    return later


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
            elif isinstance(event, Meter.UsageReported):
                for report in event.reports:
                    _end(report["evaluation_id"], added, removed)
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


def granted_leases(grants: dict[str, str], copies: dict[str, Meter | None]) -> list[GrantedLease]:
    """The leases an attempt granted (Mission -> lease id), as saved."""
    out: list[GrantedLease] = []
    for mission_id, lease_id in grants.items():
        meter = copies[meter_id(mission_id)]
        lease: Lease | None = None if meter is None else meter.leases.get(lease_id)
        if meter is None or lease is None:
            continue
        out.append(
            GrantedLease(
                mission_id=mission_id,
                lease_id=lease_id,
                bounds=meter.bounds,
                units=lease.units,
                calls=lease.calls,
                classes=dict(lease.classes),
                expires_at=lease.expires_at,
            )
        )
    return out
