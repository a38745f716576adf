"""Metering: a Mission's ``max_budget`` and ``max_calls``, and the Meter that reserves
against them (SPEC 7.3).

A permit for a metered action reserves its amount and one call on the Mission's Meter; the
PEP then reports the outcome: ``executed`` commits the reservation (for the reserved amount
or less), ``aborted`` releases it, and a reservation nobody reports is released when it
expires. The Meter refuses, itself, anything that would break its invariant:

    committed + outstanding reservations <= the bound

for the budget (in the budget's currency, exact decimal arithmetic), for the calls of the
whole Mission, and for the calls of each call class that ``max_calls`` names. Every change is
one past-tense event, so the log alone tells how much was reserved, committed and released
at every instant (the amounts of executed reports, ``UsageReported`` members and the
``UsageCommitted`` events recorded before them, sum to ``spent``).

The Meter is an aggregate of its own (``meter:<mission id>``), apart from the Mission, so
that metering never contends with governance writes on the Mission.

Amounts are held as integers of 10^-18 units (the finest the decimal grammar allows), so sums
are exact however many digits an amount has. Nothing here reads the clock: commands take
``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import SCHEDULER, Actor
from ledger.domain.constraints import (
    CALL_CLASS,
    CURRENCY_PATTERN,
    DECIMAL_RULE,
    PARAMETER_VIOLATION,
    Violation,
    is_decimal,
)
from ledger.domain.errors import (
    BudgetExceeded,
    Conflict,
    InvalidRequest,
    LedgerError,
    NotFound,
    ReservationExpired,
)
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent

MAX_BUDGET = "max_budget"
MAX_CALLS = "max_calls"

SCALE = 18
_ONE: int = 10**SCALE

Outcome = Literal["executed", "aborted", "expired"]
#: One usage report as ``Meter.report_many`` takes it: (evaluation id, outcome, amount, actor).
UsageReport = tuple[str, Literal["executed", "aborted"], str | None, Actor]
EXECUTED: Final = "executed"
ABORTED: Final = "aborted"
EXPIRED: Final = "expired"


# --------------------------------------------------------------------------- amounts


def parse_units(text: object) -> int | None:
    """A decimal string of the Common Constraints grammar as an exact count of 10^-18 units,
    or ``None`` when it is not one."""
    return _units(text) if isinstance(text, str) else None


@lru_cache(maxsize=4_096)
def _units(text: str) -> int | None:
    # Remembered: the Meter writer parses each amount several times (the permit's call, the
    # event that records it, its report), and amounts repeat across permits.
    if not is_decimal(text):
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * _ONE + int(fraction.ljust(SCALE, "0"))


def require_units(text: object, pointer: str) -> int:
    units = parse_units(text)
    if units is None:
        raise InvalidRequest.at(pointer, DECIMAL_RULE)
    return units


def format_units(units: int, scale: int = 0) -> str:
    """``units`` as a decimal string with at least ``scale`` fractional digits (and no
    trailing zero beyond them)."""
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), _ONE)
    digits = f"{fraction:0{SCALE}d}".rstrip("0").ljust(scale, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def scale_of(text: str) -> int:
    """How many fractional digits a decimal string shows."""
    _, _, fraction = text.partition(".")
    return len(fraction)


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Bounds:
    """What a Mission's ``controls`` meter: a budget (``None``: none) in one currency, a limit
    on every metered call, and limits per call class."""

    budget: str | None = None  # the decimal string as approved
    currency: str | None = None
    max_calls: int | None = None
    class_limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def budget_units(self) -> int | None:
        return None if self.budget is None else parse_units(self.budget)

    def to_event(self) -> dict[str, Any]:
        return {
            "budget": None
            if self.budget is None
            else {"amount": self.budget, "currency": self.currency},
            "max_calls": self.max_calls,
            "call_limits": dict(self.class_limits),
        }


def bounds_of(controls: object) -> Bounds | None:
    """The metered bounds of an Intent's (already validated) ``controls``; ``None`` when it
    meters nothing."""
    if not isinstance(controls, Mapping):
        return None
    budget = controls.get(MAX_BUDGET)
    calls = controls.get(MAX_CALLS)
    if budget is None and calls is None:
        return None
    amount = currency = None
    if isinstance(budget, Mapping):
        amount, currency = str(budget["amount"]), str(budget["currency"])
    max_calls: int | None = None
    limits: dict[str, int] = {}
    if isinstance(calls, int):
        max_calls = calls
    elif isinstance(calls, list | tuple):
        limits = {str(rule["call_class"]): int(rule["max"]) for rule in calls}
    return Bounds(budget=amount, currency=currency, max_calls=max_calls, class_limits=limits)


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class MeteredCall:
    """What a permit reserves: an amount (in ``currency``; ``None``: the Mission has no budget
    or the request names no amount) and one call of ``call_class`` (``None``: unclassed)."""

    amount: str | None
    currency: str | None
    call_class: str | None


def _input(
    action_properties: Mapping[str, Any], context: Mapping[str, Any], name: str
) -> tuple[object, str] | None:
    """The same inputs the ``max_amount`` constraint reads: the action's, else the context's
    (so an amount cannot escape metering by moving to the context)."""
    if action_properties.get(name) is not None:
        return action_properties[name], f"action.properties.{name}"
    if context.get(name) is not None:
        return context[name], f"context.{name}"
    return None


def metered_call(
    bounds: Bounds,
    constraints: Mapping[str, object],
    action_properties: Mapping[str, Any],
    context: Mapping[str, Any],
) -> MeteredCall | Violation | None:
    """What a permit of the entry with ``constraints`` must reserve on a Mission with
    ``bounds``; ``None`` when the action is not metered (no amount, no call class), a
    ``Violation`` when its amount or currency is malformed or missing."""
    call_class = constraints.get(CALL_CLASS)
    klass = call_class if isinstance(call_class, str) else None
    amount = _input(action_properties, context, "amount")
    if amount is None and klass is None:
        return None
    if bounds.budget is None or amount is None:
        return MeteredCall(amount=None, currency=None, call_class=klass)
    value, where = amount
    if parse_units(value) is None:
        return Violation(PARAMETER_VIOLATION, MAX_BUDGET, f"{where} is not a decimal string")
    currency = _input(action_properties, context, "currency")
    if currency is None:
        return Violation(
            PARAMETER_VIOLATION,
            MAX_BUDGET,
            "currency is absent (action.properties.currency or context.currency)",
        )
    if not isinstance(currency[0], str) or CURRENCY_PATTERN.match(currency[0]) is None:
        return Violation(PARAMETER_VIOLATION, MAX_BUDGET, f"{currency[1]} is not an ISO 4217 code")
    return MeteredCall(amount=str(value), currency=currency[0], call_class=klass)


# --------------------------------------------------------------------------- the Meter


def meter_id(mission_id: str) -> str:
    return f"meter:{mission_id}"


def reservation_expiry(now: datetime, ttl_seconds: int) -> datetime:
    """When a reservation taken at ``now`` (timezone-aware) expires unless reported:
    ``ttl_seconds`` later, in whole seconds (as ``reservation_expires_at`` shows it)."""
    return _expiry(int(now.timestamp()), ttl_seconds, now.tzinfo)


@lru_cache(maxsize=64)
def _expiry(second: int, ttl_seconds: int, tz: tzinfo | None) -> datetime:
    # Asked for every metered permit, nearly always within the same few seconds: one
    # datetime made a second instead of two a permit.
    return datetime.fromtimestamp(second + ttl_seconds, tz)


def metered_evaluation_id(evaluation_id: str, mission_id: str) -> str:
    """The ``evaluation_id`` of a metered permit: it names its Mission (whose ids never
    contain a dot), so a usage report reaching any replica finds the Meter."""
    return f"{evaluation_id}.{mission_id}"


def mission_of_evaluation(evaluation_id: str) -> str | None:
    """The Mission a metered permit's ``evaluation_id`` names (``None``: not one)."""
    head, dot, mission_id = evaluation_id.rpartition(".")
    return mission_id if dot and head and mission_id.startswith("msn_") else None


@dataclass(frozen=True)
class Reservation:
    """An outstanding reservation (immutable: the Meter replaces, never edits, one)."""

    units: int
    call_class: str | None
    expires_at: datetime


@dataclass(frozen=True)
class Lease:
    """A slice of a Meter's bounds held by one replica (``holder``) until ``expires_at``:
    what is left of it to reserve in memory (``None``: that bound is not metered)."""

    holder: str
    units: int | None
    calls: int | None
    classes: Mapping[str, int]
    expires_at: datetime


@dataclass(frozen=True)
class Settlement:
    """How a reservation ended; ``units`` is what was committed (0 unless executed), and
    ``amount`` the committed amount as reported (None unless executed)."""

    outcome: Outcome
    units: int
    amount: str | None = None


@dataclass(frozen=True)
class Usage:
    """A Meter's counters at one instant (``remaining`` = bound - spent - reserved)."""

    bounds: Bounds
    spent: int
    reserved: int
    calls_committed: int
    calls_reserved: int
    class_calls: Mapping[str, int]
    #: Held by replicas' budget leases and not yet reserved (outstanding, like reservations).
    leased: int = 0
    leased_calls: int = 0
    leased_class: Mapping[str, int] = field(default_factory=dict)
    #: What approved ``mission_budget_increase`` requests added to the bounds.
    raised: int = 0
    raised_calls: int = 0
    raised_class: Mapping[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> int | None:
        budget = self.bounds.budget_units
        if budget is None:
            return None
        return budget + self.raised - self.spent - self.reserved - self.leased

    @property
    def calls(self) -> int:
        return self.calls_committed + self.calls_reserved

    def to_json(self) -> dict[str, Any]:
        """A Mission's ``usage`` (SPEC 7.3): with ``max_budget``, decimal strings in the
        budget's currency with at least its decimals; ``calls`` = committed + reserved metered
        calls; with an integer ``max_calls`` its limit and what remains; per call class that
        ``max_calls`` names, the same."""
        bounds = self.bounds
        view: dict[str, Any] = {}
        if bounds.budget is not None:
            scale = scale_of(bounds.budget)
            view |= {
                "currency": bounds.currency,
                "budget": bounds.budget,
                "spent": format_units(self.spent, scale),
                "reserved": format_units(self.reserved + self.leased, scale),
                "remaining": format_units(self.remaining or 0, scale),
            }
            if self.leased:  # held by replicas' leases (included in reserved)
                view["leased"] = format_units(self.leased, scale)
            if self.raised:  # approved budget increases (included in remaining)
                view["raised"] = format_units(self.raised, scale)
        view["calls"] = self.calls
        if bounds.max_calls is not None:
            limit = bounds.max_calls + self.raised_calls
            view["max_calls"] = limit
            if self.raised_calls:
                view["calls_raised"] = self.raised_calls
            view["calls_remaining"] = limit - self.calls - self.leased_calls
        if bounds.class_limits:
            view["call_classes"] = [
                self._class_view(name, limit) for name, limit in sorted(bounds.class_limits.items())
            ]
        return view

    def _class_view(self, name: str, limit: int) -> dict[str, Any]:
        raised = self.raised_class.get(name, 0)
        calls = self.class_calls.get(name, 0)
        view: dict[str, Any] = {
            "call_class": name,
            "max": limit + raised,
            "calls": calls,
            "remaining": limit + raised - calls - self.leased_class.get(name, 0),
        }
        if raised:
            view["raised"] = raised
        return view


class Meter(BaseAggregate[str]):
    """The reservations, budget leases, raises and committed usage of one Mission."""

    TOPIC = TOPIC_PREFIX + "Meter"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "Meter.Event"

    @dataclass(frozen=True)
    class Opened(Event, LedgerCreated):
        """The Mission's first metered decision opened its Meter with the approved bounds."""

        TOPIC = TOPIC_PREFIX + "Meter.Opened"
        mission_id: str
        budget: dict[str, str] | None
        max_calls: int | None
        call_limits: dict[str, int]

        def apply(self, aggregate: Meter) -> None:
            aggregate.mission_id = self.mission_id
            aggregate.bounds = Bounds(
                budget=None if self.budget is None else self.budget["amount"],
                currency=None if self.budget is None else self.budget["currency"],
                max_calls=self.max_calls,
                class_limits=dict(self.call_limits),
            )
            aggregate.spent = 0
            aggregate.reserved = 0
            aggregate.calls_committed = 0
            aggregate.calls_reserved = 0
            aggregate.class_calls = {}
            aggregate.outstanding = {}
            aggregate.due_from = None
            aggregate.settled = {}
            aggregate.leases = {}
            aggregate.leased = 0
            aggregate.leased_calls = 0
            aggregate.leased_class = {}
            aggregate.raised = 0
            aggregate.raised_calls = 0
            aggregate.raised_class = {}
            aggregate.raises = {}

    @dataclass(frozen=True)
    class Reserved(Event):
        """A permit reserved ``amount`` (``None``: no amount) and one call; under a budget
        lease (``lease_id``) it was taken from the lease's slice."""

        TOPIC = TOPIC_PREFIX + "Meter.Reserved"
        evaluation_id: str
        amount: str | None
        call_class: str | None
        expires_at: datetime
        mandate_id: str | None
        lease_id: str | None = None

        def apply(self, aggregate: Meter) -> None:
            units = 0 if self.amount is None else parse_units(self.amount) or 0
            if self.lease_id is not None:
                classes = {} if self.call_class is None else {self.call_class: 1}
                aggregate._draw(self.lease_id, units, 1, classes)
            aggregate._hold(self.evaluation_id, units, self.call_class, self.expires_at)

    @dataclass(frozen=True)
    class LeaseDrawn(Event):
        """Permits a replica answered from its lease ``lease_id`` (in memory), recorded
        together: each member of ``reservations`` is a reservation like ``Reserved``
        (``evaluation_id``, ``amount``, ``call_class``, ``expires_at`` as RFC 3339,
        ``mandate_id``), taken from the lease's slice."""

        TOPIC = TOPIC_PREFIX + "Meter.LeaseDrawn"
        lease_id: str
        reservations: list[dict[str, Any]]

        def apply(self, aggregate: Meter) -> None:
            drawn = 0
            classes: dict[str, int] = {}
            for held in self.reservations:
                amount, klass = held["amount"], held["call_class"]
                units = 0 if amount is None else parse_units(amount) or 0
                aggregate._hold(
                    held["evaluation_id"], units, klass, datetime.fromisoformat(held["expires_at"])
                )
                drawn += units
                if klass is not None:
                    classes[klass] = classes.get(klass, 0) + 1
            # Out of the lease's slice once for them all (one copy of the lease, not one each).
            aggregate._draw(self.lease_id, drawn, len(self.reservations), classes)

    @dataclass(frozen=True)
    class Ended(Event):
        """Common shape of the events that end a reservation (never stored itself)."""

        TOPIC = TOPIC_PREFIX + "Meter.Ended"
        evaluation_id: str
        actor: dict[str, Any]

        def apply(self, aggregate: Meter) -> None:
            held = aggregate._end(self.evaluation_id)
            aggregate.settled[self.evaluation_id] = self.settle(aggregate, held)

        def settle(self, aggregate: Meter, held: Reservation) -> Settlement:
            raise NotImplementedError

    @dataclass(frozen=True)
    class UsageCommitted(Ended):
        """The PEP reported the call executed: ``amount`` (at most the reserved) is spent.
        (Reports are recorded as ``UsageReported`` since 2026-12-06; stored ones stay.)"""

        TOPIC = TOPIC_PREFIX + "Meter.UsageCommitted"
        amount: str

        def settle(self, aggregate: Meter, held: Reservation) -> Settlement:
            del held  # its call stays counted
            return aggregate._spend(self.amount)

    @dataclass(frozen=True)
    class Released(Ended):
        """The reservation ended without spending: ``aborted`` by the PEP or ``expired``."""

        TOPIC = TOPIC_PREFIX + "Meter.Released"
        outcome: str

        def settle(self, aggregate: Meter, held: Reservation) -> Settlement:
            return aggregate._release(held, EXPIRED if self.outcome == EXPIRED else ABORTED)

    @dataclass(frozen=True)
    class UsageReported(Event):
        """Usage reports of one ``actor`` recorded together (in one group of the Meter
        writer): each member of ``reports`` (``evaluation_id``, ``outcome``, ``amount``)
        ends its reservation as ``UsageCommitted`` does (``executed``: ``amount``, at most
        the reserved, is spent) or ``Released`` does (``aborted``: ``amount`` is null)."""

        TOPIC = TOPIC_PREFIX + "Meter.UsageReported"
        actor: dict[str, Any]
        reports: list[dict[str, Any]]

        def apply(self, aggregate: Meter) -> None:
            settled = aggregate.settled
            for report in self.reports:
                evaluation_id = report["evaluation_id"]
                held = aggregate._end(evaluation_id)
                settled[evaluation_id] = (
                    aggregate._spend(report["amount"])
                    if report["outcome"] == EXECUTED
                    else aggregate._release(held, ABORTED)
                )

    @dataclass(frozen=True)
    class LeaseGranted(Event):
        """A replica (``holder``) took a slice of the bounds to reserve from in memory until
        ``expires_at``: ``amount`` of the budget, ``calls`` metered calls, ``call_limits``
        calls per class (``None``/absent: not metered). Outstanding until reserved or
        returned."""

        TOPIC = TOPIC_PREFIX + "Meter.LeaseGranted"
        lease_id: str
        holder: str
        amount: str | None
        calls: int | None
        call_limits: dict[str, int]
        expires_at: datetime

        def apply(self, aggregate: Meter) -> None:
            units = None if self.amount is None else parse_units(self.amount) or 0
            aggregate.leases[self.lease_id] = Lease(
                holder=self.holder,
                units=units,
                calls=self.calls,
                classes=dict(self.call_limits),
                expires_at=self.expires_at,
            )
            aggregate.leased += units or 0
            aggregate.leased_calls += self.calls or 0
            for name, count in self.call_limits.items():
                aggregate.leased_class[name] = aggregate.leased_class.get(name, 0) + count

    @dataclass(frozen=True)
    class LeaseReturned(Event):
        """A lease ended: what it still held goes back to the Meter (``returned`` by its
        holder, or ``expired``). Reservations made under it stay until they end."""

        TOPIC = TOPIC_PREFIX + "Meter.LeaseReturned"
        lease_id: str
        outcome: str
        amount: str | None
        calls: int | None
        call_limits: dict[str, int]
        actor: dict[str, Any]

        def apply(self, aggregate: Meter) -> None:
            lease = aggregate.leases.pop(self.lease_id)
            aggregate.leased -= lease.units or 0
            aggregate.leased_calls -= lease.calls or 0
            for name, count in lease.classes.items():
                aggregate.leased_class[name] -= count

    @dataclass(frozen=True)
    class BoundRaised(Event):
        """An approved ``mission_budget_increase`` request raised the bounds by exactly what
        the denied request needed (``amount``, one call, one call of ``call_class``), for the
        permit ``evaluation_id`` that spends the approval's use."""

        TOPIC = TOPIC_PREFIX + "Meter.BoundRaised"
        approval_id: str
        evaluation_id: str
        amount: str | None
        calls: int
        call_class: str | None

        def apply(self, aggregate: Meter) -> None:
            aggregate.raised += 0 if self.amount is None else parse_units(self.amount) or 0
            aggregate.raised_calls += self.calls
            if self.call_class is not None:
                counts = aggregate.raised_class
                counts[self.call_class] = counts.get(self.call_class, 0) + 1
            aggregate.raises[self.evaluation_id] = self.approval_id

    if TYPE_CHECKING:
        mission_id: str
        bounds: Bounds
        spent: int
        reserved: int
        calls_committed: int
        calls_reserved: int
        class_calls: dict[str, int]
        outstanding: dict[str, Reservation]
        #: No outstanding reservation expires before this (None: not known; see
        #: ``expire_due``). Derived, never recorded: lowered as reservations are held.
        due_from: datetime | None
        settled: dict[str, Settlement]
        leases: dict[str, Lease]
        leased: int
        leased_calls: int
        leased_class: dict[str, int]
        raised: int
        raised_calls: int
        raised_class: dict[str, int]
        raises: dict[str, str]

    # ----------------------------------------------------------------- commands

    @classmethod
    def open(cls, *, mission_id: str, bounds: Bounds, now: datetime) -> Meter:
        return cls._create(
            cls.Opened,
            id=meter_id(mission_id),
            timestamp=now,
            mission_id=mission_id,
            **bounds.to_event(),
        )

    def reserve(
        self,
        call: MeteredCall,
        *,
        evaluation_id: str,
        expires_at: datetime,
        mandate_id: str | None,
        now: datetime,
        lease_id: str | None = None,
        approval_id: str | None = None,
    ) -> None:
        """Reserve ``call``, or refuse (``BudgetExceeded``) when committed plus outstanding
        (reservations and leases) would exceed a bound; a mismatched currency is refused as
        invalid. Under ``lease_id`` the call is taken from that lease's slice (refused when
        the lease has ended or lacks room). With ``approval_id`` (an approved
        ``mission_budget_increase`` whose use this permit spends) the bounds are first raised
        by exactly what the call needs (``BoundRaised``), so it always fits."""
        if evaluation_id in self.outstanding or evaluation_id in self.settled:
            raise Conflict(f"evaluation {evaluation_id!r} already holds a reservation")
        if expires_at <= now:
            raise InvalidRequest("a reservation must expire after it is made")
        units, amount, klass = self._need(call)
        if approval_id is not None:
            if lease_id is not None:
                raise InvalidRequest("a raise is reserved centrally, never under a lease")
            self.trigger_event(
                self.BoundRaised,
                timestamp=now,
                approval_id=approval_id,
                evaluation_id=evaluation_id,
                amount=amount,
                calls=1 if self.bounds.max_calls is not None else 0,
                call_class=klass if klass in self.bounds.class_limits else None,
            )
        if lease_id is None:
            self._check_room(units, klass, need_calls=1)
        else:
            self._check_lease(lease_id, units, klass, now)
        self.trigger_event(
            self.Reserved,
            timestamp=now,
            evaluation_id=evaluation_id,
            amount=amount,
            call_class=klass,
            expires_at=expires_at,
            mandate_id=mandate_id,
            lease_id=lease_id,
        )

    def draw_many(
        self,
        lease_id: str,
        draws: list[tuple[MeteredCall, str, datetime, str | None]],
        *,
        now: datetime,
    ) -> list[LedgerError | None]:
        """Record permits answered from the lease ``lease_id`` — each (call, evaluation id,
        expiry, Mandate id) — in one ``LeaseDrawn`` event; per draw, None or why the Meter
        refused it (the lease ended, lacks room, a duplicate)."""
        outcomes: list[LedgerError | None] = []
        accepted: list[dict[str, Any]] = []
        seen: set[str] = set()
        lease = self.leases.get(lease_id)
        left_units = None if lease is None else lease.units
        left_calls = None if lease is None else lease.calls
        left_classes = {} if lease is None else dict(lease.classes)
        for call, evaluation_id, expires_at, mandate_id in draws:
            try:
                if (
                    evaluation_id in self.outstanding
                    or evaluation_id in self.settled
                    or (evaluation_id in seen)
                ):
                    raise Conflict(f"evaluation {evaluation_id!r} already holds a reservation")
                if lease is None or lease.expires_at <= now:
                    raise Conflict(f"lease {lease_id!r} has ended")
                units, amount, klass = self._need(call)
                short = (
                    (left_units is not None and units > left_units)
                    or (left_calls is not None and left_calls < 1)
                    or (klass in self.bounds.class_limits and left_classes.get(klass or "", 0) < 1)
                )
                if short:
                    raise BudgetExceeded(
                        f"lease {lease_id!r} lacks room for this call", control=MAX_BUDGET
                    )
            except LedgerError as error:
                outcomes.append(error)
                continue
            if left_units is not None:
                left_units -= units
            if left_calls is not None:
                left_calls -= 1
            if klass is not None and klass in left_classes:
                left_classes[klass] -= 1
            seen.add(evaluation_id)
            accepted.append(
                {
                    "evaluation_id": evaluation_id,
                    "amount": amount,
                    "call_class": klass,
                    "expires_at": expires_at.isoformat(),
                    "mandate_id": mandate_id,
                }
            )
            outcomes.append(None)
        if accepted:
            self.trigger_event(
                self.LeaseDrawn, timestamp=now, lease_id=lease_id, reservations=accepted
            )
        return outcomes

    def grant_lease(
        self,
        call: MeteredCall,
        *,
        lease_id: str,
        holder: str,
        expires_at: datetime,
        share: int,
        now: datetime,
    ) -> Lease:
        """Lease ``holder`` a slice of what remains of each bound: ``1/share`` of it, at least
        what ``call`` needs (refused with ``BudgetExceeded`` when even that does not fit), at
        most all of it."""
        if lease_id in self.leases:
            raise Conflict(f"lease {lease_id!r} exists")
        if expires_at <= now:
            raise InvalidRequest("a lease must expire after it is granted")
        units, _, klass = self._need(call)
        self._check_room(units, klass, need_calls=1)
        bounds = self.bounds
        left = self._room()
        amount: str | None = None
        if bounds.budget is not None:
            room = left[MAX_BUDGET] or 0
            amount = self._shown(min(room, max(units, room // share)))
        calls: int | None = None
        if bounds.max_calls is not None:
            room = left[MAX_CALLS] or 0
            calls = min(room, max(1, room // share))
        limits: dict[str, int] = {}
        for name in bounds.class_limits:
            room = left[name] or 0
            limits[name] = min(room, max(1 if name == klass else 0, room // share))
        self.trigger_event(
            self.LeaseGranted,
            timestamp=now,
            lease_id=lease_id,
            holder=holder,
            amount=amount,
            calls=calls,
            call_limits=limits,
            expires_at=expires_at,
        )
        return self.leases[lease_id]

    def return_lease(self, lease_id: str, *, outcome: str, actor: Actor, now: datetime) -> bool:
        """End a lease (its unused slice goes back); False when it has already ended."""
        lease = self.leases.get(lease_id)
        if lease is None:
            return False
        self.trigger_event(
            self.LeaseReturned,
            timestamp=now,
            lease_id=lease_id,
            outcome=outcome,
            amount=None if lease.units is None else self._shown(lease.units),
            calls=lease.calls,
            call_limits=dict(lease.classes),
            actor=actor.to_json(),
        )
        return True

    def report(
        self,
        evaluation_id: str,
        *,
        outcome: Literal["executed", "aborted"],
        amount: str | None,
        actor: Actor,
        now: datetime,
    ) -> tuple[Settlement, bool]:
        """One usage report (``report_many``); raises its refusal."""
        (answer,) = self.report_many([(evaluation_id, outcome, amount, actor)], now=now)
        if isinstance(answer, LedgerError):
            raise answer
        return answer

    def report_many(
        self, reports: Sequence[UsageReport], *, now: datetime
    ) -> list[tuple[Settlement, bool] | LedgerError]:
        """Usage reports — each (evaluation id, outcome, amount, actor) — recorded in one
        ``UsageReported`` event per actor; per report, its settlement and whether it was a
        repeat, or why it was refused. ``executed`` commits the reserved amount, or ``amount`` when
        lower; ``aborted`` releases the reservation. A reservation already reported (before,
        or earlier in ``reports``) answers with its first outcome and changes nothing."""
        answers: list[tuple[Settlement, bool] | LedgerError | str] = []
        accepted: dict[str, dict[str, Any]] = {}
        by_actor: dict[Actor, list[dict[str, Any]]] = {}
        for report in reports:
            evaluation_id = report[0]
            if evaluation_id in accepted:
                answers.append(evaluation_id)  # a repeat within these reports: filled below
                continue
            try:
                item = self._reported(report, now)
            except LedgerError as refusal:
                answers.append(refusal)
                continue
            if isinstance(item, Settlement):
                answers.append((item, True))
                continue
            accepted[evaluation_id] = item
            by_actor.setdefault(report[3], []).append(item)
            answers.append(evaluation_id)
        for actor, items in by_actor.items():
            self.trigger_event(
                self.UsageReported, timestamp=now, actor=actor.to_json(), reports=items
            )
        first: set[str] = set()
        out: list[tuple[Settlement, bool] | LedgerError] = []
        for answer in answers:
            if isinstance(answer, str):
                out.append((self.settled[answer], answer in first))
                first.add(answer)
            else:
                out.append(answer)
        return out

    def _reported(self, report: UsageReport, now: datetime) -> dict[str, Any] | Settlement:
        """The ``UsageReported`` member of one report, or the settlement it repeats;
        raises its refusal."""
        evaluation_id, outcome, amount, _ = report
        settled = self.settled.get(evaluation_id)
        if settled is not None:
            if settled.outcome == EXPIRED:
                raise self._expired(evaluation_id)
            return settled
        held = self.outstanding.get(evaluation_id)
        if held is None:
            raise NotFound(f"no reservation for evaluation {evaluation_id!r}")
        if held.expires_at <= now:
            raise self._expired(evaluation_id)
        if outcome == ABORTED:
            if amount is not None:
                raise InvalidRequest.at("/amount", "an aborted call spends nothing; omit amount")
            spent = None
        else:
            units = held.units if amount is None else require_units(amount, "/amount")
            if units > held.units:
                raise InvalidRequest.at(
                    "/amount",
                    f"{amount} exceeds the reserved {self._shown(held.units)}: report at most "
                    "what was reserved (a larger amount needs a new decision)",
                )
            spent = self._shown(units) if amount is None else amount
        return {"evaluation_id": evaluation_id, "outcome": outcome, "amount": spent}

    def expire_due(self, now: datetime) -> int:
        """Release every reservation whose expiry has come, and end every lease whose
        expiry has come (its holder stopped using it well before); returns how many
        reservations."""
        due: list[str] = []
        due_from = self.due_from
        if due_from is None or due_from <= now:
            # A full look only when something may be due: held once per group by the
            # metering writer, a Meter with thousands of reservations outstanding would
            # otherwise be scanned whole every time.
            due = [eid for eid, held in self.outstanding.items() if held.expires_at <= now]
            later = [held.expires_at for held in self.outstanding.values()]
            self.due_from = min((when for when in later if when > now), default=None)
        for evaluation_id in due:
            self.trigger_event(
                self.Released,
                timestamp=now,
                evaluation_id=evaluation_id,
                outcome=EXPIRED,
                actor=SCHEDULER.to_json(),
            )
        for lease_id in [k for k, lease in self.leases.items() if lease.expires_at <= now]:
            self.return_lease(lease_id, outcome=EXPIRED, actor=SCHEDULER, now=now)
        return len(due)

    # ----------------------------------------------------------------- arithmetic

    def _need(self, call: MeteredCall) -> tuple[int, str | None, str | None]:
        """What ``call`` takes: units of the budget, the amount to record, its class."""
        bounds = self.bounds
        amount = None if bounds.budget is None else call.amount
        units = 0
        if amount is not None:
            units = require_units(amount, "/amount")
            if call.currency != bounds.currency:
                raise InvalidRequest(
                    f"currency {call.currency} is not comparable with the budget's "
                    f"{bounds.currency} (no conversion)"
                )
        return units, amount, call.call_class

    def _room(self) -> dict[str, int | None]:
        """What each bound has left for new reservations and leases (``None``: unbounded):
        the bound, plus raises, minus committed, reserved and leased."""
        bounds = self.bounds
        budget = bounds.budget_units
        room: dict[str, int | None] = {
            MAX_BUDGET: None
            if budget is None
            else budget + self.raised - self.spent - self.reserved - self.leased,
            MAX_CALLS: None
            if bounds.max_calls is None
            else bounds.max_calls
            + self.raised_calls
            - self.calls_committed
            - self.calls_reserved
            - self.leased_calls,
        }
        for name, limit in bounds.class_limits.items():
            room[name] = (
                limit
                + self.raised_class.get(name, 0)
                - self.class_calls.get(name, 0)
                - self.leased_class.get(name, 0)
            )
        return room

    def _check_room(self, units: int, klass: str | None, *, need_calls: int) -> None:
        room = self._room()
        budget = room[MAX_BUDGET]
        if budget is not None and units > budget:
            raise BudgetExceeded(
                f"{self._shown(units)} {self.bounds.currency} would exceed the Mission's "
                f"max_budget: {self._shown(max(budget, 0))} {self.bounds.currency} remain",
                control=MAX_BUDGET,
            )
        calls = room[MAX_CALLS]
        if calls is not None and calls < need_calls:
            raise BudgetExceeded(
                f"the Mission's max_calls ({self.bounds.max_calls}) are used or reserved",
                control=MAX_CALLS,
            )
        if klass is not None and klass in self.bounds.class_limits and (room[klass] or 0) < 1:
            raise BudgetExceeded(
                f"the Mission's max_calls for call class {klass!r} "
                f"({self.bounds.class_limits[klass]}) are used or reserved",
                control=MAX_CALLS,
            )

    def _check_lease(self, lease_id: str, units: int, klass: str | None, now: datetime) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.expires_at <= now:
            raise Conflict(f"lease {lease_id!r} has ended")
        short = (
            (lease.units is not None and units > lease.units)
            or (lease.calls is not None and lease.calls < 1)
            or (klass in self.bounds.class_limits and lease.classes.get(klass or "", 0) < 1)
        )
        if short:
            raise BudgetExceeded(f"lease {lease_id!r} lacks room for this call", control=MAX_BUDGET)

    def _hold(
        self, evaluation_id: str, units: int, klass: str | None, expires_at: datetime
    ) -> None:
        """A new outstanding reservation (``Reserved.apply``, ``LeaseDrawn.apply``)."""
        self.outstanding[evaluation_id] = Reservation(
            units=units, call_class=klass, expires_at=expires_at
        )
        if self.due_from is not None and expires_at < self.due_from:
            self.due_from = expires_at
        self.reserved += units
        self.calls_reserved += 1
        if klass is not None:
            self.class_calls[klass] = self.class_calls.get(klass, 0) + 1

    def _draw(self, lease_id: str, units: int, calls: int, classes: Mapping[str, int]) -> None:
        """Move reservations' shares out of a lease: ``units`` of its budget, ``calls`` calls,
        and per call class the calls of that class (``Reserved.apply``: one reservation;
        ``LeaseDrawn.apply``: all of its reservations at once)."""
        lease = self.leases[lease_id]
        left = dict(lease.classes)
        for klass, count in classes.items():
            if klass in left:
                left[klass] -= count
                self.leased_class[klass] -= count
        self.leases[lease_id] = replace(
            lease,
            units=None if lease.units is None else lease.units - units,
            calls=None if lease.calls is None else lease.calls - calls,
            classes=left,
        )
        self.leased -= units if lease.units is not None else 0
        self.leased_calls -= calls if lease.calls is not None else 0

    # ----------------------------------------------------------------- queries

    def usage(self) -> Usage:
        return Usage(
            bounds=self.bounds,
            spent=self.spent,
            reserved=self.reserved,
            calls_committed=self.calls_committed,
            calls_reserved=self.calls_reserved,
            class_calls=dict(self.class_calls),
            leased=self.leased,
            leased_calls=self.leased_calls,
            leased_class=dict(self.leased_class),
            raised=self.raised,
            raised_calls=self.raised_calls,
            raised_class=dict(self.raised_class),
        )

    def next_expiry(self) -> datetime | None:
        return min(
            [held.expires_at for held in self.outstanding.values()]
            + [lease.expires_at for lease in self.leases.values()],
            default=None,
        )

    def _end(self, evaluation_id: str) -> Reservation:
        """The outstanding reservation ``evaluation_id``, ended (its settlement is the
        caller's to record)."""
        held = self.outstanding.pop(evaluation_id)
        self.reserved -= held.units
        self.calls_reserved -= 1
        return held

    def _spend(self, amount: str) -> Settlement:
        """An ended reservation's call executed: ``amount`` is spent (its call stays
        counted)."""
        units = parse_units(amount) or 0
        self.spent += units
        self.calls_committed += 1
        return Settlement(EXECUTED, units, amount)

    def _release(self, held: Reservation, outcome: Outcome) -> Settlement:
        """An ended reservation's call did not happen: nothing spent, its class call
        uncounted."""
        if held.call_class is not None:
            self.class_calls[held.call_class] -= 1
        return Settlement(outcome, 0)

    def _shown(self, units: int) -> str:
        return format_units(units, scale_of(self.bounds.budget or ""))

    def _expired(self, evaluation_id: str) -> LedgerError:
        return ReservationExpired(
            f"the reservation of evaluation {evaluation_id!r} has expired and was released; "
            "its call was not counted"
        )


def empty_usage(bounds: Bounds) -> Usage:
    """The usage of a Mission whose Meter has not been opened (no metered decision yet)."""
    return Usage(
        bounds=bounds, spent=0, reserved=0, calls_committed=0, calls_reserved=0, class_calls={}
    )
