"""Durable governance writes per second, against the raw ``eventsourcing`` save rate.

Subject: the Ledger on its own freshly migrated database, one writer thread, running
the governance mix approve -> suspend -> resume -> revoke (each call is one
"governance write": load, validate, hash-chained insert, commit). Pending proposals
are submitted beforehand, outside the timed loop (their rate is reported apart).

Baseline: a plain ``eventsourcing`` application on its own fresh database (the
library's tables, ``CREATE_TABLE=y``, its default locked insert path, the Ledger's
pool settings) saving one new trivial aggregate with one small event per save, one
writer thread: the "raw save rate".

Rounds interleave baseline and subject phases (ABBA order) so that machine noise hits
both. The headline figure is median(governance writes/s) / median(raw saves/s); the
acceptance target is >= 0.7 on PostgreSQL. SQLite (embedded mode) is measured the same
way with its own raw baseline, for information.

    python -m bench.ledger [--seconds 10] [--rounds 3] [--backend both] [--json]
    python -m bench.ledger --profile     # then: where the time goes (PostgreSQL)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import _ledger_profile
from bench._governance import (
    EVENTS_PER_OPERATION,
    FIRST_GUESS_RATE,
    OPERATIONS,
    Contestants,
    GovernanceDriver,
    GovernancePhase,
    OpTimes,
    postgres_contestants,
    sqlite_contestants,
)
from bench._support import (
    PostgresServer,
    PostgresUnavailable,
    RawPhase,
    add_run_options,
    load_average,
    machine_description,
    median,
    run_raw_phase,
    table,
)
from ledger.persistence.chain import verify_chain

TARGET_RATIO = 0.7

Progress = Callable[[str], None]


def progress_to_stderr(message: str) -> None:
    print(f"[bench.ledger] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- measuring


@dataclass
class BackendResult:
    backend: str
    server: str
    settings: dict[str, str]
    raw: list[RawPhase] = field(default_factory=list)
    subject: list[GovernancePhase] = field(default_factory=list)
    submitted: OpTimes = field(default_factory=OpTimes)
    chain_checked: int = 0
    chain_intact: bool = False

    @property
    def raw_median(self) -> float:
        return median([p.rate for p in self.raw])

    @property
    def subject_median(self) -> float:
        return median([p.rate for p in self.subject])

    @property
    def events_median(self) -> float:
        return median([p.events_rate for p in self.subject])

    @property
    def ratio(self) -> float:
        return self.subject_median / self.raw_median

    @property
    def round_ratios(self) -> list[float]:
        return [s.rate / r.rate for r, s in zip(self.raw, self.subject, strict=True)]

    @property
    def passed(self) -> bool:
        return self.ratio >= TARGET_RATIO

    def pooled_ops(self) -> dict[str, OpTimes]:
        pooled = {name: OpTimes() for name in OPERATIONS}
        for phase in self.subject:
            for name, times in phase.ops.items():
                pooled[name].merge(times)
        return pooled


def measure(
    contestants: Contestants,
    *,
    seconds: float,
    rounds: int,
    warmup: float,
    progress: Progress,
) -> BackendResult:
    """Warm both up, then ``rounds`` interleaved rounds (ABBA), then verify the chain."""
    result = BackendResult(
        backend=contestants.backend, server=contestants.server, settings=contestants.settings
    )
    driver = GovernanceDriver(contestants.ledger)
    progress(f"{contestants.backend}: warm-up ({warmup:.1f} s each)")
    run_raw_phase(contestants.raw, warmup)
    expected_rate = driver.run_phase(warmup, expected_rate=FIRST_GUESS_RATE).rate
    for index in range(rounds):
        order = ("raw", "ledger") if index % 2 == 0 else ("ledger", "raw")
        for who in order:
            if who == "raw":
                result.raw.append(run_raw_phase(contestants.raw, seconds))
            else:
                phase = driver.run_phase(seconds, expected_rate=expected_rate)
                expected_rate = phase.rate
                result.subject.append(phase)
        raw, subject = result.raw[-1], result.subject[-1]
        progress(
            f"{contestants.backend}: round {index + 1}/{rounds}: raw {raw.rate:,.0f} saves/s, "
            f"governance {subject.rate:,.0f} writes/s, ratio {subject.rate / raw.rate:.2f}"
        )
    result.submitted = driver.submitted
    progress(f"{contestants.backend}: verifying the hash chain")
    report = verify_chain(contestants.ledger.event_log.chain_rows())
    result.chain_checked = report.checked
    result.chain_intact = report.intact
    return result


# ---------------------------------------------------------------------- reporting


def render(result: BackendResult, *, seconds: float, acceptance: bool) -> str:
    lines = [
        f"== {result.server}: {len(result.raw)} rounds x {seconds:g} s, one writer thread",
        "   Ledger settings (the raw baseline shares the POSTGRES_*/SQLITE_* ones): "
        + ", ".join(f"{k}={v}" for k, v in result.settings.items()),
        "",
    ]
    rows = [
        [
            str(i + 1),
            f"{r.rate:,.0f}",
            f"{s.rate:,.0f}",
            f"{s.events_rate:,.0f}",
            f"{s.rate / r.rate:.3f}",
        ]
        for i, (r, s) in enumerate(zip(result.raw, result.subject, strict=True))
    ]
    rows.append(
        [
            "median",
            f"{result.raw_median:,.0f}",
            f"{result.subject_median:,.0f}",
            f"{result.events_median:,.0f}",
            f"{result.ratio:.3f}",
        ]
    )
    lines.append(table(["round", "raw saves/s", "governance writes/s", "events/s", "ratio"], rows))
    lines.append(
        "(the median row's ratio is median/median, the headline figure; the median of the "
        f"per-round ratios is {median(result.round_ratios):.3f})"
    )
    lines.append("")
    op_rows = [
        [
            name,
            f"{times.count:,}",
            f"{times.mean_ms:.3f}",
            f"{times.rate:,.0f}",
            str(EVENTS_PER_OPERATION[name]),
        ]
        for name, times in result.pooled_ops().items()
    ]
    submitted = result.submitted
    op_rows.append(
        [
            "submit (prep, untimed)",
            f"{submitted.count:,}",
            f"{submitted.mean_ms:.3f}",
            f"{submitted.rate:,.0f}",
            "1",
        ]
    )
    lines.append(
        table(["operation (all rounds)", "calls", "mean ms", "writes/s", "events/write"], op_rows)
    )
    verdict = "PASS" if result.passed else "BELOW"
    scope = "acceptance target" if acceptance else "for information; target is for PostgreSQL"
    lines += [
        "",
        f"ratio governance/raw (median/median) = {result.subject_median:,.0f} / "
        f"{result.raw_median:,.0f} = {result.ratio:.3f}   target >= {TARGET_RATIO} "
        f"({scope}): {verdict}",
        f"hash chain: {result.chain_checked:,} events verified, "
        + ("intact" if result.chain_intact else "BROKEN"),
    ]
    return "\n".join(lines)


def summary(result: BackendResult) -> dict[str, Any]:
    return {
        "server": result.server,
        "settings": result.settings,
        "raw_saves_per_s": {
            "rounds": [round(p.rate, 1) for p in result.raw],
            "median": round(result.raw_median, 1),
        },
        "governance_writes_per_s": {
            "rounds": [round(p.rate, 1) for p in result.subject],
            "median": round(result.subject_median, 1),
        },
        "events_per_s": {
            "rounds": [round(p.events_rate, 1) for p in result.subject],
            "median": round(result.events_median, 1),
        },
        "per_operation": {
            name: {
                "calls": t.count,
                "mean_ms": round(t.mean_ms, 4),
                "writes_per_s": round(t.rate, 1),
            }
            for name, t in result.pooled_ops().items()
        },
        "submit_proposal_untimed": {
            "calls": result.submitted.count,
            "mean_ms": round(result.submitted.mean_ms, 4),
            "writes_per_s": round(result.submitted.rate, 1),
        },
        "ratio": round(result.ratio, 4),
        "round_ratios": [round(r, 4) for r in result.round_ratios],
        "target_ratio": TARGET_RATIO,
        "verdict": "PASS" if result.passed else "BELOW",
        "chain": {"events_verified": result.chain_checked, "intact": result.chain_intact},
    }


# ---------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger",
        description="Durable governance writes/s of the Ledger vs the raw eventsourcing "
        "save rate, measured in the same run.",
    )
    add_run_options(
        parser, seconds=10.0, rounds_help="interleaved baseline/subject rounds", backend="both"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, show where a governance write spends its time (PostgreSQL)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=2.0,
        help="length of each profiling phase (the breakdown and cProfile run twice as long)",
    )
    parser.add_argument(
        "--profile-rounds", type=int, default=10, help="rounds of the profiling configurations"
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be positive and --rounds at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(2.0, max(0.5, args.seconds / 5))
    machine = machine_description()
    results: list[BackendResult] = []
    server = PostgresServer.from_env()
    version: str | None = None
    if args.backend in {"postgres", "both"} or args.profile:
        try:
            version = server.version()
        except PostgresUnavailable as error:
            print(f"bench.ledger: {error}", file=sys.stderr)
            return 2
    if version is not None and args.backend in {"postgres", "both"}:
        with postgres_contestants(server, version) as contestants:
            results.append(
                measure(
                    contestants,
                    seconds=args.seconds,
                    rounds=args.rounds,
                    warmup=warmup,
                    progress=progress_to_stderr,
                )
            )
    if args.backend in {"sqlite", "both"}:
        with sqlite_contestants(args.sqlite_dir) as contestants:
            results.append(
                measure(
                    contestants,
                    seconds=args.seconds,
                    rounds=args.rounds,
                    warmup=warmup,
                    progress=progress_to_stderr,
                )
            )

    machine["load_average_at_end"] = load_average()
    print(
        f"Mission Ledger: durable governance writes vs raw eventsourcing saves "
        f"({machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}; "
        f"load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end)"
    )
    for result in results:
        print()
        print(render(result, seconds=args.seconds, acceptance=result.backend == "postgres"))
    profile: dict[str, Any] | None = None
    if args.profile and version is not None:
        print()
        profile = _ledger_profile.run(
            server,
            seconds=args.profile_seconds,
            rounds=args.profile_rounds,
            progress=progress_to_stderr,
            sqlite_dir=args.sqlite_dir if args.backend in {"sqlite", "both"} else None,
            include_sqlite=args.backend in {"sqlite", "both"},
        )
    elif any(r.backend == "postgres" and not r.passed for r in results):
        print("\n(below target: `python -m bench.ledger --profile` shows where the time goes)")
    if args.json:
        document: dict[str, Any] = {
            "benchmark": "ledger",
            "machine": machine,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "backends": {r.backend: summary(r) for r in results},
        }
        if profile is not None:
            document["profile"] = profile
        print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
