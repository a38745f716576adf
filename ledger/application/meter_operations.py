"""What the Meter writer's two halves say to each other: the metering operations a group is
made of, their outcomes, and the leases a group granted (``metering.MeterWriter``, which
queues operations and draws from leases, and ``meter_book.MeterBook``, which applies groups
to the Meters and saves them). Plain data: in ``METER_WRITER=process`` mode it crosses a
pipe (pickled) between the server and its Meter writer process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ledger.domain.actors import Actor
from ledger.domain.errors import LedgerError, Unavailable
from ledger.domain.metering import Bounds, MeteredCall, Settlement


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


@dataclass(frozen=True)
class GrantedLease:
    """A lease a group granted this replica (``LeaseGranted`` saved), as the decision path
    will draw from it."""

    mission_id: str
    lease_id: str
    bounds: Bounds
    units: int | None
    calls: int | None
    classes: dict[str, int]
    expires_at: datetime


@dataclass(frozen=True)
class Applied:
    """A group applied and saved: an outcome per operation, in order; the leases granted;
    what it cost (for the metrics)."""

    outcomes: list[Outcome]
    granted: list[GrantedLease]
    conflicts: int  # saves lost to another replica's write and applied again
    apply_seconds: float
    save_seconds: float


def write_failure(error: BaseException | None) -> LedgerError:
    """What the callers of a group hear when it could not be written: a refusal as it is,
    anything else (the store's own errors) as ``Unavailable`` naming its class."""
    if isinstance(error, LedgerError):
        return error
    if error is None:
        return Unavailable("the metering write did not complete")
    return Unavailable(f"the metering write did not complete ({type(error).__name__})")
