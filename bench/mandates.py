"""Mandate issuances and token verifications per second, against the raw ``eventsourcing``
save rate measured in the same run.

Subject: the Ledger opened as the service opens it (``migrate``, ``open_ledger``, the
keyring from ``Keyring.open`` with an active ``signing_alg`` key, ``ledger.signer`` and
``ledger.mandate_alg`` set as ``api.app.build_services`` sets them) on its own freshly
migrated database, one thread:

* **issuance**: ``issue_mandate`` (a root Mandate for a new agent instance with its own
  ``cnf.jkt``, a subset of the Mission's authority) followed by ``mandate_token`` (the
  compact JWS, signed by the keyring), i.e. what ``POST /v1/missions/{id}/mandates`` does;
  a Mission takes ``--per-mission`` (1,000) Mandates, then a new one is submitted and
  approved while the clock stops;
* **verification**: ``Keyring.verify_compact`` of tokens issued earlier in the run (a pool
  of ``--pool`` tokens, round robin): the signature check alone, never cached;
* **introspection**: the service's own introspection function
  (``api.routes.mandates._introspect``: signature, ``typ``, claims, Mandate read, issuer,
  validity against its Mission and instance), once with the ``TokenVerifier`` cache off
  (every token seen for the first time) and once with the service's cache, warmed (a PEP
  presenting a token again: only the ledger reads remain).

Baseline: ``RawApplication`` on its own fresh database saving one new trivial aggregate
per save (``run_raw_phase``): the "raw save rate" of ``bench.ledger``.

Rounds run every phase once, in forward order in odd rounds and reverse order in even
ones (ABC...CBA), so drift hits all of them. Headline figures are median/median ratios.

    python -m bench.mandates [--seconds 5] [--rounds 3] [--backend postgres] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from api.routes.mandates import _introspect
from api.tokens import ALGORITHMS, TokenVerifier
from bench._governance import (
    AGENT,
    APPROVER,
    RESOURCE,
    SUBJECT,
    OpTimes,
    authority_body,
    intent_body,
    postgres_contestants,
    sqlite_contestants,
)
from bench._governance import Contestants as GovernanceContestants
from bench._support import (
    PostgresServer,
    PostgresUnavailable,
    RawApplication,
    RawPhase,
    add_run_options,
    load_average,
    machine_description,
    median,
    run_raw_phase,
    table,
)
from ledger.application import Ledger
from ledger.domain.delegation import ActorRef
from ledger.domain.mandate_claims import MANDATE_TYP
from ledger.persistence.chain import verify_chain
from ledger.signing.keyring import Keyring

if TYPE_CHECKING:
    from api.services import Services

CLIENT_ID = "bench-agent"  # the Missions' agent (bench._governance submits as it)
DEFAULT_PER_MISSION = 1000  # issuances per Mission before the next one is used
TTL_SECONDS = 3600  # long enough for the token pool to stay valid during any run
DEFAULT_POOL = 512
# A strict subset of the Mission's authority (bench._governance.authority_body), so the
# subset check has work to do.
REQUESTED = [
    {"type": "mission_resource_access", "resource": RESOURCE, "actions": ["invoices.read"]}
]
# Events one submit + approve writes (not issuance events).
EVENTS_PER_MISSION = 3

SUBJECTS = ("raw", "issue", "verify", "introspect", "introspect_cached")

Progress = Callable[[str], None]


def progress_to_stderr(message: str) -> None:
    print(f"[bench.mandates] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the subjects


@dataclass(frozen=True)
class Phase:
    """``count`` calls in ``seconds`` of timed wall-clock time (``events`` for writes)."""

    count: int
    seconds: float
    events: int = 0
    ops: dict[str, OpTimes] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds


class MandateDriver:
    """Issues Mandates under rotating Missions, and verifies/introspects their tokens."""

    def __init__(
        self, ledger: Ledger, keyring: Keyring, *, pool_size: int, per_mission: int
    ) -> None:
        self.ledger = ledger
        self.keyring = keyring
        self.pool_size = pool_size
        self.per_mission = per_mission
        self.tokens: list[str] = []  # the verification pool: the first tokens issued
        self.mission_id: str | None = None
        self.issued_here = 0  # issuances under the current Mission
        self.issued = 0
        self.missions = 0
        self.salt = secrets.token_hex(8)
        self.first_sight = TokenVerifier(keyring, ledger.clock, cache_size=0)
        self.cached = TokenVerifier(keyring, ledger.clock)
        self._services: dict[str, Services] = {
            name: cast("Services", SimpleNamespace(clock=ledger.clock, tokens=v, ledger=ledger))
            for name, v in (("introspect", self.first_sight), ("introspect_cached", self.cached))
        }

    # ------------------------------------------------------------------ issuance

    def new_mission(self) -> None:
        """Submit and approve a Mission (outside the timed loops)."""
        now = self.ledger.clock.now()
        proposal = self.ledger.submit_proposal(
            actor=AGENT,
            client_id=CLIENT_ID,
            instance_id="bench-1",
            subject=SUBJECT,
            intent=intent_body(now),
            authorization_details=authority_body(),
        ).value
        mission = self.ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id).value
        if mission.state != "active":
            msg = f"Mission {mission.id} is {mission.state!r}, not active"
            raise RuntimeError(msg)
        self.mission_id = mission.id
        self.issued_here = 0
        self.missions += 1

    def _jkt(self, n: int) -> str:
        digest = hashlib.sha256(f"{self.salt}:{n}".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue_one(self, ops: dict[str, OpTimes]) -> str:
        """One issuance, signing included: the write, then the token."""
        assert self.mission_id is not None
        n = self.issued
        start = time.perf_counter()
        written = self.ledger.issue_mandate(
            actor=AGENT,
            mission_id=self.mission_id,
            holder=ActorRef(client_id=CLIENT_ID, instance_id=f"bench-{self.salt}-{n}"),
            jkt=self._jkt(n),
            authorization_details=REQUESTED,
            ttl_seconds=TTL_SECONDS,
        )
        signed = time.perf_counter()
        token = self.ledger.mandate_token(written.value)
        end = time.perf_counter()
        ops["issue_mandate"].add(signed - start)
        ops["mandate_token"].add(end - signed)
        if written.position is None:
            msg = "issue_mandate wrote nothing: the benchmark would be timing a no-op"
            raise RuntimeError(msg)
        self.issued += 1
        self.issued_here += 1
        if len(self.tokens) < self.pool_size:
            self.tokens.append(token)
        return token

    def run_issue(self, seconds: float) -> Phase:
        ops = {"issue_mandate": OpTimes(), "mandate_token": OpTimes()}
        missions_before = self.missions
        head = self.ledger.head_position()
        count = 0
        timed = 0.0
        start = time.perf_counter()
        while True:
            if self.mission_id is None or self.issued_here >= self.per_mission:
                timed += time.perf_counter() - start  # stop the clock for the new Mission
                self.new_mission()
                start = time.perf_counter()
            self.issue_one(ops)
            count += 1
            if timed + (time.perf_counter() - start) >= seconds:
                break
        timed += time.perf_counter() - start
        created = self.missions - missions_before
        events = self.ledger.head_position() - head - EVENTS_PER_MISSION * created
        return Phase(count=count, seconds=timed, events=events, ops=ops)

    def fill_pool(self) -> None:
        """Issue (untimed) until the verification pool is full."""
        scratch = {"issue_mandate": OpTimes(), "mandate_token": OpTimes()}
        while len(self.tokens) < self.pool_size:
            if self.mission_id is None or self.issued_here >= self.per_mission:
                self.new_mission()
            self.issue_one(scratch)

    # ------------------------------------------------------------------ verification

    def run_verify(self, seconds: float) -> Phase:
        """The signature check alone (``Keyring.verify_compact``), never cached."""
        tokens, keyring, clock = self.tokens, self.keyring, self.ledger.clock
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            header, payload = keyring.verify_compact(
                tokens[count % len(tokens)], algorithms=ALGORITHMS, now=clock.now()
            )
            if header.get("typ") != MANDATE_TYP or not payload:
                msg = "a pool token did not verify as a Mandate"
                raise RuntimeError(msg)
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return Phase(count=count, seconds=now - start)

    def warm_cache(self) -> None:
        for token in self.tokens:
            if self.cached.verify(token, typ=MANDATE_TYP, now=self.ledger.clock.now()) is None:
                msg = "a pool token did not verify as a Mandate"
                raise RuntimeError(msg)

    def run_introspect(self, seconds: float, *, cached: bool) -> Phase:
        """The service's introspection of pool tokens (all of them active)."""
        services = self._services["introspect_cached" if cached else "introspect"]
        tokens = self.tokens
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            answer = _introspect(services, tokens[count % len(tokens)])
            if answer.get("active") is not True:
                msg = f"introspection answered {answer!r} for an active Mandate"
                raise RuntimeError(msg)
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                return Phase(count=count, seconds=now - start)


# ---------------------------------------------------------------------- opening both sides


@dataclass
class Contestants:
    """bench.ledger's baseline and subject, the Ledger wired with its keyring."""

    backend: str
    server: str
    raw: RawApplication
    ledger: Ledger
    keyring: Keyring
    settings: dict[str, str]


@contextmanager
def signing(base: AbstractContextManager[GovernanceContestants]) -> Iterator[Contestants]:
    """Wire ``base``'s Ledger with a keyring as ``api.app.build_services`` wires them."""
    with base as contestants:
        settings = contestants.ledger_settings
        ledger = contestants.ledger
        keyring = Keyring.open(settings, ledger.database)
        keyring.ensure(settings.signing_alg, ledger.clock.now())
        ledger.signer = keyring
        ledger.mandate_alg = settings.signing_alg
        yield Contestants(
            backend=contestants.backend,
            server=contestants.server,
            raw=contestants.raw,
            ledger=ledger,
            keyring=keyring,
            settings={**contestants.settings, "signing_alg": settings.signing_alg},
        )


# ---------------------------------------------------------------------- measuring


@dataclass
class BackendResult:
    backend: str
    server: str
    settings: dict[str, str]
    pool: int = 0
    per_mission: int = 0
    phases: dict[str, list[Phase]] = field(default_factory=lambda: {s: [] for s in SUBJECTS})
    missions: int = 0
    issued: int = 0
    chain_checked: int = 0
    chain_intact: bool = False

    def rates(self, subject: str) -> list[float]:
        return [p.rate for p in self.phases[subject]]

    def median(self, subject: str) -> float:
        return median(self.rates(subject))

    def ratio(self, subject: str) -> float:
        return self.median(subject) / self.median("raw")

    def round_ratios(self, subject: str) -> list[float]:
        return [s / r for r, s in zip(self.rates("raw"), self.rates(subject), strict=True)]

    def issue_ops(self) -> dict[str, OpTimes]:
        pooled = {"issue_mandate": OpTimes(), "mandate_token": OpTimes()}
        for phase in self.phases["issue"]:
            for name, times in phase.ops.items():
                pooled[name].merge(times)
        return pooled

    @property
    def events_per_issuance(self) -> float:
        issues = self.phases["issue"]
        return sum(p.events for p in issues) / max(1, sum(p.count for p in issues))


def measure(
    contestants: Contestants,
    *,
    seconds: float,
    rounds: int,
    warmup: float,
    pool: int,
    per_mission: int,
    progress: Progress,
) -> BackendResult:
    """Warm every phase up, then ``rounds`` rounds (ABC...CBA), then verify the chain."""
    result = BackendResult(
        backend=contestants.backend,
        server=contestants.server,
        settings=contestants.settings,
        per_mission=per_mission,
    )
    driver = MandateDriver(
        contestants.ledger, contestants.keyring, pool_size=pool, per_mission=per_mission
    )
    runners: dict[str, Callable[[float], Phase | RawPhase]] = {
        "raw": lambda s: run_raw_phase(contestants.raw, s),
        "issue": driver.run_issue,
        "verify": driver.run_verify,
        "introspect": lambda s: driver.run_introspect(s, cached=False),
        "introspect_cached": lambda s: driver.run_introspect(s, cached=True),
    }
    progress(f"{contestants.backend}: warm-up ({warmup:.1f} s each)")
    runners["raw"](warmup)
    runners["issue"](warmup)
    driver.fill_pool()
    driver.warm_cache()
    result.pool = len(driver.tokens)
    for subject in SUBJECTS[2:]:
        runners[subject](warmup)
    for index in range(rounds):
        order = SUBJECTS if index % 2 == 0 else tuple(reversed(SUBJECTS))
        for subject in order:
            phase = runners[subject](seconds)
            if isinstance(phase, RawPhase):
                phase = Phase(count=phase.saves, seconds=phase.seconds)
            result.phases[subject].append(phase)
        last = {s: result.phases[s][-1].rate for s in SUBJECTS}
        progress(
            f"{contestants.backend}: round {index + 1}/{rounds}: raw {last['raw']:,.0f} saves/s, "
            f"issuance {last['issue']:,.0f}/s, verification {last['verify']:,.0f}/s, "
            f"introspection {last['introspect']:,.0f}/s "
            f"({last['introspect_cached']:,.0f}/s signature cached)"
        )
    result.missions = driver.missions
    result.issued = driver.issued
    progress(f"{contestants.backend}: verifying the hash chain")
    report = verify_chain(contestants.ledger.event_log.chain_rows())
    result.chain_checked = report.checked
    result.chain_intact = report.intact
    return result


# ---------------------------------------------------------------------- reporting

LABELS = {
    "raw": "raw saves/s",
    "issue": "issuances/s",
    "verify": "verifications/s",
    "introspect": "introspections/s",
    "introspect_cached": "introspections/s (sig cached)",
}


def render(result: BackendResult, *, seconds: float, acceptance: bool) -> str:
    lines = [
        f"== {result.server}: {len(result.phases['raw'])} rounds x {seconds:g} s per phase, "
        "one thread",
        "   Ledger settings (the raw baseline shares the POSTGRES_*/SQLITE_* ones): "
        + ", ".join(f"{k}={v}" for k, v in result.settings.items()),
        f"   verification pool: {result.pool} tokens issued in this run, round robin; "
        f"Missions rotate every {result.per_mission:,} issuances",
        "",
    ]
    rows = []
    for i in range(len(result.phases["raw"])):
        raw = result.phases["raw"][i].rate
        cells = [str(i + 1)] + [f"{result.phases[s][i].rate:,.0f}" for s in SUBJECTS]
        cells += [
            f"{result.phases['issue'][i].rate / raw:.3f}",
            f"{result.phases['verify'][i].rate / raw:.2f}",
        ]
        rows.append(cells)
    rows.append(
        ["median"]
        + [f"{result.median(s):,.0f}" for s in SUBJECTS]
        + [f"{result.ratio('issue'):.3f}", f"{result.ratio('verify'):.2f}"]
    )
    headers = ["round", *(LABELS[s] for s in SUBJECTS), "issue/raw", "verify/raw"]
    lines.append(table(headers, rows))
    lines.append(
        "(median row ratios are median/median, the headline figures; medians of the per-round "
        f"ratios: issue/raw {median(result.round_ratios('issue')):.3f}, verify/raw "
        f"{median(result.round_ratios('verify')):.2f})"
    )
    lines.append("")
    ops = result.issue_ops()
    total = OpTimes()
    for times in ops.values():
        total.merge(times)
    op_rows = [
        [name, f"{t.count:,}", f"{t.mean_ms:.3f}", f"{1000 / t.mean_ms:,.0f}"]
        for name, t in [
            ("issue_mandate (write)", ops["issue_mandate"]),
            ("mandate_token (sign)", ops["mandate_token"]),
        ]
    ]
    mean_total = 1000 * total.seconds / max(1, ops["issue_mandate"].count)
    op_rows.append(
        [
            "issuance (both)",
            f"{ops['issue_mandate'].count:,}",
            f"{mean_total:.3f}",
            f"{1000 / mean_total:,.0f}",
        ]
    )
    lines.append(table(["issuance step (all rounds)", "calls", "mean ms", "per s"], op_rows))
    scope = "" if acceptance else " (for information; the acceptance figures are PostgreSQL's)"
    lines += [
        "",
        f"events per issuance: {result.events_per_issuance:.2f} "
        f"({result.issued:,} Mandates issued under {result.missions} Missions in all)",
        f"ratio issuance/raw      (median/median) = {result.median('issue'):,.0f} / "
        f"{result.median('raw'):,.0f} = {result.ratio('issue'):.3f}{scope}",
        f"ratio verification/raw  (median/median) = {result.median('verify'):,.0f} / "
        f"{result.median('raw'):,.0f} = {result.ratio('verify'):.2f}{scope}",
        f"ratio introspection/raw (median/median) = {result.median('introspect'):,.0f} / "
        f"{result.median('raw'):,.0f} = {result.ratio('introspect'):.2f} "
        f"(signature cached: {result.ratio('introspect_cached'):.2f})",
        f"hash chain: {result.chain_checked:,} events verified, "
        + ("intact" if result.chain_intact else "BROKEN"),
    ]
    return "\n".join(lines)


def summary(result: BackendResult) -> dict[str, Any]:
    ops = result.issue_ops()
    return {
        "server": result.server,
        "settings": result.settings,
        "verification_pool": result.pool,
        "missions_rotate_every": result.per_mission,
        **{
            f"{subject}_per_s": {
                "rounds": [round(r, 1) for r in result.rates(subject)],
                "median": round(result.median(subject), 1),
            }
            for subject in SUBJECTS
        },
        "issuance_steps": {
            name: {"calls": t.count, "mean_ms": round(t.mean_ms, 4)} for name, t in ops.items()
        },
        "events_per_issuance": round(result.events_per_issuance, 3),
        "ratios": {
            subject: round(result.ratio(subject), 4) for subject in SUBJECTS if subject != "raw"
        },
        "round_ratios": {
            subject: [round(r, 4) for r in result.round_ratios(subject)]
            for subject in SUBJECTS
            if subject != "raw"
        },
        "missions": result.missions,
        "mandates_issued": result.issued,
        "chain": {"events_verified": result.chain_checked, "intact": result.chain_intact},
    }


# ---------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mandates",
        description="Mandate issuances/s (signing included) and token verifications/s vs the "
        "raw eventsourcing save rate, measured in the same run.",
    )
    add_run_options(parser, seconds=5.0, rounds_help="interleaved rounds", backend="postgres")
    parser.add_argument(
        "--pool", type=int, default=DEFAULT_POOL, help="tokens in the verification pool"
    )
    parser.add_argument(
        "--per-mission",
        type=int,
        default=DEFAULT_PER_MISSION,
        help="issuances under one Mission before the next one is used",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or min(args.rounds, args.pool, args.per_mission) < 1:
        parser.error("--seconds must be positive; --rounds, --pool, --per-mission at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(2.0, max(0.5, args.seconds / 5))
    machine = machine_description()
    results: list[BackendResult] = []
    if args.backend in {"postgres", "both"}:
        server = PostgresServer.from_env()
        try:
            version = server.version()
        except PostgresUnavailable as error:
            print(f"bench.mandates: {error}", file=sys.stderr)
            return 2
        backends = [postgres_contestants(server, version)]
    else:
        backends = []
    if args.backend in {"sqlite", "both"}:
        backends.append(sqlite_contestants(args.sqlite_dir))
    for backend in backends:
        with signing(backend) as contestants:
            results.append(
                measure(
                    contestants,
                    seconds=args.seconds,
                    rounds=args.rounds,
                    warmup=warmup,
                    pool=args.pool,
                    per_mission=args.per_mission,
                    progress=progress_to_stderr,
                )
            )

    machine["load_average_at_end"] = load_average()
    print(
        f"Mission Ledger: Mandate issuance and token verification vs raw eventsourcing saves "
        f"({machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}; "
        f"load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end)"
    )
    for result in results:
        print()
        print(render(result, seconds=args.seconds, acceptance=result.backend == "postgres"))
    if args.json:
        document: dict[str, Any] = {
            "benchmark": "mandates",
            "machine": machine,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "backends": {r.backend: summary(r) for r in results},
        }
        print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
