"""Access requests on PostgreSQL with two replicas: how fast requestable denials become
tasks and tasks become approvals, and how soon an approval granted on one replica permits
on the other.

Run: ``python -m bench.access_requests`` (``--help`` for options).

Two replicas A and B (``mission-ledger serve``) share one fresh PostgreSQL database. Each
round measures, one request at a time on a keep-alive connection to A:

* **submissions**: ``POST /access/v1/requests`` echoing a fresh requestable denial (the
  evaluation that mints it is not timed), against the baseline of plain proposals
  (``POST /v1/proposals``) in the same round: both are one event-sourced write;
* **approvals**: ``POST /v1/access-requests/{id}/approve`` of those tasks (an ES256-signed
  approval ``state`` per write), against approving the proposals
  (``POST /v1/proposals/{id}/approve``);

and then, trial by trial, **approval to permit**: a task is approved through A, and the
measured replica is asked for the task's status until it is approved, then re-evaluates
with ``context.approval`` until it permits. Time = A's approve answer -> the permit. The
subject is B (it learns of the approval by following the log); the baseline, interleaved,
is A itself (which answered the approval only once its own read models held it).

Rates are ``requests / sum of their round trips`` (one client, sequential); the server's
per-caller rate limit is lifted for the run (``ACCESS_REQUESTS_PER_MINUTE``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench._fleet import Fleet, fleet, install_sigterm_handler, progress, proposal_body
from bench._load import percentile
from bench._support import PostgresUnavailable, load_average, proof_of, table
from bench.replica_lag import Api

AGENT = "bench-agent"
RESOURCE = "https://erp.example.com"
KEY_NAMES = {"agent": AGENT, "approver": "bench-approver", "pep": "bench-pep"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.access_requests")
    parser.add_argument("--seconds", type=float, default=3.0, help="per write workload per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=40, help="approval-to-permit trials")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    return parser.parse_args(argv)


def _ok(status: int, body: Any, expected: tuple[int, ...], what: str) -> Any:
    if status not in expected:
        msg = f"{what}: HTTP {status} {body}"
        raise RuntimeError(msg)
    return body


@dataclass
class Bench:
    fleet: Fleet
    a: Api
    b: Api
    mission: str = ""
    token: str = ""
    seed: int = 0

    def call(
        self, api: Api, method: str, path: str, body: Any, role: str
    ) -> tuple[int, Any, float]:
        started = time.perf_counter()
        status, _, answer = api.call(method, path, body, self.fleet.auth(role))
        return status, answer, time.perf_counter() - started

    def proposal(self) -> dict[str, Any]:
        return proposal_body(AGENT, "alice", ["invoices.pay"], {"requires_action_approval": True})

    def setup(self) -> None:
        """A gated Mission and a Mandate on it (every invoices.pay is requestable)."""
        status, proposed, _ = self.call(self.a, "POST", "/v1/proposals", self.proposal(), "agent")
        submission = _ok(status, proposed, (202,), "proposal")["submission_id"]
        status, mission, _ = self.call(
            self.a, "POST", f"/v1/proposals/{submission}/approve", {}, "approver"
        )
        self.mission = str(_ok(status, mission, (201,), "approval")["id"])
        digest = hashlib.sha256(b"bench-access-requests").digest()
        jkt = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        body = {"actor": {"client_id": AGENT, "instance_id": "i-1"}, "cnf": {"jkt": jkt}}
        status, issued, _ = self.call(
            self.a, "POST", f"/v1/missions/{self.mission}/mandates", body, "agent"
        )
        self.token = str(_ok(status, issued, (201,), "mandate")["token"])

    def evaluation(self) -> dict[str, Any]:
        self.seed += 1
        return {
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            "action": {"name": "invoices.pay"},
            "resource": {"type": "api", "id": f"{RESOURCE}/invoices/{self.seed}"},
            "context": {"mandate": self.token, "proof": proof_of(self.token)},
        }

    def denial(self, api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
        """A fresh requestable denial: (the evaluation, its decision)."""
        request = self.evaluation()
        status, decision, _ = self.call(api, "POST", "/access/v1/evaluation", request, "pep")
        decision = _ok(status, decision, (200,), "evaluation")
        if "access_request" not in decision.get("context", {}):
            msg = f"the denial is not requestable: {decision}"
            raise RuntimeError(msg)
        return request, decision

    def submit(self, api: Api) -> tuple[str, float]:
        """Submit a fresh denial as an access request: (task id, the POST's round trip)."""
        request, decision = self.denial(api)
        access = decision["context"]["access_request"]
        body = {
            **request,
            "denial": {
                "evaluation_id": decision["context"]["evaluation_id"],
                "expires_at": access["expires_at"],
                "binding_token": access["binding_token"],
            },
        }
        status, task, elapsed = self.call(api, "POST", "/access/v1/requests", body, "pep")
        return str(_ok(status, task, (202,), "access request")["task"]["id"]), elapsed

    # ------------------------------------------------------------------ rates

    def rates(self, seconds: float) -> dict[str, float]:
        proposals: list[tuple[str, float]] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            status, proposed, elapsed = self.call(
                self.a, "POST", "/v1/proposals", self.proposal(), "agent"
            )
            proposals.append((_ok(status, proposed, (202,), "proposal")["submission_id"], elapsed))
        tasks: list[tuple[str, float]] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            tasks.append(self.submit(self.a))
        approved_proposals = []
        for submission, _ in proposals:
            status, body, elapsed = self.call(
                self.a, "POST", f"/v1/proposals/{submission}/approve", {}, "approver"
            )
            _ok(status, body, (201,), "proposal approval")
            approved_proposals.append(elapsed)
        approved_tasks = []
        for task_id, _ in tasks:
            status, body, elapsed = self.call(
                self.a, "POST", f"/v1/access-requests/{task_id}/approve", {}, "approver"
            )
            _ok(status, body, (200,), "task approval")
            approved_tasks.append(elapsed)
        return {
            "proposals_per_s": len(proposals) / sum(e for _, e in proposals),
            "submissions_per_s": len(tasks) / sum(e for _, e in tasks),
            "proposal_approvals_per_s": len(approved_proposals) / sum(approved_proposals),
            "task_approvals_per_s": len(approved_tasks) / sum(approved_tasks),
            "submissions": len(tasks),
        }

    # ------------------------------------------------------------------ approval to permit

    def approval_to_permit(self, target: Api) -> float:
        """Approve a fresh task through A; ms until ``target`` permits under the approval."""
        request, decision = self.denial(self.a)
        access = decision["context"]["access_request"]
        body = {
            **request,
            "denial": {
                "expires_at": access["expires_at"],
                "binding_token": access["binding_token"],
            },
        }
        status, task, _ = self.call(self.a, "POST", "/access/v1/requests", body, "pep")
        task_id = _ok(status, task, (202,), "access request")["task"]["id"]
        status, approved, _ = self.call(
            self.a, "POST", f"/v1/access-requests/{task_id}/approve", {}, "approver"
        )
        _ok(status, approved, (200,), "task approval")
        answered = time.perf_counter()
        deadline = answered + 30
        approval = None
        while time.perf_counter() < deadline:
            if approval is None:
                status, handle, _ = self.call(
                    target, "GET", f"/access/v1/requests/{task_id}", None, "pep"
                )
                handle = _ok(status, handle, (200,), "task status")
                if handle["task"]["status"] == "approved":
                    approval = handle["result"]["approval"]
                continue
            again = {**request, "context": {**request["context"], "approval": approval}}
            status, decided, _ = self.call(target, "POST", "/access/v1/evaluation", again, "pep")
            if _ok(status, decided, (200,), "re-evaluation")["decision"] is True:
                return (time.perf_counter() - answered) * 1000
        msg = f"task {task_id}: no permit on port {target.port} within 30 s of the approval"
        raise RuntimeError(msg)


def run(the_fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    a, b = the_fleet.replicas[0], the_fleet.replicas[1]
    bench = Bench(the_fleet, Api(a.port), Api(b.port))
    try:
        bench.setup()
        bench.approval_to_permit(bench.b)  # warm-up
        bench.approval_to_permit(bench.a)
        rounds = []
        lags: dict[str, list[float]] = {"B": [], "A": []}
        per_round = math.ceil(args.trials / args.rounds)
        for round_no in range(args.rounds):
            rates = bench.rates(args.seconds)
            for i in range(per_round):
                for name in ("B", "A") if i % 2 == 0 else ("A", "B"):  # ABBA against drift
                    lags[name].append(bench.approval_to_permit(bench.b if name == "B" else bench.a))
            rounds.append(rates)
            progress(
                f"  round {round_no + 1}/{args.rounds}: {rates['submissions_per_s']:.0f} "
                f"submissions/s, {rates['task_approvals_per_s']:.0f} approvals/s"
            )
    finally:
        bench.a.close()
        bench.b.close()
    return {"rounds": rounds, "lags": lags}


def render(out: dict[str, Any], loads: tuple[str, str]) -> str:
    rows = []
    for index, r in enumerate(out["rounds"], 1):
        rows.append(
            [
                str(index),
                f"{r['submissions_per_s']:.0f}",
                f"{r['proposals_per_s']:.0f}",
                f"{r['submissions_per_s'] / r['proposals_per_s']:.2f}",
                f"{r['task_approvals_per_s']:.0f}",
                f"{r['proposal_approvals_per_s']:.0f}",
                f"{r['task_approvals_per_s'] / r['proposal_approvals_per_s']:.2f}",
            ]
        )
    lag_b, lag_a = out["lags"]["B"], out["lags"]["A"]
    b50, b99, a50, a99 = (
        percentile(lag_b, 50),
        percentile(lag_b, 99),
        percentile(lag_a, 50),
        percentile(lag_a, 99),
    )
    return "\n".join(
        [
            f"load average at start {loads[0]}, at end {loads[1]}",
            "",
            "Writes through A, one at a time (per second of round trip); baselines: plain "
            "proposals and their approvals, same round:",
            "",
            table(
                [
                    "round",
                    "submissions/s",
                    "proposals/s",
                    "ratio",
                    "approvals/s",
                    "proposal approvals/s",
                    "ratio",
                ],
                rows,
            ),
            "",
            f"Approval through A -> first permitted re-evaluation ({len(lag_b)} trials each, "
            "interleaved):",
            f"  on B (the other replica): p50 {b50:.2f} ms, p99 {b99:.2f} ms",
            f"  on A (baseline, the approving replica): p50 {a50:.2f} ms, p99 {a99:.2f} ms",
            f"  B/A p50 {b50 / a50:.2f}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    install_sigterm_handler()
    start_load = load_average()
    try:
        with fleet(
            "access_requests",
            key_names=KEY_NAMES,
            extra_env={"MISSION_LEDGER_ACCESS_REQUESTS_PER_MINUTE": "100000"},
        ) as the_fleet:
            out = run(the_fleet, args)
            problems = {r.name: found for r in the_fleet.replicas if (found := r.log_problems())}
    except PostgresUnavailable as error:
        print(f"bench.access_requests: {error}", file=sys.stderr)
        return 2
    loads = (start_load, load_average())
    print(render(out, loads))
    if problems:
        print(f"server log problems: {problems}")
    if args.json:
        print(json.dumps({**out, "load_average": loads, "server_log_problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
