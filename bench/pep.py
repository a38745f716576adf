"""The PEP toolkit (clients/python): middleware overhead, and revoke → local refusal.

Run: ``python -m bench.pep`` (``--help`` for options). Embedded SQLite store, one real
``mission-ledger serve`` subprocess; the PEP side runs in this process's event loop.

1. **Middleware overhead.** A trivial ASGI app called directly (an in-process driver: no
   sockets, no HTTP parsing on the PEP side), bare against the same app wrapped in
   ``MissionLedgerMiddleware`` with a ``MandateGuard`` (local checks: ES256 signature
   through the JWKS, issuer, expiry, key binding, revocation set) and an
   ``AsyncPdpClient`` asking the server for every request (``POST
   /access/v1/evaluation``, a permit). Two more variants split the cost: the guard with a
   stub PDP that permits without a round trip, and the PDP client without the guard.
   One request at a time, interleaved rounds (the order reversed every other round).
   Prints requests/s of each, the ratio to bare, and the latency the middleware adds
   (variant - bare at p50 and at p99).
2. **Revoke → local refusal.** N middleware instances (asyncio tasks in this process),
   each with its own ``MandateGuard`` and ``SignalSubscriber`` on its own SSF stream
   (SSE). Each trial issues a fresh Mandate, revokes it over the API (``POST
   /v1/mandates/{id}/revoke``, async, in the same loop) and records, per instance, the
   time from sending the revoke until that instance's guard holds the revocation (from
   then on ``check`` refuses it). The revoke is sent from a worker thread (its own
   connection), so its answer is timed when it arrives, not when this busy event loop
   gets round to it. After each trial every instance's middleware is asked once with the
   revoked Mandate and must answer 403 ``mandate_revoked`` locally. Prints p50/p99 over
   instances x revocations, the last instance per revocation, the revoke request's own
   round trip, how many instances held the revocation before the revoke answered, and
   what the server's bounded wait for its SSE subscribers did (``/metrics``). This part
   runs twice, on two fresh servers: with the default ``SIGNAL_WAIT_MS`` (the revoke
   answers once the server has written its SETs to the subscribers' connections) and with
   ``SIGNAL_WAIT_MS=0`` (it answers at once: the same-run baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from joserfc.jwk import ECKey
from mission_ledger_pep import (
    AsyncPdpClient,
    Decision,
    MandateGuard,
    MissionLedgerMiddleware,
    SignalSubscriber,
)
from prometheus_client.parser import text_string_to_metric_families

from bench._load import percentile
from bench._support import load_average, machine_description, median, table
from bench.evaluate import Server
from ledger.clock import SystemClock
from ledger.domain.actors import Actor
from ledger.domain.instants import format_instant
from ledger.domain.roles import Role
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.keyring import Keyring

RESOURCE = "https://erp.example.com"
CLIENT_ID = "bench-agent"
INSTANCE = "i-1"
SSE_DELIVERY = "urn:mission-ledger:delivery:sse"
ROLES = (Role.AGENT, Role.APPROVER, Role.OPERATOR, Role.PEP)
T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the service


def seed_keys(settings: Settings) -> dict[str, str]:
    """A signing key and one API key per role in a fresh embedded store."""
    clock = SystemClock()
    ledger = open_ledger(settings, clock=clock)
    try:
        Keyring.open(settings, ledger.database).ensure("ES256", clock.now())
        cli = Actor(type="cli", name="bench")
        return {
            str(role): ledger.issue_api_key(name=f"bench-{role}", role=role, actor=cli).secret
            for role in ROLES
        }
    finally:
        ledger.close()


class Api:
    """The server's HTTP API, as the agent, approver, operator and PEP use it."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys
        self.http = httpx.Client(base_url=url, timeout=30.0)
        self.holder = ECKey.generate_key("P-256")
        self.jkt = self.holder.thumbprint()
        metadata = self.http.get("/.well-known/mission-authority-server").json()
        self.jwks_uri, self.issuer = str(metadata["jwks_uri"]), str(metadata["issuer"])
        expires = format_instant(SystemClock().now() + timedelta(days=30))
        proposal = self.post(
            "agent",
            "/v1/proposals",
            {
                "intent": {"goal": "bench.pep", "resources": [RESOURCE], "expires_at": expires},
                "authorization_details": [
                    {
                        "type": "mission_resource_access",
                        "resource": RESOURCE,
                        "resource_match": "prefix",
                        "actions": ["invoices.read"],
                    }
                ],
                "subject": {"iss": "https://idp.example.com", "sub": "alice"},
                "client_id": CLIENT_ID,
            },
        )
        approve = f"/v1/proposals/{proposal['submission_id']}/approve"
        self.mission = str(self.post("approver", approve, {})["id"])

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.keys[role]}

    def post(self, role: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body, headers=self.auth(role))
        if response.status_code not in (200, 201, 202):
            msg = f"POST {path} answered {response.status_code}: {response.text}"
            raise RuntimeError(msg)
        return dict(response.json())

    def mandate(self) -> tuple[str, str]:
        """A fresh Mandate for (``CLIENT_ID``, ``INSTANCE``) bound to the holder: (id, token)."""
        body = {
            "actor": {"client_id": CLIENT_ID, "instance_id": INSTANCE},
            "cnf": {"jkt": self.jkt},
        }
        issued = self.post("agent", f"/v1/missions/{self.mission}/mandates", body)
        return str(issued["mandate_id"]), str(issued["token"])

    def revoke(self, mandate_id: str) -> tuple[float, float]:
        """Revoke as the operator: (``perf_counter`` when sent, when the answer was read)."""
        sent = time.perf_counter()
        response = self.http.post(
            f"/v1/mandates/{mandate_id}/revoke",
            json={"reason": "bench.pep"},
            headers=self.auth("operator"),
        )
        answered = time.perf_counter()
        if response.status_code != 200:
            msg = f"revoke answered {response.status_code}: {response.text}"
            raise RuntimeError(msg)
        return sent, answered

    def signal_waits(self) -> dict[str, float]:
        """The server's counters of its bounded wait for SSE subscribers: each outcome, and
        the histogram's ``count`` and ``sum`` (seconds)."""
        response = self.http.get("/metrics", headers=self.auth("operator"))
        response.raise_for_status()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name == "mission_ledger_signal_waits_total":
                    out[sample.labels["outcome"]] = sample.value
                elif sample.name == "mission_ledger_signal_wait_seconds_count":
                    out["count"] = sample.value
                elif sample.name == "mission_ledger_signal_wait_seconds_sum":
                    out["sum"] = sample.value
        return out

    def stream(self) -> str:
        body = {
            "delivery": {"method": SSE_DELIVERY},
            "description": "bench.pep",
            "resources": [RESOURCE],
        }
        return str(self.post("pep", "/ssf/streams", body)["stream_id"])

    def close(self) -> None:
        self.http.close()


# ---------------------------------------------------------------------- the PEP side


async def upstream(_scope: Scope, _receive: Any, send: Any) -> None:
    """The protected app: a constant JSON answer."""
    body = b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def mapper(scope: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """The AuthZEN request of a ``GET /invoices/…`` (as in ``examples/gateway.py``)."""
    return {
        "subject": {
            "type": "agent",
            "id": headers.get("x-agent-id", ""),
            "properties": {"instance_id": headers.get("x-agent-instance", "")},
        },
        "action": {"name": "invoices.read"},
        "resource": {"type": "api", "id": RESOURCE + scope["path"]},
        "context": {
            "mandate": headers.get("x-mandate", ""),
            "proof": {"jkt": headers.get("x-proof-jkt", "")},
        },
    }


def scope_for(token: str, jkt: str) -> Scope:
    headers = {
        "x-mandate": token,
        "x-agent-id": CLIENT_ID,
        "x-agent-instance": INSTANCE,
        "x-proof-jkt": jkt,
    }
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/invoices/7",
        "raw_path": b"/invoices/7",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway", 80),
    }


async def call(app: ASGIApp, scope: Scope) -> tuple[int, bytes]:
    """One request through ``app``, in process: (status, body)."""
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, b"".join(chunks)


@dataclass
class Phase:
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_phase(app: ASGIApp, scope: Scope, seconds: float) -> Phase:
    phase = Phase()
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        before = time.perf_counter()
        status, body = await call(app, scope)
        after = time.perf_counter()
        if status != 200:
            msg = f"the benchmark request was not let through: {status} {body!r}"
            raise RuntimeError(msg)
        phase.latencies_ms.append((after - before) * 1000)
        phase.requests += 1
        if after >= deadline:
            phase.seconds = after - started
            return phase


class PermittingPdp(AsyncPdpClient):
    """A PDP that permits without a round trip: isolates what the middleware and its
    guard cost locally."""

    async def evaluate(
        self, request: Mapping[str, Any], *, min_position: int | None = None
    ) -> Decision:
        del min_position  # the stub has no read models to wait for
        return Decision(allowed=True, context={}, request=request)


#: The variants timed in the overhead part, in their order within a round.
VARIANTS = ("bare", "guard", "pdp", "wrapped")


async def measure_overhead(api: Api, *, seconds: float, rounds: int) -> dict[str, Any]:
    guard = MandateGuard(api.jwks_uri, issuer=api.issuer)
    pdp = AsyncPdpClient(api.url, api.keys["pep"], timeout=5.0)
    stub = PermittingPdp(api.url)
    apps: dict[str, ASGIApp] = {
        "bare": upstream,
        "guard": MissionLedgerMiddleware(upstream, pdp=stub, mapper=mapper, guard=guard),
        "pdp": MissionLedgerMiddleware(upstream, pdp=pdp, mapper=mapper),
        "wrapped": MissionLedgerMiddleware(upstream, pdp=pdp, mapper=mapper, guard=guard),
    }
    _, token = api.mandate()
    scope = scope_for(token, api.jkt)
    runs: dict[str, list[Phase]] = {name: [] for name in VARIANTS}
    try:
        progress("  overhead: warming up")
        for app in apps.values():
            await run_phase(app, scope, min(1.0, seconds / 3))
        for round_no in range(rounds):
            order = VARIANTS if round_no % 2 == 0 else tuple(reversed(VARIANTS))
            for name in order:
                runs[name].append(await run_phase(apps[name], scope, seconds))
            rates = ", ".join(f"{name} {runs[name][-1].rps:,.0f}/s" for name in VARIANTS)
            progress(f"  overhead round {round_no + 1}/{rounds}: {rates}")
    finally:
        await pdp.aclose()
        await stub.aclose()
        guard.close()
    out: dict[str, Any] = {"variants": {}}
    bare = [x for run in runs["bare"] for x in run.latencies_ms]
    for name in VARIANTS:
        latencies = [x for run in runs[name] for x in run.latencies_ms]
        out["variants"][name] = {
            "rps_rounds": [run.rps for run in runs[name]],
            "rps": median([run.rps for run in runs[name]]),
            "ratio_to_bare_rounds": [
                run.rps / base.rps for run, base in zip(runs[name], runs["bare"], strict=True)
            ],
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "added_p50_ms": percentile(latencies, 50) - percentile(bare, 50),
            "added_p99_ms": percentile(latencies, 99) - percentile(bare, 99),
        }
    bare_rps = out["variants"]["bare"]["rps"]
    for row in out["variants"].values():
        row["ratio_to_bare"] = row["rps"] / bare_rps if bare_rps else 0.0
    return out


@dataclass
class Instance:
    """One middleware instance: its guard, its subscriber (a task), its middleware."""

    guard: MandateGuard
    subscriber: SignalSubscriber
    app: MissionLedgerMiddleware
    held_at: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


def build_instance(api: Api, pdp: AsyncPdpClient, stream_id: str, state: Path) -> Instance:
    guard = MandateGuard(api.jwks_uri, issuer=api.issuer)
    held_at: dict[str, float] = {}

    def revoked(claims: dict[str, Any]) -> None:
        # The subscriber put the Mandate into the guard's revocation set just before this
        # hook runs: from now on this instance refuses it locally.
        held_at[str(claims["sub_id"]["session"]["id"])] = time.perf_counter()

    subscriber = SignalSubscriber(
        api.url,
        api.keys["pep"],
        stream_id,
        cursor_path=state / f"cursor-{stream_id}",
        guard=guard,
        issuer=api.issuer,
        jwks_url=api.jwks_uri,
        on_mandate_revoked=revoked,
        backoff_initial=0.1,
    )
    app = MissionLedgerMiddleware(upstream, pdp=pdp, mapper=mapper, guard=guard)
    return Instance(guard, subscriber, app, held_at)


async def measure_revocation(
    api: Api, state: Path, *, instances: int, revocations: int, timeout: float
) -> dict[str, Any]:
    progress(f"  revocation: creating {instances} SSF streams")
    streams = [api.stream() for _ in range(instances)]
    pdp = AsyncPdpClient(api.url, api.keys["pep"], timeout=5.0)
    fleet = [build_instance(api, pdp, stream_id, state) for stream_id in streams]
    _, warm_token = api.mandate()
    kid = str(json.loads(_b64(warm_token.split(".")[0]))["kid"])
    for instance in fleet:
        # fetch the JWKS of the guard and of the subscriber once, outside the timed part
        instance.guard.check(warm_token, api.jkt)
        assert instance.subscriber.jwks is not None
        instance.subscriber.jwks.key(kid)
        instance.task = asyncio.create_task(instance.subscriber.run())
    try:
        deadline = time.monotonic() + 60
        while not all(i.subscriber.wait_connected(0) for i in fleet):
            if time.monotonic() > deadline:
                msg = "not every subscriber connected within 60 s"
                raise RuntimeError(msg)
            await asyncio.sleep(0.05)
        progress(f"  revocation: {instances} subscribers connected")
        lags_ms: list[float] = []
        last_ms: list[float] = []
        answer_ms: list[float] = []
        missing = 0
        before_answer = 0
        first_before_answer = 0
        waits_before = api.signal_waits()
        for trial in range(revocations):
            mandate_id, token = api.mandate()
            await asyncio.sleep(0.2)  # let the issuance's own signals (if any) pass
            sent, answered = await asyncio.to_thread(api.revoke, mandate_id)
            answer_ms.append((answered - sent) * 1000)
            until = time.monotonic() + timeout
            while not all(mandate_id in i.held_at for i in fleet) and time.monotonic() < until:
                await asyncio.sleep(0.005)
            held = [i.held_at[mandate_id] for i in fleet if mandate_id in i.held_at]
            missing += instances - len(held)
            trial_lags = [(at - sent) * 1000 for at in held]
            before_answer += sum(1 for at in held if at < answered)
            first_before_answer += min(held, default=answered) < answered
            lags_ms += trial_lags
            last_ms.append(max(trial_lags, default=float("nan")))
            scope = scope_for(token, api.jkt)
            for instance in fleet:
                if mandate_id not in instance.held_at:
                    continue
                status, body = await call(instance.app, scope)
                if status != 403 or b"mandate_revoked" not in body:
                    msg = f"an instance did not refuse the revoked Mandate: {status} {body!r}"
                    raise RuntimeError(msg)
            progress(
                f"  revocation {trial + 1}/{revocations}: answer {answer_ms[-1]:.1f} ms, "
                f"instances p50 {percentile(trial_lags, 50):.1f} ms, last {last_ms[-1]:.1f} ms"
            )
        rejected = sum(i.subscriber.rejected_total for i in fleet)
        waits_after = api.signal_waits()
    finally:
        for instance in fleet:
            if instance.task is not None:
                instance.task.cancel()
        for instance in fleet:
            if instance.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await instance.task
            instance.guard.close()
        await pdp.aclose()
    return {
        "instances": instances,
        "revocations": revocations,
        "refusal_p50_ms": percentile(lags_ms, 50),
        "refusal_p99_ms": percentile(lags_ms, 99),
        "refusal_max_ms": max(lags_ms, default=float("nan")),
        "last_instance_p50_ms": percentile(last_ms, 50),
        "last_instance_p99_ms": percentile(last_ms, 99),
        "revoke_answer_p50_ms": percentile(answer_ms, 50),
        "revoke_answer_p99_ms": percentile(answer_ms, 99),
        "held_before_answer": before_answer,
        "first_before_answer": first_before_answer,
        "server_waits": {
            key: waits_after.get(key, 0.0) - waits_before.get(key, 0.0)
            for key in sorted(waits_before.keys() | waits_after.keys())
        },
        "missing": missing,
        "rejected_sets": rejected,
    }


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ---------------------------------------------------------------------- report


#: The revocation part runs against two servers: the default bounded wait for the SSE
#: subscribers before a revoke answers, and the same with it off (the same-run baseline).
CONFIGURATIONS = {"wait": None, "no_wait": {"MISSION_LEDGER_SIGNAL_WAIT_MS": "0"}}
CONFIGURATION_LABELS = {"wait": "wait on", "no_wait": "wait off"}


def render(overhead: dict[str, Any], revocations: dict[str, dict[str, Any]]) -> str:
    v = overhead["variants"]
    labels = {
        "bare": "bare app",
        "guard": "middleware + MandateGuard, PDP stubbed (local cost)",
        "pdp": "middleware + AsyncPdpClient, no guard",
        "wrapped": "middleware + MandateGuard + AsyncPdpClient",
    }
    rows = [
        [
            labels[name],
            " / ".join(f"{x:,.0f}" for x in v[name]["rps_rounds"]),
            f"{v[name]['rps']:,.0f}",
            f"{v[name]['ratio_to_bare']:.4f}",
            f"{v[name]['p50_ms']:.3f}",
            f"{v[name]['p99_ms']:.3f}",
            f"{v[name]['added_p50_ms']:.3f}",
            f"{v[name]['added_p99_ms']:.3f}",
        ]
        for name in VARIANTS
    ]
    headers = ["", "req/s per round", "median", "x bare", "p50 ms", "p99 ms", "added p50", "p99"]
    first = next(iter(revocations.values()))
    figures = [
        ("send revoke → instance refuses (all instances x revocations)", "refusal"),
        ("send revoke → last instance refuses (per revocation)", "last_instance"),
        ("revoke request round trip", "revoke_answer"),
    ]
    lines = [
        "",
        "1. Middleware overhead (in-process ASGI driver, one request at a time, the PDP is "
        "the server subprocess):",
        "",
        table(headers, rows),
        "",
        f"headline: wrapped/bare = {v['wrapped']['ratio_to_bare']:.4f}; the middleware adds "
        f"p50 {v['wrapped']['added_p50_ms']:.3f} ms, p99 {v['wrapped']['added_p99_ms']:.3f} ms "
        "per request",
        "",
        f"2. Revoke → local refusal, {first['instances']} middleware instances (own guard + SSE "
        f"subscriber each), {first['revocations']} revocations per server: wait on = the "
        "default SIGNAL_WAIT_MS (the revoke answers once the server wrote its SETs to every "
        "subscriber's connection, within the bound), wait off = SIGNAL_WAIT_MS=0 (baseline):",
        "",
        table(
            [""]
            + [
                f"{CONFIGURATION_LABELS[name]} {q}"
                for name in revocations
                for q in ("p50 ms", "p99 ms")
            ],
            [
                [label]
                + [
                    f"{r[f'{key}_{q}_ms']:.1f}"
                    for r in revocations.values()
                    for q in ("p50", "p99")
                ]
                for label, key in figures
            ],
        ),
        "",
    ]
    for name, r in revocations.items():
        waits = r["server_waits"]
        outcomes = ", ".join(
            f"{key} {value:.0f}" for key, value in waits.items() if key not in ("count", "sum")
        )
        mean = 1000 * waits.get("sum", 0.0) / waits["count"] if waits.get("count") else 0.0
        lines.append(
            f"{CONFIGURATION_LABELS[name]}: revocation set held before the revoke returned "
            f"{r['held_before_answer']}/{r['instances'] * r['revocations']} "
            f"(first instance per revocation {r['first_before_answer']}/{r['revocations']}); "
            f"max {r['refusal_max_ms']:.1f} ms; missing {r['missing']}; SETs rejected "
            f"{r['rejected_sets']}; the server's waits: {outcomes or 'none'}, mean {mean:.1f} ms"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pep", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each overhead phase")
    parser.add_argument(
        "--rounds", type=int, default=4, help="overhead rounds (order reversed every other round)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    parser.add_argument("--instances", type=int, default=100, help="middleware instances")
    parser.add_argument("--revocations", type=int, default=10, help="revocations (trials)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for every instance per trial"
    )
    return parser.parse_args(argv)


def run_server(
    root: Path,
    extra_env: Mapping[str, str] | None,
    work: Callable[[Api, Path], Coroutine[Any, Any, T]],
) -> T:
    """A fresh embedded store under ``root``, a server on it, ``work`` against it."""
    settings = Settings(data_dir=root)
    keys = seed_keys(settings)
    server = Server(settings, extra_env)
    api = Api(f"http://127.0.0.1:{server.port}", keys)
    try:
        state = root / "pep"
        state.mkdir()
        return asyncio.run(work(api, state))
    finally:
        api.close()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    machine = machine_description()
    progress(f"bench.pep: load average {machine['load_average_at_start']}")

    async def overhead_and_revocation(api: Api, state: Path) -> dict[str, Any]:
        overhead = await measure_overhead(api, seconds=args.seconds, rounds=args.rounds)
        return {"overhead": overhead, "revocation": await revocation(api, state)}

    async def revocation(api: Api, state: Path) -> dict[str, Any]:
        return await measure_revocation(
            api, state, instances=args.instances, revocations=args.revocations, timeout=args.timeout
        )

    revocations: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ml_bench_pep_") as tmp:
        progress(f"server: {CONFIGURATION_LABELS['wait']}")
        first = run_server(Path(tmp) / "wait", CONFIGURATIONS["wait"], overhead_and_revocation)
        revocations["wait"] = first["revocation"]
        progress(f"server: {CONFIGURATION_LABELS['no_wait']}")
        revocations["no_wait"] = run_server(
            Path(tmp) / "no_wait", CONFIGURATIONS["no_wait"], revocation
        )
    machine["load_average_at_end"] = load_average()
    print(
        f"bench.pep {machine['date']}, load average {machine['load_average_at_start']} → "
        f"{machine['load_average_at_end']}, {os.cpu_count()} CPUs, Python {machine['python']}"
    )
    print(render(first["overhead"], revocations))
    if args.json:
        print(
            json.dumps(
                {"machine": machine, "overhead": first["overhead"], "revocation": revocations},
                indent=2,
            )
        )
    failed = any(r["missing"] or r["rejected_sets"] for r in revocations.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
