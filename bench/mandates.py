"""Mandate issuances and token verifications per second, next to the raw save rate.

Run: ``python -m bench.mandates`` (``--help`` for options).

**Subject 1, issuance.** The Ledger opened as the service opens it (``migrate``, then
``open_ledger``, the key ring of ``Keyring.open`` with an ES256 key), one thread: each
call is ``issue_mandate`` for a new agent instance with its own key thumbprint under an
active Mission (load the Mission and its MandateTree, check the subset and lifetime
rules, write the Mandate, the tree and the instance events, hash-chained, in one
transaction) followed by ``mandate_token`` (the compact ES256 JWS handed to the agent).
A Mission takes ``--per-mission`` Mandates, then the next Mission is used (Missions are
approved before each phase, outside the timed loop).

**Subject 2, verification.** ``Keyring.verify_compact`` of tokens issued above (look up
the ``kid``, check the algorithm, verify the ES256 signature) and decoding the claims, as
introspection does before it consults the register; one thread, no cache.

The acceptance asks for PostgreSQL, so that is the store measured.

**Baseline.** The raw ``eventsourcing`` save rate of a trivial aggregate on its own fresh
store (``bench._support.RawApplication``), measured in the same run in interleaved rounds
(ABBA), as in ``bench.ledger``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import SecretStr

from bench._governance import Contestants, postgres_contestants
from bench._support import (
    PostgresServer,
    RawPhase,
    load_average,
    machine_description,
    median,
    run_raw_phase,
    table,
)
from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.delegation import ActorRef
from ledger.domain.instants import format_instant
from ledger.settings import Settings
from ledger.signing.keyring import Keyring

BENCH_KEK = SecretStr("lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA")
AGENT = Actor(type="api_key", name="bench-agent", role="agent")
APPROVER = Actor(type="api_key", name="bench-approver", role="approver")
RESOURCE = "https://erp.example.com"
AUTHORITY = [
    {
        "type": "mission_resource_access",
        "resource": RESOURCE,
        "resource_match": "prefix",
        "actions": ["invoices.read", "invoices.pay"],
        "constraints": {"max_amount": {"amount": "1000.00", "currency": "USD"}},
    }
]


def progress(message: str) -> None:
    print(f"[bench.mandates] {message}", file=sys.stderr, flush=True)


@dataclass
class Issuer:
    """Issues Mandates under a supply of active Missions, ``per_mission`` each."""

    ledger: Ledger
    per_mission: int
    missions: list[str] = field(default_factory=list)
    issued_here: int = 0
    serial: int = 0

    def approve(self, count: int) -> None:
        now = self.ledger.clock.now()
        intent = {
            "goal": "benchmark mandates",
            "resources": [RESOURCE],
            "expires_at": format_instant(now + timedelta(days=3650)),
        }
        for _ in range(count):
            proposal = self.ledger.submit_proposal(
                actor=AGENT,
                client_id="bench-agent",
                instance_id=None,
                subject={"iss": "https://idp.example.com", "sub": "alice"},
                intent=intent,
                authorization_details=AUTHORITY,
            ).value
            mission = self.ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id)
            self.missions.append(mission.value.id)

    def issue(self) -> str:
        if self.issued_here >= self.per_mission:
            self.missions.pop(0)
            self.issued_here = 0
        if not self.missions:  # the phase ran faster than planned: approve one more here
            self.approve(1)
        self.serial += 1
        self.issued_here += 1
        mandate = self.ledger.issue_mandate(
            actor=AGENT,
            mission_id=self.missions[0],
            holder=ActorRef(client_id="bench-agent", instance_id=f"i-{self.serial}"),
            jkt=f"{self.serial:043d}",
            ttl_seconds=3600,
        ).value
        return self.ledger.mandate_token(mandate)


@dataclass(frozen=True)
class Phase:
    count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def issue_phase(issuer: Issuer, seconds: float, expected_rate: float, tokens: list[str]) -> Phase:
    """Approve enough Missions for the phase (untimed), then issue for ``seconds``."""
    needed = int(expected_rate * seconds * 1.5) + issuer.per_mission
    spare = len(issuer.missions) * issuer.per_mission - issuer.issued_here
    if spare < needed:
        issuer.approve((needed - spare) // issuer.per_mission + 1)
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        tokens.append(issuer.issue())
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return Phase(count, now - start)


def verify_phase(keyring: Keyring, ledger: Ledger, tokens: Sequence[str], seconds: float) -> Phase:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = ledger.clock.now()
    while True:
        _, payload = keyring.verify_compact(
            tokens[count % len(tokens)], algorithms=("ES256",), now=now
        )
        json.loads(payload)
        count += 1
        moment = time.perf_counter()
        if moment >= deadline:
            return Phase(count, moment - start)


@dataclass
class Result:
    backend: str
    server: str
    raw: list[RawPhase] = field(default_factory=list)
    issued: list[Phase] = field(default_factory=list)
    verified: list[Phase] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        raw = median([p.rate for p in self.raw])
        issued = median([p.rate for p in self.issued])
        verified = median([p.rate for p in self.verified])
        return {
            "raw_saves_per_s": raw,
            "issuances_per_s": issued,
            "verifications_per_s": verified,
            "issuance_ratio": issued / raw,
            "verification_ratio": verified / raw,
        }


def keyring_for(contestants: Contestants, settings: Settings) -> Keyring:
    keyring = Keyring.open(settings, contestants.ledger.database)
    keyring.ensure("ES256", contestants.ledger.clock.now())
    contestants.ledger.signer = keyring
    return keyring


def measure(
    contestants: Contestants, settings: Settings, *, seconds: float, rounds: int, per_mission: int
) -> Result:
    result = Result(backend=contestants.backend, server=contestants.server)
    keyring = keyring_for(contestants, settings)
    issuer = Issuer(contestants.ledger, per_mission)
    tokens: list[str] = []
    warmup = min(2.0, max(0.5, seconds / 5))
    progress(f"{contestants.backend}: warm-up ({warmup:.1f} s each)")
    run_raw_phase(contestants.raw, warmup)
    expected = issue_phase(issuer, warmup, 100.0, tokens).rate
    for index in range(rounds):
        order = ("raw", "ledger") if index % 2 == 0 else ("ledger", "raw")
        for who in order:
            if who == "raw":
                result.raw.append(run_raw_phase(contestants.raw, seconds))
            else:
                phase = issue_phase(issuer, seconds, expected, tokens)
                expected = phase.rate
                result.issued.append(phase)
                result.verified.append(verify_phase(keyring, contestants.ledger, tokens, seconds))
        progress(
            f"{contestants.backend}: round {index + 1}/{rounds}: raw "
            f"{result.raw[-1].rate:,.0f} saves/s, issuance {result.issued[-1].rate:,.0f}/s, "
            f"verification {result.verified[-1].rate:,.0f}/s"
        )
    return result


@contextmanager
def postgres() -> Iterator[tuple[Contestants, Settings]]:
    server = PostgresServer.from_env()
    with postgres_contestants(server, server.version()) as contestants:
        # The key ring reads and writes the signing_keys table through the Ledger's
        # database; the URL here only selects the PostgreSQL key store.
        yield contestants, Settings(database_url=server.admin_url, key_encryption_key=BENCH_KEK)


def render(result: Result, seconds: float) -> str:
    rows = [
        [
            str(i + 1),
            f"{raw.rate:,.0f}",
            f"{issued.rate:,.0f}",
            f"{verified.rate:,.0f}",
            f"{issued.rate / raw.rate:.3f}",
        ]
        for i, (raw, issued, verified) in enumerate(
            zip(result.raw, result.issued, result.verified, strict=True)
        )
    ]
    m = result.medians()
    rows.append(
        [
            "median",
            f"{m['raw_saves_per_s']:,.0f}",
            f"{m['issuances_per_s']:,.0f}",
            f"{m['verifications_per_s']:,.0f}",
            f"{m['issuance_ratio']:.3f}",
        ]
    )
    head = (
        f"== {result.server}: {len(result.raw)} rounds x {seconds:g} s, one thread; "
        "issuance = issue_mandate + ES256 token; verification = ES256 signature + claims"
    )
    body = table(["round", "raw saves/s", "issuances/s", "verifications/s", "issuance/raw"], rows)
    tail = (
        f"issuances/s : raw saves/s = {m['issuance_ratio']:.3f}; "
        f"verifications/s : raw saves/s = {m['verification_ratio']:.1f}"
    )
    return "\n".join([head, body, tail])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mandates", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-mission", type=int, default=50, help="Mandates per Mission")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args, _ = parser.parse_known_args(argv)  # `python -m bench` passes shared options
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_description()
    print(
        f"Mission Ledger: Mandate issuance and verification vs raw eventsourcing saves "
        f"({machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}; "
        f"load average {machine['load_average_at_start']} at start)"
    )
    summary: dict[str, Any] = {"machine": machine}
    with postgres() as (contestants, settings):
        result = measure(
            contestants,
            settings,
            seconds=args.seconds,
            rounds=args.rounds,
            per_mission=args.per_mission,
        )
    print()
    print(render(result, args.seconds))
    summary["postgres"] = result.medians()
    print(f"\nload average at end: {load_average()}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
