"""Decision throughput and latency, index memory, and index bootstrap time.

Run: ``python -m bench.evaluate`` (``--help`` for options).

1. Seeds an embedded store with N active Mandates (default 10,000: 100 Missions x 100),
   starts a real server process (uvicorn with uvloop + httptools, one worker), and
   drives it with a raw asyncio HTTP/1.1 client at 1 and 16 concurrent connections:
   ``POST /access/v1/evaluation`` presenting real Mandate tokens (permits), against the
   ceiling ``GET /healthz`` of the same app stack in the same run, interleaved rounds.
   Prints decisions/s, client p50/p99, server-side decision time p50/p99 (the
   ``Server-Timing`` the PDP reports) and the ratio to the ceiling (target >= 0.6;
   server p99 < 1 ms). More rows, each as a ratio to a baseline in the same run: decisions
   with a DPoP proof (target >= 0.7) against the decisions above; metered decisions (a
   permit drawn from the replica's budget lease, its ``POST /v1/usage`` report sent in the
   background as the PEP toolkit batches them; target >= 0.8) against plain decisions
   measured right next to each metered phase, and again with the report on the same
   connection, counted as one (target >= 0.5); requestable denials
   (``out_of_authority``, with a signed ``binding_token``) against plain denials
   (``parameter_violation``; target >= 0.7).
   The server records every decision in its decision log (the default,
   ``DECISION_LOG_MODE=async``). The cost of the log: two more servers on the same store,
   one with the log on and one with it off, serving only the same decisions in the same
   rounds (ABBA): decisions with the log on as a ratio to the same run with it off (target
   >= 0.9), with the CPU each server (and its writer process) spent per decision.
2. Index memory per active Mandate (tracemalloc around a bootstrap; target <= 2 KiB).
3. Index bootstrap time for M Mandates (default 100,000).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
from joserfc import jws
from joserfc.jwk import ECKey
from pydantic import SecretStr

from bench._load import LoadResult, build_request, drive, percentile
from bench._support import PostgresServer, StolenTime, cpu_seconds, proof_of
from ledger.clock import SystemClock
from ledger.domain.actors import Actor
from ledger.domain.delegation import ActorRef
from ledger.domain.instants import format_instant
from ledger.domain.roles import Role
from ledger.persistence.migrations import migrate
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
    operator_key: str  # reads /metrics (the Meter writer's counters)
    mandates: list[tuple[str, str]]  # (token, instance_id)
    holder: ECKey  # every Mandate is bound to this key (cnf.jkt), for the DPoP phase
    #: Mandates of the Missions with a ``max_budget`` (the metered phase), (token, instance).
    metered: list[tuple[str, str]]


#: The metered Missions' budget: far more than any run spends at 1.00 USD a decision.
METERED_BUDGET = {"amount": "1000000000.00", "currency": "USD"}


def seed(
    settings: Settings, missions: int, per_mission: int, *, tokens: bool, metered_missions: int = 0
) -> Seeded:
    clock = SystemClock()
    ledger = open_ledger(settings, clock=clock)
    try:
        keyring = Keyring.open(settings, ledger.database)
        keyring.ensure("ES256", clock.now())
        ledger.signer = keyring
        pep = ledger.issue_api_key(name="bench-pep", role=Role.PEP, actor=CLI).secret
        operator = ledger.issue_api_key(name="bench-operator", role=Role.OPERATOR, actor=CLI).secret
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
        metered: list[tuple[str, str]] = []
        holder = ECKey.generate_key("P-256")
        started = time.perf_counter()
        for m in range(missions + metered_missions):
            is_metered = m >= missions
            proposal = ledger.submit_proposal(
                actor=agent,
                client_id="bench-agent",
                instance_id=None,
                subject={"iss": "https://idp.example.com", "sub": f"user-{m}"},
                intent=intent | {"controls": {"max_budget": METERED_BUDGET}}
                if is_metered
                else intent,
                authorization_details=authority,
            ).value
            mission = ledger.approve_proposal(actor=approver, proposal_id=proposal.id).value
            for i in range(min(per_mission, 10) if is_metered else per_mission):
                instance = f"i-{m}-{i}"
                mandate = ledger.issue_mandate(
                    actor=agent,
                    mission_id=mission.id,
                    holder=ActorRef(client_id="bench-agent", instance_id=instance),
                    jkt=holder.thumbprint(),
                    ttl_seconds=86_400,
                ).value
                token = ledger.mandate_token(mandate) if tokens else mandate.id
                (metered if is_metered else issued).append((token, instance))
            if not is_metered and (m + 1) % max(1, missions // 10) == 0:
                rate = len(issued) / (time.perf_counter() - started)
                progress(f"  seeded {len(issued)} Mandates ({rate:.0f}/s)")
        progress("  bringing the mission board and mandate register up to date")
        codec = StateCodec(ledger.mapper.transcoder)
        LogFollower(ledger, durable=[MissionBoard(codec), MandateRegister(codec)]).catch_up()
        return Seeded(
            settings=settings,
            pep_key=pep,
            operator_key=operator,
            mandates=issued,
            holder=holder,
            metered=metered,
        )
    finally:
        ledger.close()


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, settings: Settings, extra_env: Mapping[str, str] | None = None) -> None:
        """``extra_env``: more ``MISSION_LEDGER_*`` settings for the server process."""
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
        env["MISSION_LEDGER_LOG_LEVEL"] = "warning"
        if settings.embedded:
            env["MISSION_LEDGER_DATA_DIR"] = str(settings.data_dir)
        else:
            assert settings.database_url is not None
            assert settings.key_encryption_key is not None
            env["MISSION_LEDGER_DATABASE_URL"] = settings.database_url
            env["MISSION_LEDGER_KEY_ENCRYPTION_KEY"] = (
                settings.key_encryption_key.get_secret_value()
            )
        env.update(extra_env or {})
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


def evaluation_body(
    token: str, instance: str, *, action: str = "invoices.pay", amount: str = "250.00"
) -> dict[str, Any]:
    """One evaluation of the Mandate ``token`` held by ``instance``, its key proven."""
    return {
        "subject": {"type": "agent", "id": "bench-agent", "properties": {"instance_id": instance}},
        "action": {"name": action, "properties": {"amount": amount, "currency": "USD"}},
        "resource": {"type": "api", "id": f"{RESOURCE}/invoices/42"},
        "context": {"mandate": token, "proof": proof_of(token)},
    }


def evaluation_requests(
    seeded: Seeded,
    port: int,
    sample: int,
    *,
    action: str = "invoices.pay",
    amount: str = "250.00",
) -> list[bytes]:
    """Evaluations of sampled Mandates: by default permits; ``amount`` over the bound gives
    plain denials (``parameter_violation``), an ``action`` outside the Mission requestable
    ones (``out_of_authority``, with ``access_request`` and a signed binding token)."""
    host = f"127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {seeded.pep_key}"}
    out = []
    for token, instance in sampled(seeded, sample):
        body = evaluation_body(token, instance, action=action, amount=amount)
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


def metered_body(token: str, instance: str) -> dict[str, Any]:
    """On a Mission with a ``max_budget``, a permit reserving 1.00 USD."""
    return evaluation_body(token, instance, amount="1.00")


def evaluation_request(seeded: Seeded, port: int, body: dict[str, Any]) -> bytes:
    """``POST /access/v1/evaluation`` of ``body`` with the PEP's key, as raw bytes."""
    return build_request(
        "POST",
        "/access/v1/evaluation",
        f"127.0.0.1:{port}",
        body=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
    )


def metered_requests(seeded: Seeded, port: int) -> list[bytes]:
    """Evaluations on the Missions with a ``max_budget``: each permit reserves 1.00 USD."""
    return [evaluation_request(seeded, port, metered_body(*held)) for held in seeded.metered]


#: The metered phase's background reporter sends what has gathered ``USAGE_INTERVAL`` after
#: its previous batch was answered, or as soon as ``USAGE_MAX_BATCH`` wait, up to that many a
#: request: what ``mission_ledger_pep.UsageReporter`` does with its defaults.
USAGE_INTERVAL = 0.05
USAGE_MAX_BATCH = 500
#: A metered phase passes only if at least this share of its permits had their reports sent.
KEPT_UP = 0.95


def usage_report(seeded: Seeded, port: int) -> Any:
    """The follow-up of a metered permit: its usage report (``executed``, the full amount)
    on the same connection; a denial fails the operation."""
    headers = {"Authorization": f"Bearer {seeded.pep_key}"}
    host = f"127.0.0.1:{port}"

    def follow(raw: bytes) -> bytes | None:
        answer = orjson.loads(raw[raw.index(b"\r\n\r\n") + 4 :])
        if answer.get("decision") is not True:
            return None
        report = {"evaluation_id": answer["context"]["evaluation_id"], "outcome": "executed"}
        return build_request("POST", "/v1/usage", host, body=orjson.dumps(report), headers=headers)

    return follow


def batched_usage_reports(seeded: Seeded, port: int, interval: float = USAGE_INTERVAL) -> Any:
    """(follow, flusher, counts): each permit's usage report is gathered (a denial fails the
    operation); a background connection sends them as ``POST /v1/usage {"reports": [...]}``
    ``interval`` seconds after its previous request was answered, or as soon as
    ``USAGE_MAX_BATCH`` have gathered, up to that many a request (what
    ``mission_ledger_pep.UsageReporter`` does in a thread), so the decision's connection
    never waits for a report's commit. ``counts`` holds the permits gathered and the reports
    sent so far: a phase whose reports fell behind its permits did not measure permit *and*
    report (the Meter writer did not keep up)."""
    headers = {"Authorization": f"Bearer {seeded.pep_key}"}
    host = f"127.0.0.1:{port}"
    gathered: list[dict[str, str]] = []
    counts = {"permits": 0, "sent": 0}

    def follow(raw: bytes) -> bytes | None:
        answer = orjson.loads(raw[raw.index(b"\r\n\r\n") + 4 :])
        if answer.get("decision") is not True:
            return None
        gathered.append(
            {"evaluation_id": answer["context"]["evaluation_id"], "outcome": "executed"}
        )
        counts["permits"] += 1
        return b""

    answered: list[float] = []  # when the previous request was answered (the next call)

    def flusher() -> bytes | None:
        now = time.perf_counter()
        if not answered:
            answered.append(now)
        if len(gathered) < USAGE_MAX_BATCH and (not gathered or now - answered[0] < interval):
            return None
        answered.clear()
        reports = gathered[:USAGE_MAX_BATCH]
        del gathered[:USAGE_MAX_BATCH]
        counts["sent"] += len(reports)
        body = orjson.dumps({"reports": reports})
        return build_request("POST", "/v1/usage", host, body=body, headers=headers)

    return follow, flusher, counts


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
    return [evaluation_request(seeded, port, body) for body in dpop_bodies(seeded, count)]


def check_permits(seeded: Seeded, port: int) -> None:
    token, instance = seeded.mandates[0]
    answer = httpx.post(
        f"http://127.0.0.1:{port}/access/v1/evaluation",
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
        json=evaluation_body(token, instance),
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
    metered = httpx.post(
        f"http://127.0.0.1:{port}/access/v1/evaluation",
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
        json=metered_body(*seeded.metered[0]),
    ).json()
    if "reservation_expires_at" not in metered.get("context", {}):
        msg = f"the metered benchmark request is not a metered permit: {metered}"
        raise RuntimeError(msg)
    reported = httpx.post(
        f"http://127.0.0.1:{port}/v1/usage",
        headers={"Authorization": f"Bearer {seeded.pep_key}"},
        json={"evaluation_id": metered["context"]["evaluation_id"], "outcome": "executed"},
    )
    if reported.status_code != 200 or reported.json().get("outcome") != "executed":
        msg = f"the usage report of the metered benchmark failed: {reported.text}"
        raise RuntimeError(msg)


def server_metrics(seeded: Seeded, port: int, names: Sequence[str]) -> dict[str, float]:
    """The values of the unlabelled samples ``names`` on the server's ``/metrics`` (0 for
    one it does not show)."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": f"Bearer {seeded.operator_key}"},
    ).text
    values = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in values:
            values[name] = float(value)
    return values


def meter_writer(seeded: Seeded, port: int) -> dict[str, float]:
    """The Meter writer's counters (``/metrics``): groups saved, operations, seconds."""
    names = ("groups", "operations", "apply_seconds", "save_seconds", "drawn", "reserved_durably")
    found = server_metrics(seeded, port, [f"mission_ledger_metering_{n}_total" for n in names])
    return {name: found[f"mission_ledger_metering_{name}_total"] for name in names}


def writers_starved(seeded: Seeded, port: int) -> int:
    """Writer processes the server replaced because other work starved them under
    ``SCHED_IDLE`` (decision 0025), both kinds (``/metrics``)."""
    found = server_metrics(
        seeded,
        port,
        [
            "mission_ledger_decision_log_writer_starved_total",
            "mission_ledger_metering_writer_starved_total",
        ],
    )
    return int(sum(found.values()))


def meter_writer_idle(
    seeded: Seeded, port: int, *, quiet: float = 0.5, limit: float = 20.0
) -> float:
    """Wait until the Meter writer has applied no group for ``quiet`` seconds (at most
    ``limit``): a metered phase may leave it recording the phase's last draws and reports (a
    group under load takes tens of milliseconds), and the next phase must not pay for that.
    Returns how long it waited (so far always one ``quiet``: the writer had finished)."""
    started = time.monotonic()
    last = meter_writer(seeded, port)["groups"]
    while time.monotonic() - started < limit:
        time.sleep(quiet)
        now = meter_writer(seeded, port)["groups"]
        if now == last:
            break
        last = now
    return time.monotonic() - started


def check_denials(seeded: Seeded, port: int) -> None:
    """The two denial workloads are what they claim: one plain, one requestable."""
    token, instance = seeded.mandates[0]
    for action, amount, requestable_expected in (
        ("invoices.pay", "5000.00", False),
        ("invoices.void", "250.00", True),
    ):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/access/v1/evaluation",
            headers={"Authorization": f"Bearer {seeded.pep_key}"},
            json=evaluation_body(token, instance, action=action, amount=amount),
        ).json()
        context = answer.get("context", {})
        if (
            answer.get("decision") is not False
            or ("access_request" in context) != requestable_expected
        ):
            msg = f"the {action} benchmark request is not the denial it should be: {answer}"
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


def server_env(pairs: Sequence[str]) -> dict[str, str]:
    """``--server-env NAME=VALUE`` options as the servers' environment (``NAME`` without
    its ``MISSION_LEDGER_`` prefix): settings a run measures other than the defaults."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            msg = f"--server-env wants NAME=VALUE, not {pair!r}"
            raise SystemExit(msg)
        env["MISSION_LEDGER_" + name.upper().removeprefix("MISSION_LEDGER_")] = value
    return env


def measure_http(
    seeded: Seeded,
    *,
    seconds: float,
    rounds: int,
    dpop_count: int,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``env``: settings every server runs with (``server_env``)."""
    env = dict(env or {})
    server = Server(seeded.settings, env)
    # The decision log's cost: two more servers of the same store that serve only these
    # decisions, one with the log on (as ``server``), one with it off. (Compared with
    # ``server`` itself, the log-on side would also carry what the other phases leave behind:
    # leases, replay caches, a larger heap.)
    logged = Server(seeded.settings, env)
    unlogged = Server(seeded.settings, env | {"MISSION_LEDGER_DECISION_LOG_MODE": "off"})
    try:
        check_permits(seeded, server.port)
        check_permits(seeded, logged.port)
        check_permits(seeded, unlogged.port)
        evaluations = evaluation_requests(seeded, server.port, sample=2000)
        plain = evaluation_requests(seeded, server.port, sample=2000, amount="5000.00")
        requestable = evaluation_requests(seeded, server.port, sample=2000, action="invoices.void")
        check_denials(seeded, server.port)
        metered = metered_requests(seeded, server.port)
        follow, flusher, reported = batched_usage_reports(seeded, server.port)
        follow_each = usage_report(seeded, server.port)
        logged_evaluations = evaluation_requests(seeded, logged.port, sample=2000)
        unlogged_evaluations = evaluation_requests(seeded, unlogged.port, sample=2000)
        ceiling = [build_request("GET", "/healthz", f"127.0.0.1:{server.port}")]
        progress("  warming up (verifies every sampled token once, on every server)")
        drive("127.0.0.1", server.port, evaluations, connections=4, seconds=3)
        drive("127.0.0.1", logged.port, logged_evaluations, connections=4, seconds=3)
        drive("127.0.0.1", unlogged.port, unlogged_evaluations, connections=4, seconds=3)
        out: dict[str, Any] = {}
        for connections in (1, 16):
            ceil_runs: list[LoadResult] = []
            eval_runs: list[LoadResult] = []
            off_runs: list[LoadResult] = []
            logged_runs: list[LoadResult] = []
            on_cpu, off_cpu = [0.0, 0.0], [0.0, 0.0]  # the server's, its writer process's
            dpop_runs: list[LoadResult] = []
            plain_runs: list[LoadResult] = []
            requestable_runs: list[LoadResult] = []
            metered_runs: list[LoadResult] = []
            # Plain decisions next to each metered phase (before it in odd rounds, after it in
            # even ones): the metered row's baseline, so that the machine's drift over a
            # round's other phases does not land on that row alone.
            metered_base_runs: list[LoadResult] = []
            metered_each_runs: list[LoadResult] = []
            writer_totals: dict[str, float] = {}
            permits_reported = [0, 0]  # permits gathered, their reports sent
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
                # The log off, then on, then off again in the next round (ABBA): drift hits both.
                logged_phase = (logged, logged_evaluations, logged_runs, on_cpu)
                off_phase = (unlogged, unlogged_evaluations, off_runs, off_cpu)
                for at, requests, runs, cpu in (
                    (off_phase, logged_phase) if round_no % 2 == 0 else (logged_phase, off_phase)
                ):
                    before_cpu = cpu_seconds(at.process.pid)
                    runs.append(
                        drive(
                            "127.0.0.1", at.port, requests, connections=connections, seconds=seconds
                        )
                    )
                    for index, (start, end) in enumerate(
                        zip(before_cpu, cpu_seconds(at.process.pid), strict=True)
                    ):
                        cpu[index] += end - start
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
                for runs, requests in ((plain_runs, plain), (requestable_runs, requestable)):
                    runs.append(
                        drive(
                            "127.0.0.1",
                            server.port,
                            requests,
                            connections=connections,
                            seconds=seconds,
                        )
                    )
                paired_base = partial(
                    drive,
                    "127.0.0.1",
                    server.port,
                    evaluations,
                    connections=connections,
                    seconds=seconds,
                )
                if round_no % 2 == 0:
                    metered_base_runs.append(paired_base())
                before = meter_writer(seeded, server.port)
                reported_before = dict(reported)
                metered_runs.append(
                    drive(
                        "127.0.0.1",
                        server.port,
                        metered,
                        connections=connections,
                        seconds=seconds,
                        follow=follow,
                        flusher=flusher,
                    )
                )
                writer = {k: v - before[k] for k, v in meter_writer(seeded, server.port).items()}
                permits_reported[0] += reported["permits"] - reported_before["permits"]
                permits_reported[1] += reported["sent"] - reported_before["sent"]
                for key, value in writer.items():
                    writer_totals[key] = writer_totals.get(key, 0.0) + value
                meter_writer_idle(seeded, server.port)
                if round_no % 2 == 1:
                    metered_base_runs.append(paired_base())
                metered_each_runs.append(
                    drive(
                        "127.0.0.1",
                        server.port,
                        metered,
                        connections=connections,
                        seconds=seconds,
                        follow=follow_each,
                    )
                )
                waited = meter_writer_idle(seeded, server.port)
                rates = {
                    "decisions": eval_runs[-1].rps,
                    "DPoP": dpop_runs[-1].rps,
                    "requestable": requestable_runs[-1].rps,
                    "metered": metered_runs[-1].rps,
                    "decisions next to it": metered_base_runs[-1].rps,
                    "log off": off_runs[-1].rps,
                    "log on": logged_runs[-1].rps,
                }
                shown = ", ".join(f"{name} {rate:.0f}/s" for name, rate in rates.items())
                progress(f"    {shown} (Meter writer idle after {waited:.1f} s)")
            ceil, ev, dp = merge(ceil_runs), merge(eval_runs), merge(dpop_runs)
            pl, rq = merge(plain_runs), merge(requestable_runs)
            me, each = merge(metered_runs), merge(metered_each_runs)
            me_base = merge(metered_base_runs)
            off, on = merge(off_runs), merge(logged_runs)
            out[str(connections)] = {
                "log_off_rps": off.rps,
                "log_on_rps": on.rps,
                # CPU microseconds per decision: the server's, its decision log writer's.
                "log_off_server_cpu_us": off_cpu[0] / max(off.requests, 1) * 1e6,
                "log_on_server_cpu_us": on_cpu[0] / max(on.requests, 1) * 1e6,
                "log_on_writer_cpu_us": on_cpu[1] / max(on.requests, 1) * 1e6,
                "log_ratio": on.rps / off.rps if off.rps else 0.0,
                "log_off_server_p99_ms": percentile(off.server_ms, 99),
                "log_on_server_p99_ms": percentile(on.server_ms, 99),
                "log_errors": off.errors + on.errors,
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
                "plain_denials_rps": pl.rps,
                "requestable_denials_rps": rq.rps,
                "requestable_ratio": rq.rps / pl.rps if pl.rps else 0.0,
                "requestable_server_p99_ms": percentile(rq.server_ms, 99),
                "plain_server_p50_ms": percentile(pl.server_ms, 50),
                "requestable_server_p50_ms": percentile(rq.server_ms, 50),
                "denial_errors": pl.errors + rq.errors,
                "metered_rps": me.rps,
                "metered_base_rps": me_base.rps,
                "metered_ratio": me.rps / me_base.rps if me_base.rps else 0.0,
                # Against the round's first decisions phase, as before 2026-12-07.
                "metered_ratio_first": me.rps / ev.rps if ev.rps else 0.0,
                "metered_p50_ms": percentile(me.latencies_ms, 50),
                "metered_p99_ms": percentile(me.latencies_ms, 99),
                "metered_errors": me.errors,
                # Reports sent within the phases / permits made: below 1, the Meter writer
                # fell behind and the rate above is of permits, not of permit-and-report.
                "metered_reported_share": permits_reported[1] / max(1, permits_reported[0]),
                "metered_each_rps": each.rps,
                "metered_each_ratio": each.rps / ev.rps if ev.rps else 0.0,
                "metered_each_p50_ms": percentile(each.latencies_ms, 50),
                "metered_each_p99_ms": percentile(each.latencies_ms, 99),
                "metered_each_errors": each.errors,
                "metered_drawn_share": writer_totals["drawn"]
                / max(1.0, writer_totals["drawn"] + writer_totals["reserved_durably"]),
                "metered_ops_per_group": writer_totals["operations"]
                / max(1.0, writer_totals["groups"]),
                "metered_save_ms_per_group": 1000
                * writer_totals["save_seconds"]
                / max(1.0, writer_totals["groups"]),
                "metered_writer_busy": writer_totals["apply_seconds"] / (seconds * rounds),
                # So far in the run: did the writers stay under SCHED_IDLE (decision 0025)?
                "writers_starved": writers_starved(seeded, server.port)
                + writers_starved(seeded, logged.port),
            }
        return out
    finally:
        server.stop()
        logged.stop()
        unlogged.stop()


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


def _against_decisions(
    http: dict[str, Any],
    title: str,
    kind: str,
    target: float,
    latencies: list[tuple[str, str, int]],
    kept_up: str | None = None,
    base: str = "decisions_rps",
    also: tuple[str, str] | None = None,
) -> list[str]:
    """The rows of one kind of decision (``<kind>_rps``, ``_ratio``, ``_errors``) as a ratio to
    the plain decisions of the same run, with the latency columns named (header, key,
    decimals). With ``kept_up`` (the key of a share), a row passes only when that share is at
    least ``KEPT_UP``: the follow-up work of the operations was done, not left behind.
    ``base``: the key of the decisions the ratio is over; ``also``: one more ratio shown
    (header, key), which the verdict does not read."""
    header = f"{'conns':>5} {'decisions/s':>12} {kind + '/s':>10} {'ratio':>6} {'target':>8} "
    header += " ".join(f"{h:>10}" for h, _, _ in latencies)
    extra = "" if also is None else f" {also[0]:>8}"
    lines = ["", title, "", header + (" reported" if kept_up else "") + " errors" + extra]
    for connections, row in http.items():
        ratio = row[f"{kind}_ratio"]
        share = None if kept_up is None else row[kept_up]
        passed = ratio >= target and (share is None or share >= KEPT_UP)
        verdict = f">={target} " + ("PASS" if passed else "BELOW")
        cells = " ".join(f"{row[key]:>8.{digits}f}ms" for _, key, digits in latencies)
        shown = "" if share is None else f" {share:>8.2f}"
        other = "" if also is None else f" {row[also[1]]:>8.2f}"
        lines.append(
            f"{connections:>5} {row[base]:>12.0f} {row[f'{kind}_rps']:>10.0f} "
            f"{ratio:>6.2f} {verdict:>8} {cells}{shown} {row[f'{kind}_errors']:>6}{other}"
        )
    return lines


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
    lines += _against_decisions(
        http,
        "Decisions with a DPoP proof verified by the PDP (context.proof.dpop, each proof once) "
        "vs the decisions above (context.proof.jkt), same run:",
        "dpop",
        0.7,
        [("server p99", "dpop_server_p99_ms", 3)],
    )
    lines += _against_decisions(
        http,
        "Metered decisions (a permit reserving against max_budget from the replica's budget "
        "lease; its usage report gathered and sent by one background connection as POST "
        f"/v1/usage {{reports: [...]}} {USAGE_INTERVAL * 1000:.0f} ms after the previous one "
        f"was answered or once {USAGE_MAX_BATCH} wait, up to {USAGE_MAX_BATCH} a request, as "
        "the PEP toolkit's UsageReporter does) vs plain decisions measured right next to "
        "each metered phase (before it, then after it in the next round), same run; "
        "'reported': reports sent / permits made in the phases (a pass needs >= "
        f"{KEPT_UP}); 'vs first': the same metered rate over the decisions above:",
        "metered",
        0.8,
        [("op p50", "metered_p50_ms", 2), ("op p99", "metered_p99_ms", 2)],
        kept_up="metered_reported_share",
        base="metered_base_rps",
        also=("vs first", "metered_ratio_first"),
    )
    lines += _against_decisions(
        http,
        "Metered decisions, one POST /v1/usage per permit (the pair is one operation) vs the "
        "decisions above, same run:",
        "metered_each",
        0.5,
        [("pair p50", "metered_each_p50_ms", 2), ("pair p99", "metered_each_p99_ms", 2)],
    )
    lines += ["", "Meter writer during the batched metered phases (group commit):", ""]
    lines += [
        f"{connections:>5} conns: {row['metered_ops_per_group']:.1f} operations per group, "
        f"{row['metered_save_ms_per_group']:.2f} ms per save (the store's write transaction), "
        f"writer busy {row['metered_writer_busy']:.0%} of the time, "
        f"{row['metered_drawn_share']:.1%} of permits drawn from a lease (no waiting)"
        for connections, row in http.items()
    ]
    lines += [
        "",
        "Requestable denials (out_of_authority: access_request with a signed binding token) "
        "vs plain denials (parameter_violation), same run:",
        "",
        f"{'conns':>5} {'plain/s':>8} {'requestable/s':>14} {'ratio':>6} {'target':>8} "
        f"{'server p50 plain':>16} {'requestable':>11} {'server p99':>10} {'errors':>6}",
    ]
    for connections, row in http.items():
        verdict = "PASS" if row["requestable_ratio"] >= 0.7 else "BELOW"
        lines.append(
            f"{connections:>5} {row['plain_denials_rps']:>8.0f} "
            f"{row['requestable_denials_rps']:>14.0f} {row['requestable_ratio']:>6.2f} "
            f"{'>=0.7 ' + verdict:>8} {row['plain_server_p50_ms']:>14.3f}ms "
            f"{row['requestable_server_p50_ms']:>9.3f}ms "
            f"{row['requestable_server_p99_ms']:>8.3f}ms {row['denial_errors']:>6}"
        )
    lines += [
        "",
        "Decisions with the decision log on (DECISION_LOG_MODE=async, as above) vs the same "
        "decisions with it off: two more servers of the same store serving only these "
        "decisions, same rounds:",
        "",
        f"{'conns':>5} {'log off/s':>10} {'log on/s':>9} {'ratio':>6} {'target':>8} "
        f"{'server p99 off':>14} {'on':>9}  CPU µs per decision: server off, on, writer process",
    ]
    for connections, row in http.items():
        verdict = "PASS" if row["log_ratio"] >= 0.9 else "BELOW"
        lines.append(
            f"{connections:>5} {row['log_off_rps']:>10.0f} {row['log_on_rps']:>9.0f} "
            f"{row['log_ratio']:>6.2f} {'>=0.9 ' + verdict:>8} "
            f"{row['log_off_server_p99_ms']:>12.3f}ms {row['log_on_server_p99_ms']:>7.3f}ms  "
            f"{row['log_off_server_cpu_us']:>6.0f} {row['log_on_server_cpu_us']:>6.0f} "
            f"{row['log_on_writer_cpu_us']:>6.0f}"
        )
    starved = {connections: row["writers_starved"] for connections, row in http.items()}
    worst = max(row["server_p99_ms"] for row in http.values())
    lines += [
        "",
        "writer processes replaced as starved under SCHED_IDLE (decision 0025), by the end of "
        "each connection count's rounds: "
        + ", ".join(f"{count} after {connections} conns" for connections, count in starved.items()),
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
    parser.add_argument(
        "--metered-missions",
        type=int,
        default=10,
        help="Missions with a max_budget (10 Mandates each) for the metered phase",
    )
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
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the store the server runs on (postgres: a throwaway database on the server "
        "MISSION_LEDGER_TEST_PG names)",
    )
    add_server_env(parser)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(argv)
    server_env(args.server_env)  # a malformed one fails now, not after seeding
    return args


def add_server_env(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting every server runs with (repeatable; NAME as in docs/configuration.md, "
        "e.g. WRITER_PROCESS_IDLE=true); printed with the results",
    )


@contextmanager
def store(backend: str, tmp: Path, label: str) -> Iterator[Settings]:
    """The settings of a fresh store: a SQLite directory under ``tmp``, or a throwaway
    PostgreSQL database (migrated, with a key-encryption key of its own), dropped after."""
    if backend == "sqlite":
        yield Settings(data_dir=tmp / label)
        return
    with PostgresServer.from_env().database(label) as url:
        kek = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        settings = Settings(database_url=url, key_encryption_key=SecretStr(kek))
        migrate(settings)
        yield settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stolen = StolenTime()
    with (
        tempfile.TemporaryDirectory(prefix="ml-bench-eval-") as tmp,
        store(args.backend, Path(tmp), "eval") as settings,
    ):
        count = args.missions * args.per_mission
        progress(f"seeding {count} Mandates under {args.missions} Missions ({args.backend})")
        seeded = seed(
            settings,
            args.missions,
            args.per_mission,
            tokens=True,
            metered_missions=args.metered_missions,
        )
        progress("measuring decisions over HTTP")
        env = server_env(args.server_env)
        http = measure_http(
            seeded,
            seconds=args.seconds,
            rounds=args.rounds,
            dpop_count=args.dpop_proofs,
            env=env,
        )
        index = measure_index(seeded.settings, len(seeded.mandates) + len(seeded.metered))
        boot = index
        if args.bootstrap_mandates:
            missions = max(1, args.bootstrap_mandates // 100)
            progress(f"seeding {missions * 100} Mandates for the bootstrap measurement")
            with store(args.backend, Path(tmp), "boot") as boot_settings:
                big = seed(boot_settings, missions, 100, tokens=False)
                boot = measure_index(big.settings, missions * 100)
        if env:
            print("servers' settings other than the defaults: " + ", ".join(args.server_env))
        print(render(http, index, boot))
        print(stolen.describe())
        if args.json:
            print(json.dumps({"http": http, "index": index, "bootstrap": boot, "server_env": env}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
