"""Metered decisions against a server whose event loop is saturated: does the Meter writer
keep up?

``bench.evaluate``'s metered row runs on a server with the decision log on, whose event
loop has some slack. Here the server has the decision log off, so plain decisions run as
fast as the loop allows, and the metered phase shows whether the Meter writer (a thread
sharing the interpreter lock with that loop) still records every permit and its usage
report: the share of permits whose report was sent within the phase must stay at least
``KEPT_UP``, else the metered rate is of permits without their reports.

Per phase, rounds alternating plain then metered (16 connections by default, the usage
reports batched by a background connection as the PEP toolkit does): the rates and their
ratio, the reported share, the Meter writer's operations per group and time per save, and
the server's CPU per operation on its event-loop thread, its other threads and its child
processes (the Meter writer process in ``METER_WRITER=process``), and the voluntary context
switches a second of the event loop and of the other threads (a thread that blocks, mostly
waiting for the interpreter lock; Linux ``/proc``).

    python -m bench.metered_load [--seconds 5] [--rounds 2] [--connections 16]
                                 [--meter-writer process|thread] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._load import drive
from bench._support import cpu_seconds
from bench.evaluate import (
    KEPT_UP,
    Server,
    add_server_env,
    batched_usage_reports,
    check_permits,
    evaluation_requests,
    meter_writer,
    meter_writer_idle,
    metered_requests,
    seed,
    server_env,
)
from ledger.settings import Settings


def _thread_cpu(pid: int) -> tuple[float, float, int, int]:
    """CPU seconds of ``pid``'s main thread (the event loop) and of its other threads, and
    the voluntary context switches of each side (a thread blocking, mostly on the
    interpreter lock while another thread holds it)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = others = 0.0
    main_switches = other_switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        switches = int(status.split("voluntary_ctxt_switches:", 1)[1].split()[0])
        if task.name == str(pid):
            main += seconds
            main_switches += switches
        else:
            others += seconds
            other_switches += switches
    return main, others, main_switches, other_switches


def _phase(
    server: Server, requests: list[bytes], connections: int, seconds: float, **load: Any
) -> dict[str, float]:
    pid = server.process.pid
    before, children_before = _thread_cpu(pid), cpu_seconds(pid)[1]
    result = drive(
        "127.0.0.1", server.port, requests, connections=connections, seconds=seconds, **load
    )
    after, children_after = _thread_cpu(pid), cpu_seconds(pid)[1]
    count = max(1, result.requests)
    return {
        "rps": result.rps,
        "errors": float(result.errors),
        "loop_cpu_us": (after[0] - before[0]) / count * 1e6,
        "other_threads_cpu_us": (after[1] - before[1]) / count * 1e6,
        "children_cpu_us": (children_after - children_before) / count * 1e6,
        "loop_switches_per_s": (after[2] - before[2]) / seconds,
        "other_switches_per_s": (after[3] - before[3]) / seconds,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metered_load", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--meter-writer",
        choices=["process", "thread"],
        default=None,
        help="the server's METER_WRITER (default: the server's default)",
    )
    add_server_env(parser)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    server_env(args.server_env)  # a malformed one fails now, not after seeding
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ml-bench-metered-") as tmp:
        print("seeding 200 Mandates and 10 metered Missions", file=sys.stderr, flush=True)
        seeded = seed(
            Settings(data_dir=Path(tmp) / "store"), 10, 20, tokens=True, metered_missions=10
        )
        env = server_env(args.server_env) | {"MISSION_LEDGER_DECISION_LOG_MODE": "off"}
        if args.server_env:
            print("server's settings other than the defaults: " + ", ".join(args.server_env))
        if args.meter_writer:
            env["MISSION_LEDGER_METER_WRITER"] = args.meter_writer
        server = Server(seeded.settings, env)
        try:
            check_permits(seeded, server.port)
            plain = evaluation_requests(seeded, server.port, sample=200)
            metered = metered_requests(seeded, server.port)
            follow, flusher, counts = batched_usage_reports(seeded, server.port)
            drive("127.0.0.1", server.port, plain, connections=4, seconds=2)
            drive(
                "127.0.0.1",
                server.port,
                metered,
                connections=4,
                seconds=2,
                follow=follow,
                flusher=flusher,
            )
            meter_writer_idle(seeded, server.port)
            rounds: list[dict[str, Any]] = []
            for number in range(args.rounds):
                print(f"round {number + 1}/{args.rounds}", file=sys.stderr, flush=True)
                plain_phase = _phase(server, plain, args.connections, args.seconds)
                writer_before, counts_before = meter_writer(seeded, server.port), dict(counts)
                metered_phase = _phase(
                    server,
                    metered,
                    args.connections,
                    args.seconds,
                    follow=follow,
                    flusher=flusher,
                )
                writer = {
                    k: v - writer_before[k] for k, v in meter_writer(seeded, server.port).items()
                }
                permits = counts["permits"] - counts_before["permits"]
                sent = counts["sent"] - counts_before["sent"]
                groups = max(1.0, writer["groups"])
                rounds.append(
                    {
                        "plain": plain_phase,
                        "metered": metered_phase,
                        "ratio": metered_phase["rps"] / plain_phase["rps"]
                        if plain_phase["rps"]
                        else 0.0,
                        "reported": sent / max(1, permits),
                        "operations_per_group": writer["operations"] / groups,
                        "save_ms": 1000 * writer["save_seconds"] / groups,
                    }
                )
                meter_writer_idle(seeded, server.port)
        finally:
            server.stop()
    print(
        f"Metered decisions vs plain decisions, decision log off, {args.connections} "
        f"connections, {args.seconds:g} s phases (reports kept up: reported >= {KEPT_UP}):\n"
    )
    print(
        "round  plain/s  metered/s  ratio  reported  ops/group  ms/save  "
        "loop µs/op plain, metered  other threads, children µs/op metered  "
        "loop switches/s plain, metered  other threads' switches/s metered"
    )
    for number, row in enumerate(rounds, 1):
        plain, metered = row["plain"], row["metered"]
        behind = " BEHIND" if row["reported"] < KEPT_UP else ""
        print(
            f"{number:>5} {plain['rps']:>8.0f} {metered['rps']:>10.0f} "
            f"{row['ratio']:>6.2f} {row['reported']:>9.2f}{behind:7} "
            f"{row['operations_per_group']:>9.0f} {row['save_ms']:>8.1f}  "
            f"{plain['loop_cpu_us']:>10.0f} {metered['loop_cpu_us']:>8.0f}  "
            f"{metered['other_threads_cpu_us']:>13.0f} {metered['children_cpu_us']:>9.0f}  "
            f"{plain['loop_switches_per_s']:>21.0f} {metered['loop_switches_per_s']:>8.0f}  "
            f"{metered['other_switches_per_s']:>31.0f}"
        )
    if args.json:
        print(json.dumps({"rounds": rounds, "server_env": env}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
