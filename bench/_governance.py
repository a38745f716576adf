"""The governance mix the Ledger benchmark times, and the Ledger-side helpers it needs.

Each call in the mix is one durable "governance write": the Ledger loads what it
needs, validates, and commits hash-chained events in one transaction.
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench._support import PostgresServer, RawApplication, raw_postgres_env, raw_sqlite_env
from ledger.application import Ledger, Written
from ledger.clock import SystemClock
from ledger.domain.actors import Actor
from ledger.domain.instants import format_instant
from ledger.domain.missions import Mission
from ledger.domain.states import Operation
from ledger.persistence.migrations import migrate
from ledger.persistence.store import open_ledger, persistence_env
from ledger.settings import Settings
from ledger.signing.sealing import KeyEncryptionKey

OPERATIONS = ("approve", "suspend", "resume", "revoke")
LIFECYCLE = {
    "suspend": (Operation.SUSPEND, "suspended"),
    "resume": (Operation.RESUME, "active"),
    "revoke": (Operation.REVOKE, "revoked"),
}
EVENTS_PER_OPERATION = {"approve": 2, "suspend": 1, "resume": 1, "revoke": 1}

AGENT = Actor(type="api_key", name="bench-agent", role="agent")
APPROVER = Actor(type="api_key", name="bench-approver", role="approver")
OPERATOR = Actor(type="api_key", name="bench-operator", role="operator")
RESOURCE = "https://erp.example.com"
SUBJECT = {"iss": "https://idp.example.com", "sub": "alice"}

POOL_KEYS = (
    "POSTGRES_POOL_SIZE",
    "POSTGRES_MAX_OVERFLOW",
    "POSTGRES_PRE_PING",
    "POSTGRES_LOCK_TIMEOUT",
    "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "SQLITE_LOCK_TIMEOUT",
    "AGGREGATE_CACHE_MAXSIZE",
    "AGGREGATE_CACHE_FASTFORWARD",
)

LAG = 32  # missions between one stage of the mix and the next
REFILL = 256  # proposals submitted when the pool runs dry mid-phase (clock paused)
FIRST_GUESS_RATE = 500.0  # writes/s, only to size the first pool of proposals


def intent_body(now: datetime) -> dict[str, Any]:
    """A Mission Intent that expires far in the future (about ten years)."""
    return {
        "goal": "Reconcile Q3 invoices",
        "resources": [RESOURCE],
        "expires_at": format_instant(now + timedelta(days=3650)),
    }


def authority_body() -> list[dict[str, Any]]:
    return [
        {
            "type": "mission_resource_access",
            "resource": RESOURCE,
            "actions": ["invoices.read", "journal-entries.write"],
        }
    ]


# ---------------------------------------------------------------------- the subject


@dataclass
class OpTimes:
    count: int = 0
    seconds: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds

    def merge(self, other: OpTimes) -> None:
        self.count += other.count
        self.seconds += other.seconds

    @property
    def mean_ms(self) -> float:
        return 1000 * self.seconds / self.count if self.count else float("nan")

    @property
    def rate(self) -> float:
        """Writes/s if only this operation ran back to back (1 / mean latency)."""
        return self.count / self.seconds if self.seconds else float("nan")


@dataclass(frozen=True)
class GovernancePhase:
    writes: int
    events: int
    seconds: float
    ops: dict[str, OpTimes]

    @property
    def rate(self) -> float:
        return self.writes / self.seconds

    @property
    def events_rate(self) -> float:
        return self.events / self.seconds


class GovernanceDriver:
    """Drives one Ledger through the governance mix.

    Missions flow through three stages, ``LAG`` missions deep, so consecutive writes
    touch different Missions: each cycle approves a new proposal, suspends the oldest
    active Mission, resumes the oldest suspended one and revokes the oldest resumed one.
    """

    def __init__(self, ledger: Ledger, *, lag: int = LAG) -> None:
        self.ledger = ledger
        self.lag = lag
        self.pending: deque[str] = deque()
        self.stages: tuple[deque[str], deque[str], deque[str]] = (deque(), deque(), deque())
        self.submitted = OpTimes()
        # Told the name of each operation just before it runs (profiling attributes time).
        self.observer: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ preparation

    def submit(self, count: int) -> None:
        """Add ``count`` pending proposals to the pool (timed apart from the mix)."""
        if self.observer is not None:
            self.observer("submit")
        for _ in range(count):
            now = self.ledger.clock.now()
            start = time.perf_counter()
            written = self.ledger.submit_proposal(
                actor=AGENT,
                client_id="bench-agent",
                instance_id="bench-1",
                subject=SUBJECT,
                intent=intent_body(now),
                authorization_details=authority_body(),
            )
            self.submitted.add(time.perf_counter() - start)
            _require_write(written, "submit_proposal")
            self.pending.append(written.value.id)

    def prime(self) -> None:
        """Fill the three stages so every cycle runs all four operations."""
        if any(self.stages):
            return
        self.submit(3 * self.lag)
        scratch = {name: OpTimes() for name in OPERATIONS}
        active, suspended, resumed = self.stages
        fresh = [self._approve(scratch) for _ in range(3 * self.lag)]
        active.extend(fresh[: self.lag])
        for mission_id in fresh[self.lag :]:
            self._lifecycle(mission_id, "suspend", scratch)
        suspended.extend(fresh[self.lag : 2 * self.lag])
        for mission_id in fresh[2 * self.lag :]:
            self._lifecycle(mission_id, "resume", scratch)
        resumed.extend(fresh[2 * self.lag :])

    def ensure_pending(self, seconds: float, *, expected_rate: float) -> None:
        """Enough pending proposals for ``seconds`` at ``expected_rate`` writes/s (+25 %)."""
        cycles = expected_rate * seconds / len(OPERATIONS)
        wanted = math.ceil(1.25 * cycles) + 8
        if len(self.pending) < wanted:
            self.submit(wanted - len(self.pending))

    # ------------------------------------------------------------------ the mix

    def _approve(self, ops: dict[str, OpTimes]) -> str:
        proposal_id = self.pending.popleft()
        if self.observer is not None:
            self.observer("approve")
        start = time.perf_counter()
        written = self.ledger.approve_proposal(actor=APPROVER, proposal_id=proposal_id)
        ops["approve"].add(time.perf_counter() - start)
        _require_write(written, "approve", expected_state="active")
        return written.value.id

    def _lifecycle(self, mission_id: str, name: str, ops: dict[str, OpTimes]) -> None:
        operation, expected_state = LIFECYCLE[name]
        if self.observer is not None:
            self.observer(name)
        start = time.perf_counter()
        written = self.ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission_id, operation=operation, reason="bench"
        )
        ops[name].add(time.perf_counter() - start)
        _require_write(written, name, expected_state=expected_state)

    def cycle(self, ops: dict[str, OpTimes]) -> None:
        active, suspended, resumed = self.stages
        active.append(self._approve(ops))
        mission_id = active.popleft()
        self._lifecycle(mission_id, "suspend", ops)
        suspended.append(mission_id)
        mission_id = suspended.popleft()
        self._lifecycle(mission_id, "resume", ops)
        resumed.append(mission_id)
        self._lifecycle(resumed.popleft(), "revoke", ops)

    def run_phase(self, seconds: float, *, expected_rate: float) -> GovernancePhase:
        """Run whole cycles for ``seconds`` of timed wall-clock time."""
        self.prime()
        self.ensure_pending(seconds, expected_rate=expected_rate)
        ops = {name: OpTimes() for name in OPERATIONS}
        submitted_before = self.submitted.count
        head = self.ledger.head_position()
        timed = 0.0
        start = time.perf_counter()
        while True:
            if not self.pending:  # ran dry: stop the clock while topping up
                timed += time.perf_counter() - start
                self.submit(REFILL)
                start = time.perf_counter()
            self.cycle(ops)
            if timed + (time.perf_counter() - start) >= seconds:
                break
        timed += time.perf_counter() - start
        # One event per proposal topped up mid-phase; those are not governance writes.
        refilled = self.submitted.count - submitted_before
        events = self.ledger.head_position() - head - refilled
        writes = sum(times.count for times in ops.values())
        return GovernancePhase(writes=writes, events=events, seconds=timed, ops=ops)


def _require_write(written: Written[Any], what: str, *, expected_state: str | None = None) -> None:
    if written.position is None:
        msg = f"{what} wrote nothing: the benchmark would be timing a no-op"
        raise RuntimeError(msg)
    value = written.value
    if expected_state is not None:
        assert isinstance(value, Mission)
        if value.state != expected_state:
            msg = f"{what} left Mission {value.id} {value.state!r}, not {expected_state!r}"
            raise RuntimeError(msg)


# ---------------------------------------------------------------------- opening Ledgers


def postgres_settings(database_url: str) -> Settings:
    """Settings for a Ledger on ``database_url`` (service defaults for everything else; a
    fresh key-encryption key, which PostgreSQL needs before signing keys can be opened)."""
    return Settings(
        database_url=database_url,
        key_encryption_key=SecretStr(KeyEncryptionKey.generate().to_text()),
    )


def open_bench_ledger(settings: Settings, env_overrides: Mapping[str, str] | None = None) -> Ledger:
    """Migrate, then open the Ledger as the service does (``open_ledger``, real clock).

    ``env_overrides`` changes the ``eventsourcing`` environment, for profiling experiments
    only; the measured configuration is the one ``persistence_env`` builds.
    """
    migrate(settings)
    if not env_overrides:
        return open_ledger(settings, clock=SystemClock())
    return Ledger(
        {**persistence_env(settings), **env_overrides},
        clock=SystemClock(),
        issuer=settings.public_issuer,
        proposal_ttl=timedelta(seconds=settings.proposal_ttl_seconds),
        policy_version=settings.policy_version,
    )


# ---------------------------------------------------------------------- baseline and subject


@dataclass
class Contestants:
    """The baseline and the subject of one backend, each on its own fresh store."""

    backend: str
    server: str
    raw: RawApplication
    ledger: Ledger
    settings: dict[str, str]  # what the report shows
    ledger_settings: Settings


@contextmanager
def postgres_contestants(server: PostgresServer, version: str) -> Iterator[Contestants]:
    with server.database("raw") as raw_url, server.database("ledger") as ledger_url:
        settings = postgres_settings(ledger_url)
        ledger = open_bench_ledger(settings)
        try:
            ledger_env = persistence_env(settings)
            raw = RawApplication(env=raw_postgres_env(ledger_env, raw_url))
            try:
                yield Contestants(
                    backend="postgres",
                    server=f"PostgreSQL {version}",
                    raw=raw,
                    ledger=ledger,
                    settings={k: v for k, v in ledger_env.items() if k in POOL_KEYS},
                    ledger_settings=settings,
                )
            finally:
                raw.close()
        finally:
            ledger.close()


@contextmanager
def sqlite_contestants(parent: Path | None) -> Iterator[Contestants]:
    with tempfile.TemporaryDirectory(prefix="ml-bench-", dir=parent) as tmp:
        settings = Settings(database_url=None, data_dir=Path(tmp) / "ledger")
        ledger = open_bench_ledger(settings)
        try:
            ledger_env = persistence_env(settings)
            raw = RawApplication(env=raw_sqlite_env(Path(tmp) / "raw.sqlite3", ledger_env))
            try:
                yield Contestants(
                    backend="sqlite",
                    server=f"SQLite {sqlite3.sqlite_version} (embedded, files in {tmp})",
                    raw=raw,
                    ledger=ledger,
                    settings={k: v for k, v in ledger_env.items() if k in POOL_KEYS},
                    ledger_settings=settings,
                )
            finally:
                raw.close()
        finally:
            ledger.close()
