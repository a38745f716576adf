"""Shared pieces of the benchmarks: throwaway databases, the raw ``eventsourcing``
baseline, and small statistics/formatting helpers.

Every benchmark measures its subject against a baseline taken in the same run
(interleaved rounds), so the figures that matter are ratios, not absolute rates.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import Environment

from ledger.clock import SystemClock

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_VARIABLE = "MISSION_LEDGER_TEST_PG"
DATABASE_PREFIX = "ml_bench_"


# ---------------------------------------------------------------------- PostgreSQL


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server answers at the admin URL."""


@dataclass(frozen=True)
class PostgresServer:
    """The server named by ``MISSION_LEDGER_TEST_PG``; benchmarks make their own databases."""

    admin_url: str

    @classmethod
    def from_env(cls) -> PostgresServer:
        return cls(os.environ.get(ADMIN_URL_VARIABLE) or DEFAULT_ADMIN_URL)

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, "", ""))

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def version(self) -> str:
        """``server_version`` of the server, e.g. ``15.20 (Debian 15.20-0+deb12u1)``."""
        try:
            with self._admin() as conn:
                row = conn.execute("SHOW server_version").fetchone()
        except psycopg.OperationalError as error:
            msg = (
                f"no PostgreSQL server at {self.admin_url} ({error}); run the benchmarks with "
                f"`.ci/with-postgres .venv/bin/python -m bench` or set {ADMIN_URL_VARIABLE}"
            )
            raise PostgresUnavailable(msg) from error
        assert row is not None
        return str(row[0])

    @contextmanager
    def database(self, label: str) -> Iterator[str]:
        """A fresh, empty, uniquely named database (its URL), dropped afterwards."""
        name = f"{DATABASE_PREFIX}{label}_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url_for(name)
        finally:
            with self._admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- the raw baseline


class Note(Aggregate):
    """The trivial aggregate of the baseline: one small ``Created`` event."""

    @event("Created")
    def __init__(self, n: int) -> None:
        self.n = n

    @event("Bumped")
    def bump(self, n: int) -> None:
        self.n = n


class RawApplication(Application[uuid.UUID]):
    """A plain ``eventsourcing`` application with the library's own tables and insert path."""

    name = "RawBench"

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        # Only what the benchmark passes: stray POSTGRES_* variables must not leak in.
        return Environment(name, dict(env or {}))


def raw_postgres_env(ledger_env: Mapping[str, str], database_url: str) -> dict[str, str]:
    """Library defaults on ``database_url``, with the Ledger's pool and connection settings
    (every ``POSTGRES_*`` value of ``ledger_env`` except the database name)."""
    parts = urlsplit(database_url)
    env = {key: value for key, value in ledger_env.items() if key.startswith("POSTGRES_")}
    env.update(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "CREATE_TABLE": "y",
            "POSTGRES_DBNAME": parts.path.lstrip("/"),
        }
    )
    return env


def raw_sqlite_env(path: Path, ledger_env: Mapping[str, str]) -> dict[str, str]:
    """Library defaults on its own SQLite file (two apps in one file would share a table)."""
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "CREATE_TABLE": "y",
        "SQLITE_DBNAME": str(path),
    }
    if "SQLITE_LOCK_TIMEOUT" in ledger_env:
        env["SQLITE_LOCK_TIMEOUT"] = ledger_env["SQLITE_LOCK_TIMEOUT"]
    return env


@dataclass(frozen=True)
class RawPhase:
    saves: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.saves / self.seconds


def run_raw_phase(app: RawApplication, seconds: float) -> RawPhase:
    """Save one new ``Note`` per call, single thread, for ``seconds``."""
    saves = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        app.save(Note(n=saves))
        saves += 1
        now = time.perf_counter()
        if now >= deadline:
            return RawPhase(saves=saves, seconds=now - start)


def run_raw_update_phase(app: RawApplication, ids: Sequence[uuid.UUID], seconds: float) -> RawPhase:
    """Read-modify-write: ``repository.get`` one of ``ids`` (round robin), one event, save."""
    saves = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        note: Note = app.repository.get(ids[saves % len(ids)])
        note.bump(n=saves)
        app.save(note)
        saves += 1
        now = time.perf_counter()
        if now >= deadline:
            return RawPhase(saves=saves, seconds=now - start)


# ---------------------------------------------------------------------- reporting helpers


def add_run_options(
    parser: argparse.ArgumentParser, *, seconds: float, rounds_help: str, backend: str
) -> None:
    """The options every baseline-vs-subject benchmark on both stores takes."""
    parser.add_argument("--seconds", type=float, default=seconds, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help=rounds_help)
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    parser.add_argument(
        "--backend",
        choices=["postgres", "sqlite", "both"],
        default=backend,
        help=f"PostgreSQL (the acceptance figures), embedded SQLite, or both (default {backend})",
    )
    parser.add_argument(
        "--warmup", type=float, default=None, help="warm-up seconds (default: seconds/5, 0.5-2)"
    )
    parser.add_argument(
        "--sqlite-dir",
        type=Path,
        default=None,
        help="where the SQLite files go (default: the system temp dir; avoid tmpfs)",
    )


def proof_of(token: str) -> dict[str, str]:
    """``context.proof`` of a PEP that verified the caller holds the Mandate's key (the
    token's ``cnf.jkt``, read without checking the signature: the server checks it)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {"jkt": str(claims["cnf"]["jkt"])}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def load_average() -> str:
    """The 1/5/15-minute load averages: a noise indicator (other work on the machine)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


class StolenTime:
    """The share of the machine's CPU time the hypervisor gave to other guests while it
    ran (Linux ``/proc/stat``, "steal"; None elsewhere). On a shared VM a few percent of
    steal during a run moves its rates by tens of percent: report it beside the figures."""

    def __init__(self) -> None:
        self._start = self._ticks()

    @staticmethod
    def _ticks() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        counts = [int(field) for field in fields[:8]]
        steal = counts[7] if len(counts) > 7 else 0
        return steal, sum(counts)

    def share(self) -> float | None:
        end = self._ticks()
        if self._start is None or end is None or end[1] == self._start[1]:
            return None
        return (end[0] - self._start[0]) / (end[1] - self._start[1])

    def describe(self) -> str:
        share = self.share()
        if share is None:
            return "CPU time stolen by the hypervisor during the run: not known on this system"
        verdict = " (above 2 %: the rates are noisy, compare ratios only)" if share > 0.02 else ""
        return f"CPU time stolen by the hypervisor during the run: {share:.1%}{verdict}"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of process ``pid`` and of its child processes (Linux /proc:
    (0, 0) elsewhere or once it is gone)."""

    def own(one: int) -> float:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def children(one: int) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{one}/task").glob("*/children"):
            try:
                found += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        return found

    return own(pid), sum(own(child) for child in children(pid))


def machine_description() -> dict[str, Any]:
    return {
        "date": SystemClock().now().strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width text table (first column left-aligned, the rest right-aligned)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
