"""The Ledger application's foundation: loading, saving, concurrency, idempotency.

Every command loads the aggregates it needs, lets them decide (domain rules raise
``LedgerError`` subclasses), and saves every changed aggregate in one atomic
``save``. A command returns a ``Written`` with the aggregate and the log position
of its last event (``None`` when the request changed nothing).

Concurrency: two commands on the same aggregate from different processes both
load version *n* and try to write *n+1*; the store's primary key lets exactly one
win. The loser is retried from a fresh load (so its checks run against the new
state) unless the caller pinned ``expected_version``, in which case it gets
``StaleVersion``. Retries back off with jitter, and a command that keeps losing runs
its remaining attempts alone among this process's commands
(``ledger.application.contention``), so a wide command such as a cascading revoke
cannot be starved by narrow ones issued through the same process.

One write, one cause: before saving, every event of the write that can name its cause
names the write's first event (``ledger.domain.events.name_the_write``), so everything a
cascade does shares one identity (the ``txn`` of the SETs it raises).

Idempotency: an ``IdempotencyRequest`` makes the write's record part of the same
transaction (``ledger.persistence.idempotency``); a retry with the same key and the
same request gets the original result, a different request gets
``IdempotencyConflict``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import rfc8785
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.domain import BaseAggregate, DomainEventProtocol, MutableOrImmutableAggregate
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import Environment

from ledger.application.contention import ESCALATE_AFTER, WriteGate, backoff
from ledger.clock import Clock
from ledger.domain.canonical import raw_digest
from ledger.domain.errors import (
    Conflict,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    StaleVersion,
)
from ledger.domain.events import name_the_write
from ledger.domain.instants import format_instant
from ledger.domain.metering import Meter, bounds_of, empty_usage, meter_id
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.persistence.database import Database
from ledger.persistence.eventlog import EventLog, LoggedEvent
from ledger.persistence.idempotency import IdempotencyRecord
from ledger.persistence.notify import CommitListeners

A = TypeVar("A", bound=BaseAggregate[str])

MAX_ATTEMPTS = 8


def new_id(prefix: str) -> str:
    """An opaque identifier with 192 bits of entropy (URL-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"


class TokenSigner(Protocol):
    """Signs compact JWS (the key store in ``ledger.signing`` implements it)."""

    def sign_compact(
        self, header: dict[str, Any], payload: bytes, *, alg: str, now: datetime
    ) -> str: ...


@dataclass(frozen=True)
class IdempotencyRequest:
    """An ``Idempotency-Key`` as scoped to its credential, with the request's digest."""

    scope: str
    key: str
    request_hash: str
    status_code: int


@dataclass(frozen=True)
class Written(Generic[A]):
    """The outcome of a command: the aggregate, and the position of the last event written."""

    value: A
    position: int | None
    replayed: bool = False
    status_code: int | None = None
    response: str | None = None


@dataclass
class Changes:
    """What one command wants saved: changed aggregates (the result last), and the versions
    of aggregates it read but does not write, which must still hold at commit."""

    result: BaseAggregate[str]
    changed: list[BaseAggregate[str]]
    expect: dict[str, int]
    #: Aggregates the command knows do not exist yet (e.g. a new Mission's mandate tree),
    #: so later commands need not ask the database.
    absent: tuple[str, ...] = ()


class Replay(Exception):  # control flow: an idempotent replay, not an error
    def __init__(self, aggregate: BaseAggregate[str]) -> None:
        super().__init__("replay")
        self.aggregate = aggregate


def fingerprint(request: Mapping[str, Any]) -> str:
    """The digest that tells a retried request from another with the same nonce; a request
    JCS cannot represent (an integer beyond the I-JSON range, say) is refused."""
    try:
        return raw_digest(dict(request))
    except rfc8785.CanonicalizationError as error:
        raise InvalidRequest(f"the request cannot be canonicalised (RFC 8785): {error}") from None


def working_copy(aggregate: A) -> A:
    """A copy a command may change without touching the original.

    Event ``apply`` methods only ever replace attributes or change top-level dicts and
    lists in place (a Mission's nonces, a tree's parents, an instance's holdings); nested
    values are never modified. Copying the top level is therefore enough, and far cheaper
    than a deep copy.
    """
    clone = type(aggregate).__new__(type(aggregate))
    state = dict(aggregate.__dict__)
    for key, value in state.items():
        if isinstance(value, dict | list):
            state[key] = copy.copy(value)
    state["_pending_events"] = []
    clone.__dict__.update(state)
    return clone


class CommandCache:
    """What commands read, kept in memory between commands (LRU, copy on read).

    A command trusts these copies without asking the database whether they are still
    current: if another process changed one meanwhile, the command's write conflicts
    (same version written twice) or its commit-time read check fails, the copies it
    touched are forgotten, and the command runs again on fresh state. Queries never
    use this cache: they read through the repository, which fast-forwards from the
    store, so every replica answers reads with the latest state.
    """

    def __init__(self, repository: Repository[str], size: int = 4096) -> None:
        self._repository = repository
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, BaseAggregate[str] | None] = OrderedDict()

    def load(self, aggregate_id: str) -> BaseAggregate[str] | None:
        with self._lock:
            known = aggregate_id in self._items
            cached = self._items.get(aggregate_id)
            if known:
                self._items.move_to_end(aggregate_id)
        if known:
            return None if cached is None else working_copy(cached)
        try:
            aggregate: BaseAggregate[str] | None = self._repository.get(aggregate_id)
        except AggregateNotFoundError:
            aggregate = None
        self._put(aggregate_id, None if aggregate is None else working_copy(aggregate))
        return aggregate

    def remember(self, aggregates: list[BaseAggregate[str]]) -> None:
        """After a successful save: the saved state is the current state."""
        for aggregate in aggregates:
            self._put(aggregate.id, working_copy(aggregate))

    def remember_absent(self, aggregate_ids: tuple[str, ...]) -> None:
        for aggregate_id in aggregate_ids:
            self._put(aggregate_id, None)

    def forget(self, aggregate_ids: list[str]) -> None:
        with self._lock:
            for aggregate_id in aggregate_ids:
                self._items.pop(aggregate_id, None)

    def _put(self, aggregate_id: str, aggregate: BaseAggregate[str] | None) -> None:
        with self._lock:
            self._items[aggregate_id] = aggregate
            self._items.move_to_end(aggregate_id)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class LedgerBase(Application[str]):
    """Construction, reads, and the one write path every use case goes through."""

    name = "Ledger"

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        clock: Clock,
        issuer: str,
        proposal_ttl: timedelta,
        policy_version: str,
        signer: TokenSigner | None = None,
        mandate_alg: str = "ES256",
        require_subject_assertion: bool = False,
    ) -> None:
        super().__init__(env=dict(env))
        self.clock = clock
        self.issuer = issuer
        self.proposal_ttl = proposal_ttl
        self.policy_version = policy_version
        self.signer = signer
        self.mandate_alg = mandate_alg
        self.require_subject_assertion = require_subject_assertion
        self.commit_listeners = CommitListeners()
        self.recorder.commit_listeners = self.commit_listeners  # type: ignore[attr-defined]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        self.database = Database(datastore)
        self.event_log = EventLog(self.database, self.mapper)
        self._command = threading.local()
        self._command_cache = CommandCache(self.repository)
        self._gate = WriteGate()

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        # Configuration comes only from Settings (via ``env``), never from stray
        # process environment variables such as POSTGRES_HOST.
        return Environment(name, dict(env or {}))

    def save(
        self,
        *objs: MutableOrImmutableAggregate[str] | DomainEventProtocol[str] | None,
        **kwargs: Any,
    ) -> list[Recording[str]]:
        """The library's ``Application.save`` (eventsourcing 9.5), for the ledger's own
        aggregates without its two runtime ``Protocol`` checks per object: on CPython 3.11
        ``isinstance(meter, DomainEventProtocol)`` and ``isinstance(meter,
        CollectEventsProtocol)`` take ≈ 22 µs together, more than a Meter's own work for a
        usage report (``bench.meter_writer``). Anything else goes the library's way."""
        aggregates = [obj for obj in objs if obj is not None]
        if not all(isinstance(obj, BaseAggregate) for obj in aggregates):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[str] = ProcessingEvent()
        for aggregate in aggregates:
            assert isinstance(aggregate, BaseAggregate)
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    # ------------------------------------------------------------------ reads

    def get_proposal(self, proposal_id: str) -> Proposal:
        return self._get(Proposal, proposal_id, "proposal")

    def get_mission(self, mission_id: str, *, as_of: datetime | None = None) -> Mission:
        """The Mission now, or as it stood at ``as_of`` (``NotFound`` before its approval)."""
        if as_of is None:
            return self._get(Mission, mission_id, "Mission")
        past = self.history(mission_id, as_of=as_of)
        return self.rebuild_at(Mission, mission_id, "Mission", past, as_of)

    def history(self, originator_id: str, *, as_of: datetime | None = None) -> list[LoggedEvent]:
        """An aggregate's events in version order, with positions and chain hashes; with
        ``as_of``, the ones recorded by then: versions in order up to the first event
        recorded later (timestamps are the writer's clock), so the prefix is a state the
        aggregate really had."""
        events = self.event_log.history(originator_id)
        if as_of is None:
            return events
        return list(itertools.takewhile(lambda e: e.event.timestamp <= as_of, events))

    def mission_usage(
        self, mission: Mission, *, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        """The Mission's ``usage`` (SPEC 7.3, ``Usage.to_json``) now, or at ``as_of`` (its
        Meter folded from the events recorded by then); None when its Intent meters nothing.
        Every reader shows it: ``GET /v1/missions/{id}`` (and its ``as_of``) and
        ``mission-ledger audit replay`` (``api/replay.py``)."""
        bounds = bounds_of(mission.intent.get("controls"))
        if bounds is None:
            return None
        key = meter_id(mission.id)
        meter: Meter | None
        try:
            if as_of is None:
                meter = self.repository.get(key)
            else:
                meter = self.rebuild_at(Meter, key, "Meter", self.history(key, as_of=as_of), as_of)
        except (AggregateNotFoundError, NotFound):
            meter = None  # no metered decision yet
        return (empty_usage(bounds) if meter is None else meter.usage()).to_json()

    def audit_log(self, after: int, limit: int) -> list[LoggedEvent]:
        """The ledger's events after position ``after``, in order, with their chain hashes."""
        return self.event_log.page(after, limit)

    def head_position(self) -> int:
        return int(self.recorder.max_notification_id() or 0)

    # ------------------------------------------------------------------ internals

    def _get(self, cls: type[A], aggregate_id: str, what: str) -> A:
        """Load an aggregate: inside a command from the command cache, otherwise fresh."""
        return self._load(cls, aggregate_id, what, copy=True)

    def _read(self, cls: type[A], aggregate_id: str, what: str) -> A:
        """As ``_get``, for a caller that only reads what it is given (never changes or saves
        it): outside a command, the repository's own cached state brought up to date, not a
        deep copy of it (the library's default, for callers that change what they load). An
        agent instance holds every Mandate ever issued to it: copying one that held 5,000
        took 4 ms of every Mandate's validity (introspection, ``GET /v1/mandates/{id}``)."""
        return self._load(cls, aggregate_id, what, copy=False)

    def _load(self, cls: type[A], aggregate_id: str, what: str, *, copy: bool) -> A:
        if getattr(self._command, "active", False):
            aggregate: BaseAggregate[str] | None = self._command_cache.load(aggregate_id)
        else:
            try:
                aggregate = self.repository.get(aggregate_id, deepcopy_from_cache=copy)
            except AggregateNotFoundError:
                aggregate = None
        if aggregate is None or not isinstance(aggregate, cls):
            raise NotFound(f"no {what} with id {aggregate_id!r}")
        return aggregate

    def rebuild_at(
        self,
        cls: type[A],
        aggregate_id: str,
        what: str,
        past: Sequence[LoggedEvent],
        as_of: datetime,
    ) -> A:
        """The aggregate as it stood at ``as_of``, rebuilt by the repository at the version
        of the last of ``past`` (its ``history(aggregate_id, as_of=as_of)``). ``NotFound``
        when nothing of it had been recorded by then."""
        aggregate: BaseAggregate[str] | None = None
        if past:
            version = past[-1].event.originator_version
            aggregate = self.repository.get(aggregate_id, version=version)
        if aggregate is None or not isinstance(aggregate, cls):
            raise NotFound(f"no {what} with id {aggregate_id!r} existed at {format_instant(as_of)}")
        return aggregate

    def execute(
        self,
        command: Callable[[], Changes],
        idempotency: IdempotencyRequest | None,
        result_type: type[A],
        *,
        pinned: tuple[str, int] | None = None,
    ) -> Written[A]:
        """Run ``command`` (which loads, decides and returns ``Changes``) and save its
        changes atomically, retrying from a fresh load on a concurrency conflict.

        ``pinned`` is (aggregate id, ``expected_version``) when the caller demanded that
        version: a conflict that moved that aggregate on is ``StaleVersion``, not a retry.
        """
        if idempotency is not None:
            replay = self._replay(idempotency, result_type)
            if replay is not None:
                return replay
        conflicts = 0
        with contextlib.ExitStack() as escalation:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                if conflicts == ESCALATE_AFTER:
                    # This command keeps losing: no new attempt in this process
                    # starts until it has committed (ledger.application.contention).
                    escalation.enter_context(self._gate.exclusive())
                with self._gate.shared():
                    written = self._attempt(command, idempotency, result_type, pinned)
                if written is not None:
                    return written
                conflicts += 1
                if attempt < MAX_ATTEMPTS and conflicts <= ESCALATE_AFTER:
                    # Pause before escalating, never while holding the gate exclusively
                    # (that would stall every writer in this process).
                    backoff(conflicts)
        raise Conflict("the aggregate kept changing concurrently; try again")

    def _attempt(
        self,
        command: Callable[[], Changes],
        idempotency: IdempotencyRequest | None,
        result_type: type[A],
        pinned: tuple[str, int] | None,
    ) -> Written[A] | None:
        """One load-decide-save attempt; ``None`` when another command won the race."""
        try:
            self._command.active = True
            try:
                changes = command()
            finally:
                self._command.active = False
        except Replay as replay_signal:
            value = replay_signal.aggregate
            assert isinstance(value, result_type)
            position = self.event_log.position_of(value.id, value.version)
            return Written(value=value, position=position, replayed=True)
        result = changes.result
        assert isinstance(result, result_type)
        if not any(a.pending_events for a in changes.changed):
            return Written(value=result, position=None)
        name_the_write(changes.changed, result)
        record = None
        if idempotency is not None:
            record = IdempotencyRecord(
                scope=idempotency.scope,
                key=idempotency.key,
                request_hash=idempotency.request_hash,
                originator_id=result.id,
                originator_version=result.version,
                status_code=idempotency.status_code,
                response=None,
                created_at=int(self.clock.now().timestamp()),
            )
        try:
            recordings = self.save(
                *changes.changed, idempotency=record, expect=changes.expect or None
            )
        except IntegrityError:
            if idempotency is not None:
                replay = self._replay(idempotency, result_type)
                if replay is not None:
                    return replay
            if pinned is not None and self._version_of(pinned[0]) != pinned[1]:
                raise StaleVersion(
                    "the Mission changed concurrently; expected_version is no longer current"
                ) from None
            self._forget(changes)
            return None
        self._command_cache.remember(changes.changed)
        self._command_cache.remember_absent(changes.absent)
        return Written(value=result, position=recordings[-1].notification.id)

    def _version_of(self, aggregate_id: str) -> int:
        aggregate: BaseAggregate[str] = self.repository.get(aggregate_id)
        return aggregate.version

    def _forget(self, changes: Changes) -> None:
        """Drop the command cache's copies of everything a conflicting command touched or
        read, so the retry loads them from the repository. The repository's own cache is
        left alone when it fast-forwards (``AGGREGATE_CACHE_FASTFORWARD``, as the store
        opens it): it holds only states that were saved, and brings them up to date from
        the store on every load. Evicting them made the retry, and every read after it,
        replay the aggregate's whole history: an agent instance holding thousands of
        Mandates, issued concurrently, was replayed in full on every conflict."""
        self._command_cache.forget([*(a.id for a in changes.changed), *changes.expect])
        cache = self.repository.cache
        if cache is None or self.repository.fastforward:
            return
        for aggregate_id in [*(a.id for a in changes.changed), *changes.expect]:
            with contextlib.suppress(KeyError):
                cache.get(aggregate_id, evict=True)

    def _replay(self, idempotency: IdempotencyRequest, result_type: type[A]) -> Written[A] | None:
        row = self.database.fetchone(
            "SELECT request_hash, originator_id, originator_version, status_code, response "
            "FROM idempotency_records WHERE scope = %s AND key = %s",
            (idempotency.scope, idempotency.key),
        )
        if row is None:
            return None
        if row["request_hash"] != idempotency.request_hash:
            raise IdempotencyConflict(
                "this Idempotency-Key was already used with a different request"
            )
        originator_id = str(row["originator_id"])
        version = int(row["originator_version"])
        aggregate: BaseAggregate[str] = self.repository.get(originator_id, version=version)
        if not isinstance(aggregate, result_type):
            raise IdempotencyConflict(
                "this Idempotency-Key was already used for a different kind of request"
            )
        return Written(
            value=aggregate,
            position=self.event_log.position_of(originator_id, version),
            replayed=True,
            status_code=int(row["status_code"]),
            response=row["response"],
        )
