"""Replica lag of a revocation: how long another replica keeps permitting a revoked Mandate
when the caller does not ask for ``min_position``.

Run: ``python -m bench.replica_lag`` (``--help`` for options).

Two replicas A and B (``mission-ledger serve``) share one fresh PostgreSQL database. Each
trial issues a Mandate through A, waits until the measured replica permits it
(``POST /access/v1/evaluation`` with a ``pep`` key), revokes it through A, and then asks
the measured replica again and again, back to back on one keep-alive connection and
without ``min_position``, until it denies. Lag = arrival of the first deny - arrival of
A's revoke answer (also reported from the instant the revoke request was sent).

Subject: the measured replica is B (it learns of the revocation by following the log,
woken by ``LISTEN/NOTIFY``). Baseline, interleaved trial by trial in the same run: the
measured replica is A itself, which answered the revocation only once its own read
models included it, so its first evaluation must deny (lag = one evaluation round
trip). The bound is ``mission_max_stale_seconds`` from B's
``/.well-known/mission-authority-server``: the staleness the service promises at most.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench._fleet import (
    Fleet,
    create_mission,
    fleet,
    install_sigterm_handler,
    progress,
)
from bench._load import percentile
from bench._support import (
    PostgresUnavailable,
    load_average,
    machine_description,
    proof_of,
    table,
)

AGENT = "bench-agent"
INSTANCE = "i-1"
KEY_NAMES = {
    "agent": AGENT,
    "approver": "bench-approver",
    "operator": "bench-operator",
    "pep": "bench-pep",
}


class Api:
    """A keep-alive ``http.client`` connection to one replica (cheap per request, so the
    polling loop measures the server rather than the client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(
        self, method: str, path: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any]:
        payload = json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **headers}
        try:
            self.conn.request(method, path, body=payload, headers=all_headers)
            response = self.conn.getresponse()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # one retry on a fresh connection (e.g. closed while idle)
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=payload, headers=all_headers)
            response = self.conn.getresponse()
        raw = response.read()
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, answer_headers, json.loads(raw) if raw else None

    def close(self) -> None:
        self.conn.close()


def evaluation(token: str) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": INSTANCE}},
        "action": {"name": "invoices.read"},
        "resource": {"type": "api", "id": "https://erp.example.com"},
        "context": {"mandate": token, "proof": proof_of(token)},
    }


@dataclass
class Trial:
    target: str  # "B" (subject) or "A" (baseline)
    grant_ms: float  # issuance answer -> first permit on the target
    revoke_ms: float  # the revoke request's round trip on A
    lag_ms: float  # A's revoke answer -> first deny on the target
    lag_from_request_ms: float  # revoke request sent -> first deny on the target
    polls: int  # evaluations until (and including) the first deny
    poll_ms: float  # mean round trip of those evaluations
    denied: bool


@dataclass
class Harness:
    fleet: Fleet
    mission: str
    a: Api
    b: Api
    poll_a: Api
    poll_b: Api
    deadline_s: float
    grants_ms: list[float] = field(default_factory=list)
    seed: int = 0
    problems: list[str] = field(default_factory=list)

    def _jkt(self) -> str:
        self.seed += 1
        digest = hashlib.sha256(f"replica-lag-{self.seed}".encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def decide(self, api: Api, token: str) -> bool:
        status, _, body = api.call(
            "POST", "/access/v1/evaluation", evaluation(token), self.fleet.auth("pep")
        )
        if status != 200 or not isinstance(body, dict):
            msg = f"evaluation on port {api.port}: HTTP {status} {body}"
            raise RuntimeError(msg)
        return bool(body.get("decision"))

    def _issue(self, target: Api, target_name: str) -> tuple[str, str]:
        """Issue a Mandate through A and wait until ``target`` permits it: (token, id)."""
        status, _, issued = self.a.call(
            "POST",
            f"/v1/missions/{self.mission}/mandates",
            {"actor": {"client_id": AGENT, "instance_id": INSTANCE}, "cnf": {"jkt": self._jkt()}},
            self.fleet.auth("agent"),
        )
        issued_at = time.perf_counter()
        if status != 201:
            msg = f"mandate issuance: HTTP {status} {issued}"
            raise RuntimeError(msg)
        token, mandate = str(issued["token"]), str(issued["mandate_id"])
        deadline = issued_at + self.deadline_s
        while not self.decide(target, token):
            if time.perf_counter() > deadline:
                msg = f"replica {target_name} never permitted a fresh Mandate"
                raise RuntimeError(msg)
        self.grants_ms.append((time.perf_counter() - issued_at) * 1000)
        return token, mandate

    def trial(self, target_name: str) -> Trial:
        target = self.b if target_name == "B" else self.a
        token, mandate = self._issue(target, target_name)
        sent = time.perf_counter()
        status, _, body = self.a.call(
            "POST", f"/v1/mandates/{mandate}/revoke", {}, self.fleet.auth("operator")
        )
        answered = time.perf_counter()
        if status != 200:
            msg = f"revoke: HTTP {status} {body}"
            raise RuntimeError(msg)
        polls = 0
        denied = False
        deadline = answered + self.deadline_s
        while True:
            polls += 1
            permitted = self.decide(target, token)
            now = time.perf_counter()
            if not permitted:
                denied = True
                break
            if now > deadline:
                self.problems.append(
                    f"{target_name} still permitted {self.deadline_s:.0f} s after the revocation"
                )
                break
        return Trial(
            target=target_name,
            grant_ms=self.grants_ms[-1],
            revoke_ms=(answered - sent) * 1000,
            lag_ms=(now - answered) * 1000,
            lag_from_request_ms=(now - sent) * 1000,
            polls=polls,
            poll_ms=(now - answered) * 1000 / polls,
            denied=denied,
        )

    def race(self, target_name: str) -> Race:
        """Poll the target from the moment the revoke request is sent, on another thread."""
        token, mandate = self._issue(self.b if target_name == "B" else self.a, target_name)
        poller = Poller(self, self.poll_b if target_name == "B" else self.poll_a, token)
        poller.start()
        if not poller.started_polling.wait(self.deadline_s):
            msg = "the poller did not start"
            raise RuntimeError(msg)
        sent = time.perf_counter()
        status, _, body = self.a.call(
            "POST", f"/v1/mandates/{mandate}/revoke", {}, self.fleet.auth("operator")
        )
        answered = time.perf_counter()
        if status != 200:
            msg = f"revoke: HTTP {status} {body}"
            raise RuntimeError(msg)
        poller.join(self.deadline_s)
        poller.stop.set()
        poller.join()
        denies = [received for _, received, permitted in poller.log if not permitted]
        if not denies:
            self.problems.append(f"{target_name} still permitted during a whole race trial")
        return Race(
            target=target_name,
            answer_ms=(answered - sent) * 1000,
            deny_ms=(denies[0] - sent) * 1000 if denies else math.nan,
            permits_after_answer=sum(
                1 for started, _, permitted in poller.log if permitted and started > answered
            ),
            polls=len(poller.log),
            denied=bool(denies),
        )


@dataclass
class Race:
    """The target polled from a second connection *while* A handles the revocation."""

    target: str
    answer_ms: float  # revoke request sent -> A's answer
    deny_ms: float  # revoke request sent -> the first deny from the target arrives
    permits_after_answer: int  # permits whose evaluation was sent after A's answer
    polls: int
    denied: bool


class Poller(threading.Thread):
    def __init__(self, harness: Harness, api: Api, token: str) -> None:
        super().__init__(daemon=True)
        self.harness, self.api, self.token = harness, api, token
        self.started_polling = threading.Event()
        self.stop = threading.Event()
        self.log: list[tuple[float, float, bool]] = []  # (sent, received, permitted)

    def run(self) -> None:
        while not self.stop.is_set():
            sent = time.perf_counter()
            permitted = self.harness.decide(self.api, self.token)
            self.log.append((sent, time.perf_counter(), permitted))
            self.started_polling.set()
            if not permitted:
                return


def stats(trials: Sequence[Trial]) -> dict[str, float]:
    lags = [t.lag_ms for t in trials]
    from_request = [t.lag_from_request_ms for t in trials]
    return {
        "trials": len(trials),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": max(lags, default=math.nan),
        "from_request_p50_ms": percentile(from_request, 50),
        "from_request_p99_ms": percentile(from_request, 99),
        "from_request_max_ms": max(from_request, default=math.nan),
        "polls_mean": sum(t.polls for t in trials) / len(trials) if trials else math.nan,
        "first_poll_denied": sum(t.polls == 1 for t in trials),
        "never_denied": sum(not t.denied for t in trials),
        "poll_p50_ms": percentile([t.poll_ms for t in trials], 50),
        "grant_p50_ms": percentile([t.grant_ms for t in trials], 50),
        "grant_p99_ms": percentile([t.grant_ms for t in trials], 99),
        "revoke_p50_ms": percentile([t.revoke_ms for t in trials], 50),
    }


def run(the_fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    a, b = the_fleet.replicas[0], the_fleet.replicas[1]
    with httpx.Client(base_url=a.url, timeout=30.0) as client:
        mission = create_mission(client, the_fleet, AGENT, "alice")
    metadata = httpx.get(b.url + "/.well-known/mission-authority-server", timeout=10).json()
    bound_s = float(metadata["mission_max_stale_seconds"])
    harness = Harness(
        the_fleet, mission, Api(a.port), Api(b.port), Api(a.port), Api(b.port), args.seconds
    )
    try:
        progress(f"warm-up: {args.warmup} trial(s) of each kind on each replica")
        for _ in range(args.warmup):
            for name in ("B", "A"):
                harness.trial(name)
                harness.race(name)
        rounds: list[dict[str, list[Trial]]] = []
        races: list[dict[str, list[Race]]] = []
        per_round = math.ceil(args.trials / args.rounds)
        remaining = args.trials
        for round_no in range(args.rounds):
            count = min(per_round, remaining)
            remaining -= count
            found: dict[str, list[Trial]] = {"B": [], "A": []}
            raced: dict[str, list[Race]] = {"B": [], "A": []}
            for i in range(count):
                order = ("B", "A") if i % 2 == 0 else ("A", "B")  # ABBA against drift
                for name in order:
                    found[name].append(harness.trial(name))
                if not args.no_race:
                    for name in order:
                        raced[name].append(harness.race(name))
            rounds.append(found)
            races.append(raced)
            s = stats(found["B"])
            progress(
                f"  round {round_no + 1}/{args.rounds}: {count} trials per replica, B lag "
                f"p50 {s['lag_p50_ms']:.2f} ms, p99 {s['lag_p99_ms']:.2f} ms"
            )
    finally:
        for api in (harness.a, harness.b, harness.poll_a, harness.poll_b):
            api.close()
    return {"rounds": rounds, "races": races, "bound_s": bound_s, "problems": harness.problems}


def race_stats(races: Sequence[Race]) -> dict[str, float]:
    deny = [r.deny_ms for r in races if r.denied]
    return {
        "trials": len(races),
        "answer_p50_ms": percentile([r.answer_ms for r in races], 50),
        "answer_p99_ms": percentile([r.answer_ms for r in races], 99),
        "deny_p50_ms": percentile(deny, 50),
        "deny_p99_ms": percentile(deny, 99),
        "deny_max_ms": max(deny, default=math.nan),
        "deny_minus_answer_p50_ms": percentile(
            [r.deny_ms - r.answer_ms for r in races if r.denied], 50
        ),
        "deny_minus_answer_p99_ms": percentile(
            [r.deny_ms - r.answer_ms for r in races if r.denied], 99
        ),
        "permits_after_answer": sum(r.permits_after_answer for r in races),
        "trials_with_permit_after_answer": sum(r.permits_after_answer > 0 for r in races),
        "polls_mean": sum(r.polls for r in races) / len(races) if races else math.nan,
        "never_denied": sum(not r.denied for r in races),
    }


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def render(out: dict[str, Any], loads: tuple[str, str]) -> str:
    rounds: list[dict[str, list[Trial]]] = out["rounds"]
    every_b = [t for r in rounds for t in r["B"]]
    every_a = [t for r in rounds for t in r["A"]]
    b, a = stats(every_b), stats(every_a)
    lines = [
        f"load average at start {loads[0]}, at end {loads[1]}",
        "",
        "Revoke through A, then evaluate (no min_position) until the replica denies; lag = A's "
        "revoke answer -> first deny (ms). B = the other replica, A = the accepting one "
        "(baseline), interleaved:",
        "",
    ]
    rows = []
    for index, found in enumerate(rounds, 1):
        sb, sa = stats(found["B"]), stats(found["A"])
        rows.append(
            [
                str(index),
                str(len(found["B"])),
                _f(sb["lag_p50_ms"]),
                _f(sb["lag_p99_ms"]),
                _f(sb["lag_max_ms"]),
                _f(sa["lag_p50_ms"]),
                _f(sa["lag_p99_ms"]),
                f"{sb['lag_p50_ms'] / sa['lag_p50_ms']:.1f}",
                f"{sb['polls_mean']:.2f}",
            ]
        )
    rows.append(
        [
            "all",
            str(len(every_b)),
            _f(b["lag_p50_ms"]),
            _f(b["lag_p99_ms"]),
            _f(b["lag_max_ms"]),
            _f(a["lag_p50_ms"]),
            _f(a["lag_p99_ms"]),
            f"{b['lag_p50_ms'] / a['lag_p50_ms']:.1f}",
            f"{b['polls_mean']:.2f}",
        ]
    )
    lines.append(
        table(
            ["round", "trials", "B p50", "B p99", "B max", "A p50", "A p99", "B/A p50", "B polls"],
            rows,
        )
    )
    bound_ms = out["bound_s"] * 1000
    within = b["from_request_p99_ms"] <= bound_ms and b["never_denied"] == 0
    lines += [
        "",
        f"B (other replica): lag p50 {_f(b['lag_p50_ms'])} ms, p99 {_f(b['lag_p99_ms'])} ms, "
        f"max {_f(b['lag_max_ms'])} ms; from the revoke request: p50 "
        f"{_f(b['from_request_p50_ms'])} ms, p99 {_f(b['from_request_p99_ms'])} ms; "
        f"{b['first_poll_denied']}/{b['trials']} denied at the first evaluation, "
        f"{b['polls_mean']:.2f} evaluations on average, {b['never_denied']} never denied",
        f"A (accepting replica, baseline): lag p50 {_f(a['lag_p50_ms'])} ms, p99 "
        f"{_f(a['lag_p99_ms'])} ms; {a['first_poll_denied']}/{a['trials']} denied at the "
        f"first evaluation (expected: all)",
        f"one evaluation round trip (p50): B {_f(b['poll_p50_ms'])} ms, A {_f(a['poll_p50_ms'])} "
        f"ms; revoke answer on A (p50): {_f(b['revoke_p50_ms'])} ms",
        f"grant lag (issuance answer on A -> first permit on B): p50 {_f(b['grant_p50_ms'])} ms, "
        f"p99 {_f(b['grant_p99_ms'])} ms",
        f"bound: mission_max_stale_seconds = {out['bound_s']:.0f} s; B's p99 from the revoke "
        f"request {_f(b['from_request_p99_ms'])} ms is "
        f"{'WITHIN' if within else 'NOT within'} it",
    ]
    every_race = {name: [r for found in out["races"] for r in found[name]] for name in ("B", "A")}
    if every_race["B"]:
        rb, ra = race_stats(every_race["B"]), race_stats(every_race["A"])
        lines += [
            "",
            "Race (the replica polled on a second connection from the instant the revoke "
            "request is sent; ms from that instant):",
            "",
            table(
                [
                    "polled",
                    "trials",
                    "A answers p50",
                    "first deny p50",
                    "first deny p99",
                    "deny - answer p50",
                    "deny - answer p99",
                    "permits sent after answer",
                ],
                [
                    [
                        name,
                        str(int(r["trials"])),
                        _f(r["answer_p50_ms"]),
                        _f(r["deny_p50_ms"]),
                        _f(r["deny_p99_ms"]),
                        _f(r["deny_minus_answer_p50_ms"]),
                        _f(r["deny_minus_answer_p99_ms"]),
                        f"{int(r['permits_after_answer'])} in "
                        f"{int(r['trials_with_permit_after_answer'])} trials",
                    ]
                    for name, r in (("B", rb), ("A", ra))
                ],
            ),
        ]
    for problem in out["problems"][:10]:
        lines.append(f"problem: {problem}")
    problems = out.get("server_log_problems", {})
    lines.append(
        "server logs: "
        + (
            ", ".join(f"{name}: {len(found)} error line(s)" for name, found in problems.items())
            or "no errors"
        )
    )
    return "\n".join(lines)


def as_json(out: dict[str, Any], loads: tuple[str, str]) -> dict[str, Any]:
    rounds: list[dict[str, list[Trial]]] = out["rounds"]
    return {
        "benchmark": "replica_lag",
        "machine": machine_description(),
        "load_average": {"start": loads[0], "end": loads[1]},
        "bound_seconds": out["bound_s"],
        "rounds": [{"B": stats(r["B"]), "A": stats(r["A"])} for r in rounds],
        "B": stats([t for r in rounds for t in r["B"]]),
        "A": stats([t for r in rounds for t in r["A"]]),
        "race": {
            name: race_stats([r for found in out["races"] for r in found[name]])
            for name in ("B", "A")
        },
        "problems": out["problems"],
        "server_log_problems": out.get("server_log_problems", {}),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replica_lag", description=__doc__)
    parser.add_argument("--trials", type=int, default=200, help="per replica (B and A)")
    parser.add_argument("--rounds", type=int, default=3, help="the trials are split in rounds")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="how long one trial polls before it counts the replica as never denying",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured trials per replica")
    parser.add_argument(
        "--no-race", action="store_true", help="skip the trials that poll during the revoke"
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.trials < 1 or args.rounds < 1 or args.seconds <= 0:
        parser.error("--trials and --rounds must be at least 1, --seconds positive")
    args.rounds = min(args.rounds, args.trials)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_handler()
    start_load = load_average()
    try:
        with fleet("replica_lag", key_names=KEY_NAMES) as the_fleet:
            out = run(the_fleet, args)
            out["server_log_problems"] = {
                r.name: found for r in the_fleet.replicas if (found := r.log_problems())
            }
    except PostgresUnavailable as error:
        print(f"bench.replica_lag: {error}", file=sys.stderr)
        return 2
    loads = (start_load, load_average())
    print(render(out, loads))
    if args.json:
        print(json.dumps(as_json(out, loads)))
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
