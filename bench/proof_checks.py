"""Where a DPoP proof's signature is best checked: ``python -m bench.proof_checks``.

One server per ``PROOF_VERIFIER`` mode (``auto``, ``process``, ``inline``) on one embedded
store (20 Missions x 50 Mandates), each driven in interleaved rounds with plain decisions
(``context.proof.jkt``) and decisions with a fresh DPoP proof (``context.proof.dpop``), at 1
and 16 connections. Prints, per mode, DPoP / plain decisions of the same server and rounds
(the ratio ``bench.evaluate`` reports for the default mode), the server's CPU per decision
(``/proc``: the server process, not its children) and where the signatures were checked
(``/metrics``). Paired in one run, the modes compare more steadily than ``bench.evaluate``
runs do on a shared machine (decision 0023, "Alone"). Not in ``python -m bench``: it
measures a design choice, not an acceptance target.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench._load import LoadResult, drive
from bench._support import cpu_seconds
from bench.evaluate import (
    Seeded,
    Server,
    check_permits,
    dpop_requests,
    evaluation_requests,
    merge,
    progress,
    seed,
)
from ledger.settings import Settings

MODES = ("auto", "process", "inline")
CHECKS = re.compile(r'^mission_ledger_dpop_signature_checks_total\{by="(\w+)"\} (\S+)$', re.M)


def checks(seeded: Seeded, server: Server) -> dict[str, int]:
    """Signature checks so far by where they were made (``/metrics``)."""
    text = httpx.get(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Authorization": f"Bearer {seeded.operator_key}"},
    ).text
    return {by: int(float(count)) for by, count in CHECKS.findall(text)}


def measure(
    seeded: Seeded, servers: dict[str, Server], *, connections: int, seconds: float, rounds: int
) -> dict[str, dict[str, Any]]:
    plain = {mode: evaluation_requests(seeded, s.port, sample=1000) for mode, s in servers.items()}
    runs: dict[str, dict[str, list[LoadResult]]] = {m: {"plain": [], "dpop": []} for m in servers}
    cpu = {mode: {"plain": 0.0, "dpop": 0.0} for mode in servers}
    before = {mode: checks(seeded, s) for mode, s in servers.items()}
    for round_no in range(rounds):
        progress(f"  {connections} connection(s), round {round_no + 1}/{rounds}")
        order = list(servers.items())
        for mode, server in order if round_no % 2 == 0 else reversed(order):
            proofs = dpop_requests(seeded, server.port, 20_000)  # iat: just before the phase
            for kind, requests in (("plain", plain[mode]), ("dpop", proofs)):
                started = cpu_seconds(server.process.pid)[0]
                runs[mode][kind].append(
                    drive(
                        "127.0.0.1",
                        server.port,
                        requests,
                        connections=connections,
                        seconds=seconds,
                        each_once=kind == "dpop",
                    )
                )
                cpu[mode][kind] += cpu_seconds(server.process.pid)[0] - started
    out: dict[str, dict[str, Any]] = {}
    for mode, server in servers.items():
        p, d = merge(runs[mode]["plain"]), merge(runs[mode]["dpop"])
        after = checks(seeded, server)
        out[mode] = {
            "plain_rps": p.rps,
            "dpop_rps": d.rps,
            "ratio": d.rps / p.rps if p.rps else 0.0,
            "plain_cpu_us": cpu[mode]["plain"] / max(p.requests, 1) * 1e6,
            "dpop_cpu_us": cpu[mode]["dpop"] / max(d.requests, 1) * 1e6,
            "checked": {by: n - before[mode].get(by, 0) for by, n in after.items()},
            "errors": p.errors + d.errors,
        }
    return out


def render(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "DPoP decisions / plain decisions of the same server, by PROOF_VERIFIER mode:",
        "",
        "conns  mode      plain/s   dpop/s  ratio  server CPU us: plain  dpop  "
        "checked by (checker/server/alone)  errors",
    ]
    for connections, modes in results.items():
        for mode, row in modes.items():
            by = row["checked"]
            lines.append(
                f"{connections:>5}  {mode:<8} {row['plain_rps']:>8.0f} {row['dpop_rps']:>8.0f} "
                f"{row['ratio']:>6.2f}  {row['plain_cpu_us']:>18.0f} {row['dpop_cpu_us']:>5.0f}  "
                f"{by.get('checker', 0):>10}/{by.get('server', 0)}/{by.get('alone', 0):<12} "
                f"{row['errors']:>6}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proof_checks", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modes = [mode for mode in args.modes.split(",") if mode]
    with tempfile.TemporaryDirectory(prefix="ml-bench-proofs-") as tmp:
        progress("seeding 1,000 Mandates under 20 Missions")
        seeded = seed(
            Settings(data_dir=Path(tmp) / "store"), 20, 50, tokens=True, metered_missions=1
        )
        servers = {m: Server(seeded.settings, {"MISSION_LEDGER_PROOF_VERIFIER": m}) for m in modes}
        try:
            for mode, server in servers.items():
                check_permits(seeded, server.port)
                progress(f"  warming up {mode}")
                warm = evaluation_requests(seeded, server.port, sample=1000)
                drive("127.0.0.1", server.port, warm, connections=4, seconds=2)
            results = {
                str(c): measure(
                    seeded, servers, connections=c, seconds=args.seconds, rounds=args.rounds
                )
                for c in (1, 16)
            }
        finally:
            for server in servers.values():
                server.stop()
    print(render(results))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
