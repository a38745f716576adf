"""Decision throughput and latency, index memory, and index bootstrap time.

Run: ``python -m bench.evaluate`` (``--help`` for options).

1. Seeds an embedded store with N active Mandates (default 10,000: 100 Missions x 100),
   starts a real server process (uvicorn with uvloop + httptools, one worker), and
   drives it with a raw asyncio HTTP/1.1 client at 1 and 16 concurrent connections:
   ``POST /access/v1/evaluation`` presenting real Mandate tokens (permits), against the
   ceiling ``GET /healthz`` of the same app stack in the same run, interleaved rounds.
   Prints decisions/s, client p50/p99, server-side decision time p50/p99 (the
   ``Server-Timing`` the PDP reports) and the ratio to the ceiling (target >= 0.6;
   server p99 < 1 ms).
2. Index memory per active Mandate (tracemalloc around a bootstrap; target <= 2 KiB).
3. Index bootstrap time for M Mandates (default 100,000).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from joserfc import jws
from joserfc.jwk import ECKey

from bench._load import LoadResult, build_request, drive, percentile
from bench._support import proof_of
from ledger.clock import SystemClock
from ledger.domain.actors import Actor
from ledger.domain.delegation import ActorRef
from ledger.domain.instants import format_instant
from ledger.domain.roles import Role
from ledger.persistence.snapshots import StateCodec
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from projections.boards import MandateRegister, MissionBoard
from projections.evaluation_index import EvaluationIndex
from projections.follower import LogFollower

RESOURCE = "https://erp.example.com"
CLI = Actor(type="cli", name="bench")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Seeded:
    settings: Settings
    pep_key: str
    mandates: list[tuple[str, str]]  # (token, instance_id)
    holder: ECKey  # every Mandate is bound to this key (cnf.jkt), for the DPoP phase


def seed(data_dir: Path, missions: int, per_mission: int, *, tokens: bool) -> Seeded:
    settings = Settings(data_dir=data_dir)
    clock = SystemClock()
    ledger = open_ledger(settings, clock=clock)
    try:
        keyring = Keyring.open(settings, ledger.database)
        keyring.ensure("ES256", clock.now())
        ledger.signer = keyring
        pep = ledger.issue_api_key(name="bench-pep", role=Role.PEP, actor=CLI).secret
        agent = Actor(type="api_key", name="bench-agent", role="agent")
        approver = Actor(type="api_key", name="bench-approver", role="approver")
        intent = {
            "goal": "benchmark",
            "resources": [RESOURCE],
            "expires_at": format_instant(clock.now() + timedelta(days=30)),
        }
        authority = [
            {
                "type": "mission_resource_access",
                "resource": RESOURCE,
                "resource_match": "prefix",
                "actions": ["invoices.read", "invoices.pay"],
                "constraints": {"max_amount": {"amount": "1000.00", "currency": "USD"}},
            }
        ]
        issued: list[tuple[str, str]] = []
        holder = ECKey.generate_key("P-256")
        started = time.perf_counter()
        for m in range(missions):
            proposal = ledger.submit_proposal(
                actor=agent,
                client_id="bench-agent",
                instance_id=None,
                subject={"iss": "https://idp.example.com", "sub": f"user-{m}"},
                intent=intent,
                authorization_details=authority,
            ).value
            mission = ledger.approve_proposal(actor=approver, proposal_id=proposal.id).value
            for i in range(per_mission):
                instance = f"i-{m}-{i}"
                mandate = ledger.issue_mandate(
                    actor=agent,
                    mission_id=mission.id,
                    holder=ActorRef(client_id="bench-agent", instance_id=instance),
                    jkt=holder.thumbprint(),
                    ttl_seconds=86_400,
                ).value
                token = ledger.mandate_token(mandate) if tokens else mandate.id
                issued.append((token, instance))
            if (m + 1) % max(1, missions // 10) == 0:
                rate = len(issued) / (time.perf_counter() - started)
                progress(f"  seeded {len(issued)} Mandates ({rate:.0f}/s)")
        progress("  bringing the mission board and mandate register up to date")
        codec = StateCodec(ledger.mapper.transcoder)
        LogFollower(ledger, durable=[MissionBoard(codec), MandateRegister(codec)]).catch_up()
        return Seeded(settings=settings, pep_key=pep, mandates=issued, holder=holder)
    finally:
        ledger.close()


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
        env.update(
            {
                "MISSION_LEDGER_DATA_DIR": str(settings.data_dir),
                "MISSION_LEDGER_LOG_LEVEL": "warning",
            }
        )
        binary = Path(sys.executable).parent / "mission-ledger"
        self.process = subprocess.Popen(
            [str(binary), "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                if ready.status_code == 200 and ready.json().get("lag") == 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        msg = "the server did not become ready"
        raise RuntimeError(msg)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


SAMPLE = 2000


def sampled(seeded: Seeded, sample: int = SAMPLE) -> list[tuple[str, str]]:
    """The Mandates (token, instance) both decision phases present: the same tokens, so
    the two differ only in the proof (the server verifies each token's signature once)."""
    step = max(1, len(seeded.mandates) // sample)
    return seeded.mandates[::step][:sample]


def evaluation_requests(seeded: Seeded, port: int) -> list[bytes]:
    host = f"127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {seeded.pep_key}"}
    out = []
    for token, instance in sampled(seeded):
        body = {
            "subject": {
                "type": "agent",
                "id": "bench-agent",
                "properties": {"instance_id": instance},
            },
            "action": {
                "name": "invoices.pay",
                "properties": {"amount": "250.00", "currency": "USD"},
            },
            "resource": {"type": "api", "id": f"{RESOURCE}/invoices/42"},
            "context": {"mandate": token, "proof": proof_of(token)},
        }
        out.append(
            build_request(
                "POST",
                "/access/v1/evaluation",
                host,
                body=json.dumps(body).encode(),
                headers=headers,
            )
        )
    return out


def dpop_bodies(seeded: Seeded, count: int) -> list[dict[str, Any]]:
    """``count`` evaluations, each with a fresh DPoP proof by the holder's key (a proof
    permits once: the PDP refuses a replayed ``jti``)."""
    jwk = seeded.holder.as_dict(private=False)
    htu = f"{RESOURCE}/invoices/42"
    rng = random.Random()
    mandates = sampled(seeded)
    out = []
    for n in range(count):
        token, instance = mandates[rng.randrange(len(mandates))]
        claims = {"htm": "POST", "htu": htu, "iat": int(time.time()), "jti": f"j{n}-{rng.random()}"}
        proof = jws.serialize_compact(
            {"alg": "ES256", "typ": "dpop+jwt", "jwk": jwk},
            json.dumps(claims).encode(),
            seeded.holder,
        )
        out.append(
            {
                "subject": {
                    "type": "agent",
                    "id": "bench-agent",
                    "properties": {"instance_id": instance},
                },
                "action": {
                    "name": "invoices.pay",
                    "properties": {"amount": "250.00", "currency": "USD"},
                },
                "resource": {"type": "api", "id": htu},
                "context": {"mandate": token, "proof": {"dpop": proof, "htm": "POST", "htu": htu}},
            }
        )
    return out


def dpop_requests(seeded: Seeded, port: int, count: int) -> list[bytes]:
    """Raw requests for ``dpop_bodies`` (each to be sent once)."""
    headers = {"Authorization": f"Bearer {seeded.pep_key}"}
    return [
        build_request(
            "POST",
            "/access/v1/evaluation",
            f"127.0.0.1:{port}",
            body=json.dumps(body).encode(),
            headers=headers,
        )
        for body in dpop_bodies(seeded, count)
    ]


def check_permits(seeded: Seeded, port: int) -> None:
    token, instance = seeded.mandates[0]
    answer = httpx.post(
        f"http://127.0.0.1:{port}/access/v1/evaluation",
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
        json={
            "subject": {
                "type": "agent",
                "id": "bench-agent",
                "properties": {"instance_id": instance},
            },
            "action": {
                "name": "invoices.pay",
                "properties": {"amount": "250.00", "currency": "USD"},
            },
            "resource": {"type": "api", "id": f"{RESOURCE}/invoices/42"},
            "context": {"mandate": token, "proof": proof_of(token)},
        },
    ).json()
    if answer.get("decision") is not True:
        msg = f"the benchmark request is not a permit: {answer}"
        raise RuntimeError(msg)
    with_proof = httpx.post(
        f"http://127.0.0.1:{port}/access/v1/evaluation",
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
        json=dpop_bodies(seeded, 1)[0],
    ).json()
    if with_proof.get("decision") is not True:
        msg = f"the DPoP benchmark request is not a permit: {with_proof}"
        raise RuntimeError(msg)


def merge(results: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for result in results:
        merged.requests += result.requests
        merged.errors += result.errors
        merged.seconds += result.seconds
        merged.latencies_ms += result.latencies_ms
        merged.server_ms += result.server_ms
    return merged


def measure_http(seeded: Seeded, *, seconds: float, rounds: int, dpop_count: int) -> dict[str, Any]:
    server = Server(seeded.settings)
    try:
        check_permits(seeded, server.port)
        evaluations = evaluation_requests(seeded, server.port)
        ceiling = [build_request("GET", "/healthz", f"127.0.0.1:{server.port}")]
        progress("  warming up (verifies every sampled token once)")
        drive("127.0.0.1", server.port, evaluations, connections=4, seconds=3)
        out: dict[str, Any] = {}
        for connections in (1, 16):
            ceil_runs: list[LoadResult] = []
            eval_runs: list[LoadResult] = []
            dpop_runs: list[LoadResult] = []
            for round_no in range(rounds):
                progress(f"  {connections} connection(s), round {round_no + 1}/{rounds}")
                ceil_runs.append(
                    drive(
                        "127.0.0.1", server.port, ceiling, connections=connections, seconds=seconds
                    )
                )
                eval_runs.append(
                    drive(
                        "127.0.0.1",
                        server.port,
                        evaluations,
                        connections=connections,
                        seconds=seconds,
                    )
                )
                # Proofs are made just before their phase (iat must be within 60 s).
                proofs = dpop_requests(seeded, server.port, dpop_count)
                dpop_runs.append(
                    drive(
                        "127.0.0.1",
                        server.port,
                        proofs,
                        connections=connections,
                        seconds=seconds,
                        each_once=True,
                    )
                )
            ceil, ev, dp = merge(ceil_runs), merge(eval_runs), merge(dpop_runs)
            out[str(connections)] = {
                "ceiling_rps": ceil.rps,
                "decisions_rps": ev.rps,
                "ratio": ev.rps / ceil.rps if ceil.rps else 0.0,
                "client_p50_ms": percentile(ev.latencies_ms, 50),
                "client_p99_ms": percentile(ev.latencies_ms, 99),
                "ceiling_p50_ms": percentile(ceil.latencies_ms, 50),
                "ceiling_p99_ms": percentile(ceil.latencies_ms, 99),
                "server_p50_ms": percentile(ev.server_ms, 50),
                "server_p99_ms": percentile(ev.server_ms, 99),
                "errors": ev.errors + ceil.errors,
                "dpop_rps": dp.rps,
                "dpop_ratio": dp.rps / ev.rps if ev.rps else 0.0,
                "dpop_server_p99_ms": percentile(dp.server_ms, 99),
                "dpop_errors": dp.errors,
            }
        return out
    finally:
        server.stop()


def measure_index(settings: Settings, count: int) -> dict[str, float]:
    """Bootstrap time, and Python memory the index holds per active Mandate."""
    ledger = open_ledger(settings)
    try:
        codec = StateCodec(ledger.mapper.transcoder)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        index = EvaluationIndex(codec)
        started = time.perf_counter()
        index.bootstrap(ledger)
        seconds = time.perf_counter() - started
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        untraced = EvaluationIndex(codec)
        started = time.perf_counter()
        untraced.bootstrap(ledger)
        untraced_seconds = time.perf_counter() - started
        mandates = len(index.mandates)
        assert mandates == count, (mandates, count)
        return {
            "mandates": mandates,
            "bytes_per_mandate": held / mandates,
            "bootstrap_seconds": untraced_seconds,
            "bootstrap_seconds_traced": seconds,
        }
    finally:
        ledger.close()


def render(http: dict[str, Any], index: dict[str, float], boot: dict[str, float]) -> str:
    lines = [
        "",
        "Decisions (POST /access/v1/evaluation, permits with real Mandate tokens) vs the "
        "ceiling (GET /healthz), same server, same run:",
        "",
        f"{'conns':>5} {'ceiling/s':>10} {'decisions/s':>12} {'ratio':>6} {'target':>8} "
        f"{'client p50':>10} {'client p99':>10} {'server p50':>10} {'server p99':>10}",
    ]
    for connections, row in http.items():
        verdict = "PASS" if row["ratio"] >= 0.6 else "BELOW"
        lines.append(
            f"{connections:>5} {row['ceiling_rps']:>10.0f} {row['decisions_rps']:>12.0f} "
            f"{row['ratio']:>6.2f} {'>=0.6 ' + verdict:>8} {row['client_p50_ms']:>8.2f}ms "
            f"{row['client_p99_ms']:>8.2f}ms {row['server_p50_ms']:>8.3f}ms "
            f"{row['server_p99_ms']:>8.3f}ms"
        )
    lines += [
        "",
        "Decisions with a DPoP proof verified by the PDP (context.proof.dpop, each proof once) "
        "vs the decisions above (context.proof.jkt), same run:",
        "",
        f"{'conns':>5} {'decisions/s':>12} {'dpop/s':>8} {'ratio':>6} {'target':>8} "
        f"{'server p99':>10} {'errors':>6}",
    ]
    for connections, row in http.items():
        verdict = "PASS" if row["dpop_ratio"] >= 0.7 else "BELOW"
        lines.append(
            f"{connections:>5} {row['decisions_rps']:>12.0f} {row['dpop_rps']:>8.0f} "
            f"{row['dpop_ratio']:>6.2f} {'>=0.7 ' + verdict:>8} "
            f"{row['dpop_server_p99_ms']:>8.3f}ms {row['dpop_errors']:>6}"
        )
    worst = max(row["server_p99_ms"] for row in http.values())
    lines += [
        "",
        f"server-side decision p99 (worst): {worst:.3f} ms  (target < 1 ms: "
        f"{'PASS' if worst < 1 else 'BELOW'})",
        f"index memory: {index['bytes_per_mandate']:.0f} bytes per active Mandate over "
        f"{index['mandates']:.0f}  (target <= 2048: "
        f"{'PASS' if index['bytes_per_mandate'] <= 2048 else 'BELOW'})",
        f"index bootstrap: {boot['bootstrap_seconds']:.2f} s for {boot['mandates']:.0f} Mandates "
        f"({boot['mandates'] / boot['bootstrap_seconds']:.0f}/s)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluate", description=__doc__)
    parser.add_argument("--missions", type=int, default=100)
    parser.add_argument("--per-mission", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--dpop-proofs",
        type=int,
        default=20_000,
        help="DPoP proofs made per phase (each sent once; the phase ends when they run out)",
    )
    parser.add_argument(
        "--bootstrap-mandates", type=int, default=100_000, help="0 to skip that part"
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ml-bench-eval-") as tmp:
        count = args.missions * args.per_mission
        progress(f"seeding {count} Mandates under {args.missions} Missions")
        seeded = seed(Path(tmp) / "eval", args.missions, args.per_mission, tokens=True)
        progress("measuring decisions over HTTP")
        http = measure_http(
            seeded, seconds=args.seconds, rounds=args.rounds, dpop_count=args.dpop_proofs
        )
        index = measure_index(seeded.settings, count)
        boot = index
        if args.bootstrap_mandates:
            missions = max(1, args.bootstrap_mandates // 100)
            progress(f"seeding {missions * 100} Mandates for the bootstrap measurement")
            big = seed(Path(tmp) / "boot", missions, 100, tokens=False)
            boot = measure_index(big.settings, missions * 100)
        print(render(http, index, boot))
        if args.json:
            print(json.dumps({"http": http, "index": index, "bootstrap": boot}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
