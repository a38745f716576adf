"""The Meter writer alone, no server: ``python -m bench.meter_writer``.

**Subject.** ``MeterWriter.apply`` (``ledger.application.metering``) on a Ledger opened as
the service opens it (``open_ledger``, default ``Settings``), applying groups shaped like
the server's under metered load (decision 0019): ``--draws`` permits drawn from this
replica's budget leases (one ``LeaseDrawn`` event per lease per group) followed by
``--reports`` usage reports (``executed``: one ``UsageReported`` event per Meter per group),
spread round robin over ``--missions`` Missions, each report settling a draw of the group
before. One thread,
as the server's writer thread; its CPU time (``time.thread_time``) per operation.

**Baseline.** A plain ``eventsourcing`` application (the library's own tables and insert
path, ``bench._support.RawApplication``) in its own store of the same kind, saving as many
new trivial aggregates (one small event each) in one transaction as a group has operations:
the raw cost of an event in a group commit. The ratio subject ÷ baseline is what the Meter's
rules, the hash chain and the reservation deadlines add per operation.

**Rounds.** A warm-up of both, then ``--rounds`` rounds of one baseline phase and one subject
phase of ``--groups`` groups each, alternating which goes first. Every outcome is checked
(a refusal or an error fails the run). ``--profile`` prints where the subject's time goes
(``cProfile``, cumulative, the top functions of every subject phase together).

Not in ``python -m bench``: it isolates one component of ``bench.evaluate``'s metered row
(the share of the server's CPU that the writer thread takes from the event loop).

    python -m bench.meter_writer [--groups 300] [--rounds 3] [--draws 30] [--reports 30]
                                 [--missions 10] [--backend sqlite|postgres|both] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench._support import (
    Note,
    PostgresServer,
    RawApplication,
    machine_description,
    median,
    raw_postgres_env,
    raw_sqlite_env,
    table,
)
from ledger.application import Ledger
from ledger.application.metering import Draw, MeterWriter, Operation, Report, Reserve
from ledger.domain.actors import Actor
from ledger.domain.errors import LedgerError
from ledger.domain.metering import Bounds, Meter, MeteredCall, meter_id
from ledger.persistence.migrations import migrate
from ledger.persistence.store import open_ledger, persistence_env
from ledger.settings import Settings

PEP = Actor(type="api_key", name="bench-pep", role="pep")
#: Far more than any run spends at 1.00 USD an operation (as ``bench.evaluate``'s).
BOUNDS = Bounds(budget="1000000000.00", currency="USD")
CALL = MeteredCall(amount="1.00", currency="USD", call_class=None)
#: Leases outlive any run: none is renewed or expires while it is measured.
LEASE_SECONDS = 24 * 3600


@dataclass
class Workload:
    """Groups of draws then reports over ``missions`` Missions, each report settling one of
    the previous group's draws."""

    ledger: Ledger
    writer: MeterWriter
    missions: list[str]
    leases: dict[str, str]
    draws: int
    reports: int
    made: int = 0
    unreported: list[tuple[str, str]] = field(default_factory=list)  # (Mission, evaluation)

    @classmethod
    def open(cls, ledger: Ledger, *, missions: int, draws: int, reports: int) -> Workload:
        writer = MeterWriter(ledger, lease_seconds=LEASE_SECONDS)  # not started: applied here
        ids = [f"msn_bench_{i:03d}" for i in range(missions)]
        expires = ledger.clock.now() + timedelta(minutes=10)
        first = [
            Reserve(
                mission_id=m,
                bounds=BOUNDS,
                call=CALL,
                evaluation_id=f"ev_open_{m}",
                mandate_id=None,
                expires_at=expires,
            )
            for m in ids
        ]
        _check(writer.apply(first))  # opens each Meter and grants this replica a lease
        leases: dict[str, str] = {}
        for m in ids:
            meter: Meter = ledger.repository.get(meter_id(m))
            mine = [lease for lease, held in meter.leases.items() if held.holder == writer.holder]
            leases[m] = mine[0]
        return cls(ledger, writer, ids, leases, draws, reports)

    def group(self) -> list[Operation]:
        expires = self.ledger.clock.now() + timedelta(minutes=10)
        ops: list[Operation] = []
        drawn: list[tuple[str, str]] = []
        for _ in range(self.draws):
            self.made += 1
            mission = self.missions[self.made % len(self.missions)]
            evaluation = f"ev_{self.made}"
            ops.append(
                Draw(
                    mission_id=mission,
                    lease_id=self.leases[mission],
                    call=CALL,
                    evaluation_id=evaluation,
                    mandate_id=None,
                    expires_at=expires,
                )
            )
            drawn.append((mission, evaluation))
        settle, self.unreported = (
            self.unreported[: self.reports],
            self.unreported[self.reports :] + drawn,
        )
        ops += [
            Report(mission_id=m, evaluation_id=e, outcome="executed", amount=None, actor=PEP)
            for m, e in settle
        ]
        return ops


def _check(outcomes: Sequence[object]) -> None:
    refused = [o for o in outcomes if isinstance(o, LedgerError)]
    if refused:
        msg = f"{len(refused)} operations refused, e.g. {refused[0]!r}"
        raise RuntimeError(msg)


@dataclass(frozen=True)
class Phase:
    operations: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / max(1, self.operations) * 1e6


def subject_phase(work: Workload, groups: int, profiler: cProfile.Profile | None) -> Phase:
    batches = [work.group() for _ in range(groups)]  # built outside the timed part
    operations = sum(len(b) for b in batches)
    context: AbstractContextManager[Any] = profiler if profiler is not None else nullcontext()
    wall, cpu = time.perf_counter(), time.thread_time()
    with context:
        for batch in batches:
            _check(work.writer.apply(batch))
    return Phase(operations, time.thread_time() - cpu, time.perf_counter() - wall)


def baseline_phase(app: RawApplication, groups: int, size: int) -> Phase:
    wall, cpu = time.perf_counter(), time.thread_time()
    for g in range(groups):
        app.save(*(Note(n=g * size + i) for i in range(size)))
    return Phase(groups * size, time.thread_time() - cpu, time.perf_counter() - wall)


@contextmanager
def stores(backend: str) -> Iterator[tuple[Settings, dict[str, str]]]:
    """The Ledger's settings and the raw baseline's environment, on fresh stores."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="ml-bench-meter-") as tmp:
            settings = Settings(data_dir=Path(tmp) / "store")
            yield settings, raw_sqlite_env(Path(tmp) / "raw.sqlite", persistence_env(settings))
        return
    server = PostgresServer.from_env()
    server.version()  # a clear error when no server answers
    with server.database("meter") as ledger_url, server.database("meter_raw") as raw_url:
        settings = Settings(database_url=ledger_url)
        yield settings, raw_postgres_env(persistence_env(settings), raw_url)


def run(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    size = args.draws + args.reports
    with stores(backend) as (settings, raw_env):
        migrate(settings)
        ledger = open_ledger(settings)
        app = RawApplication(env=raw_env)
        try:
            work = Workload.open(
                ledger, missions=args.missions, draws=args.draws, reports=args.reports
            )
            profiler = cProfile.Profile() if args.profile else None
            subject_phase(work, args.warmup_groups, None)
            baseline_phase(app, args.warmup_groups, size)
            subjects: list[Phase] = []
            baselines: list[Phase] = []
            for round_no in range(args.rounds):
                print(f"  {backend}: round {round_no + 1}/{args.rounds}", file=sys.stderr)
                if round_no % 2 == 0:
                    baselines.append(baseline_phase(app, args.groups, size))
                    subjects.append(subject_phase(work, args.groups, profiler))
                else:
                    subjects.append(subject_phase(work, args.groups, profiler))
                    baselines.append(baseline_phase(app, args.groups, size))
        finally:
            app.close()
            ledger.close()
    subject = median([p.cpu_us for p in subjects])
    baseline = median([p.cpu_us for p in baselines])
    result: dict[str, Any] = {
        "backend": backend,
        "operations_per_group": size,
        "subject_cpu_us_per_operation": [round(p.cpu_us, 1) for p in subjects],
        "baseline_cpu_us_per_event": [round(p.cpu_us, 1) for p in baselines],
        "subject_wall_us_per_operation": median(
            [p.wall_seconds / p.operations * 1e6 for p in subjects]
        ),
        "ratio": subject / baseline if baseline else float("nan"),
    }
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
        result["profile"] = out.getvalue()
    return result


def render(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        [
            r["backend"],
            str(r["operations_per_group"]),
            " ".join(f"{v:.1f}" for v in r["subject_cpu_us_per_operation"]),
            " ".join(f"{v:.1f}" for v in r["baseline_cpu_us_per_event"]),
            f"{r['ratio']:.2f}",
        ]
        for r in results
    ]
    headers = [
        "store",
        "ops/group",
        "Meter writer CPU us/op (rounds)",
        "raw save CPU us/event (rounds)",
        "ratio (medians)",
    ]
    lines = [table(headers, rows)]
    lines += [r["profile"] for r in results if "profile" in r]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.meter_writer", description=__doc__)
    parser.add_argument("--groups", type=int, default=300, help="groups per phase")
    parser.add_argument("--warmup-groups", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=30, help="lease draws per group")
    parser.add_argument("--reports", type=int, default=30, help="usage reports per group")
    parser.add_argument("--missions", type=int, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument("--seconds", type=float, default=None, help="ignored (bench-wide option)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(json.dumps(machine_description()), file=sys.stderr)
    results = [run(backend, args) for backend in backends]
    print(render(results))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "profile"} for r in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
