"""Acceptance (issue 11, metering): two replicas on one PostgreSQL, 32 concurrent clients
spending against ``max_budget`` 1,000.00 USD with random amounts, then 32 against a second
Mission's ``max_calls`` per call class; some reservations committed in full, some lower, some
aborted, some left to expire; each usage report sent to a replica chosen at random.

Afterwards, from the Meters' event logs (as an auditor reads them over the API): committed +
outstanding never exceeded a bound at any position, every reservation ended exactly once, the
final ``spent`` equals the sum of the committed usage events exactly, and that sum equals what
the clients were told was committed.

``METERING_STRESS_SECONDS`` sets how long the clients spend, half on each Mission (default
16); on a slow machine they go on until each Mission has denied a decision for its bound.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from mission_ledger_pep import PdpClient, UsageReporter

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, create_key, store_env
from tests.mandate_builders import proof_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

AGENT = "agent-m"
ERP = "https://erp.example.com"
CLIENTS = 32
SECONDS = float(os.environ.get("METERING_STRESS_SECONDS", "16"))
TTL_SECONDS = 2
BUDGET = Decimal("1000.00")
CLASS_LIMITS = {"read": 120, "write": 60}
#: However slow the machine, the clients go on until both Missions have denied a decision for
#: a bound (so the run reached the bounds), for at most this long per Mission.
MAX_SECONDS = 180.0


@dataclass
class Tally:
    """What the clients saw (a lock guards it: 32 threads add to it)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: dict[str, Decimal] = field(default_factory=dict)  # evaluation id -> amount
    decisions: Counter[str] = field(default_factory=Counter)
    reports: Counter[str] = field(default_factory=Counter)
    #: Which Missions ("budget", "calls") have denied a decision for their bound.
    exceeded: set[str] = field(default_factory=set)

    def add(self, counter: str, key: str) -> None:
        with self.lock:
            (self.decisions if counter == "decision" else self.reports)[key] += 1


def _jkt(seed: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")


def _mission(url: str, auth: dict[str, dict[str, str]], controls: Any, entries: Any) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        body = {
            "intent": {
                "goal": "metered spending",
                "resources": [ERP],
                "expires_at": "2099-01-01T00:00:00Z",
                "controls": controls,
            },
            "authorization_details": entries,
            "subject": {"iss": "https://idp.example.com", "sub": "alice"},
            "client_id": AGENT,
        }
        proposal = client.post("/v1/proposals", json=body, headers=auth["agent"])
        assert proposal.status_code == 202, proposal.text
        approved = client.post(
            f"/v1/proposals/{proposal.json()['submission_id']}/approve",
            json={},
            headers=auth["approver"],
        )
        assert approved.status_code == 201, approved.text
        return str(approved.json()["id"])


def _token(url: str, auth: dict[str, dict[str, str]], mission: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as client:
        issued = client.post(
            f"/v1/missions/{mission}/mandates",
            json={
                "actor": {"client_id": AGENT, "instance_id": "i-1"},
                "cnf": {"jkt": _jkt(mission)},
                "ttl_seconds": 3600,
            },
            headers=auth["agent"],
        )
        assert issued.status_code == 201, issued.text
        return str(issued.json()["token"])


def _entry(actions: list[str], **constraints: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": ERP,
        "resource_match": "prefix",
        "actions": actions,
    }
    if constraints:
        value["constraints"] = constraints
    return value


def _decision(token: str, action: str, amount: str | None) -> dict[str, Any]:
    properties = {} if amount is None else {"amount": amount, "currency": "USD"}
    return {
        "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
        "action": {"name": action, "properties": properties},
        "resource": {"type": "api", "id": f"{ERP}/invoices/1"},
        "context": {"mandate": token, "proof": proof_of(token)},
    }


def _spend(
    urls: list[str], pep: dict[str, str], kind: str, token: str, tally: Tally, seed: int
) -> None:
    """One client: decisions on one replica, usage reports to one chosen at random, until the
    phase's time is up and its Mission has denied a decision for its bound."""
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=url, timeout=30, headers=pep) for url in urls]
    started = time.monotonic()
    try:
        while time.monotonic() < started + SECONDS / 2 or (
            kind not in tally.exceeded and time.monotonic() < started + MAX_SECONDS
        ):
            if kind == "budget":
                cents = rng.randint(1, 2000)
                amount: str | None = f"{cents // 100}.{cents % 100:02d}"
                body = _decision(token, "invoices.pay", amount)
            else:
                amount = None
                body = _decision(token, rng.choice(["invoices.read", "invoices.pay"]), None)
            answer = rng.choice(clients).post("/access/v1/evaluation", json=body).json()
            if not answer["decision"]:
                reason = str(answer["context"]["reason"])
                tally.add("decision", reason)
                if reason == "budget_exceeded":
                    with tally.lock:
                        tally.exceeded.add(kind)
                continue
            tally.add("decision", "permit")
            evaluation_id = answer["context"]["evaluation_id"]
            fate = rng.random()
            if fate < 0.15:
                tally.add("report", "left to expire")
                continue
            report: dict[str, Any] = {"evaluation_id": evaluation_id, "outcome": "executed"}
            if fate < 0.40:
                report["outcome"] = "aborted"
            elif fate < 0.65 and amount is not None:
                lower = rng.randint(0, int(Decimal(amount) * 100))
                report["amount"] = f"{lower // 100}.{lower % 100:02d}"
            reply = rng.choice(clients).post("/v1/usage", json=report)
            outcome = reply.json().get("outcome") if reply.status_code == 200 else reply.status_code
            tally.add("report", str(outcome))
            if reply.status_code == 200 and outcome == "executed" and amount is not None:
                with tally.lock:
                    tally.committed[evaluation_id] = Decimal(reply.json()["amount"])
    finally:
        for client in clients:
            client.close()


def _events(url: str, auditor: dict[str, str], mission: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/v1/missions/{mission}/usage/events", headers=auditor, timeout=60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def _usage(url: str, auditor: dict[str, str], mission: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/missions/{mission}", headers=auditor, timeout=30)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["usage"])


def _reservations(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The reservations an event makes: one (``Reserved``, central or under a lease) or
    those a replica drew from its lease and recorded together (``LeaseDrawn``)."""
    data = event["data"]
    if event["type"] == "Reserved":
        return [data]
    return [{**held, "lease_id": data["lease_id"]} for held in data["reservations"]]


def _ended(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log with each ``UsageReported`` event (the usage reports one group recorded
    together) read as the events it stands for, one a report, at its position:
    ``UsageCommitted`` (``executed``: its amount spent) or ``Released`` (``aborted``)."""
    out: list[dict[str, Any]] = []
    for event in events:
        if event["type"] != "UsageReported":
            out.append(event)
            continue
        actor = event["data"]["actor"]
        for report in event["data"]["reports"]:
            kind = "UsageCommitted" if report["outcome"] == "executed" else "Released"
            out.append({**event, "type": kind, "data": {**report, "actor": actor}})
    return out


def _replay_budget(events: list[dict[str, Any]]) -> tuple[Decimal, Counter[str]]:
    """Walk the log in position order: committed + outstanding (reservations, and what the
    replicas' budget leases hold unused) <= the budget after every event; every reservation
    ends once, every lease ends once. Returns the sum of committed usage and the outcomes."""
    outstanding: dict[str, Decimal] = {}
    leased: dict[str, Decimal] = {}
    ended: Counter[str] = Counter()
    spent = Decimal(0)
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    for event in _ended(events):
        data = event["data"]
        if event["type"] == "LeaseGranted":
            leased[data["lease_id"]] = Decimal(data["amount"])
        elif event["type"] == "LeaseReturned":
            leased.pop(data["lease_id"])
            ended[f"lease {data['outcome']}"] += 1
        elif event["type"] in ("Reserved", "LeaseDrawn"):
            for held in _reservations(event):
                outstanding[held["evaluation_id"]] = Decimal(held["amount"] or 0)
                if held.get("lease_id") is not None:
                    leased[held["lease_id"]] -= Decimal(held["amount"] or 0)
                    assert leased[held["lease_id"]] >= 0, event["position"]
                    ended["under a lease"] += 1
        elif event["type"] == "UsageCommitted":
            held = outstanding.pop(data["evaluation_id"])
            assert Decimal(data["amount"]) <= held
            spent += Decimal(data["amount"])
            ended["executed"] += 1
        elif event["type"] == "Released":
            outstanding.pop(data["evaluation_id"])
            ended[data["outcome"]] += 1
        assert spent + sum(outstanding.values()) + sum(leased.values()) <= BUDGET, event["position"]
    assert outstanding == {}
    assert leased == {}
    return spent, ended


def _replay_calls(events: list[dict[str, Any]]) -> Counter[str]:
    """The same for the calls of each class: committed + reserved + leased <= its max at
    every event."""
    classes: dict[str, str] = {}
    counted: Counter[str] = Counter()
    leased: dict[str, Counter[str]] = {}
    open_ones: set[str] = set()
    for event in _ended(events):
        data = event["data"]
        if event["type"] == "LeaseGranted":
            leased[data["lease_id"]] = Counter(data["call_limits"])
        elif event["type"] == "LeaseReturned":
            leased.pop(data["lease_id"])
        elif event["type"] in ("Reserved", "LeaseDrawn"):
            for held in _reservations(event):
                classes[held["evaluation_id"]] = held["call_class"]
                counted[held["call_class"]] += 1
                open_ones.add(held["evaluation_id"])
                if held.get("lease_id") is not None:
                    leased[held["lease_id"]][held["call_class"]] -= 1
                    assert leased[held["lease_id"]][held["call_class"]] >= 0, event["position"]
        elif event["type"] == "UsageCommitted":
            open_ones.remove(data["evaluation_id"])
        elif event["type"] == "Released":
            open_ones.remove(data["evaluation_id"])
            counted[classes[data["evaluation_id"]]] -= 1
        for name, limit in CLASS_LIMITS.items():
            held = sum(lease[name] for lease in leased.values())
            assert counted[name] + held <= limit, event["position"]
    assert open_ones == set()
    assert leased == {}
    return counted


def _replicas(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path, **settings: str
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Two servers on one database (``settings``: MISSION_LEDGER_ settings for both), and the
    headers of one key per role."""
    env = store_env(database_url=postgres_url)
    env.update({f"MISSION_LEDGER_{name}": value for name, value in settings.items()})
    auth = {
        role: {
            "Authorization": "Bearer " + create_key(env, role, AGENT if role == "agent" else role)
        }
        for role in ("agent", "approver", "pep", "auditor")
    }
    return [launch(servers, env, tmp_path, name).url for name in ("a", "b")], auth


def test_two_replicas_never_take_a_meter_past_its_bound(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    urls, auth = _replicas(
        postgres_url,
        servers,
        tmp_path,
        RESERVATION_TTL_SECONDS=str(TTL_SECONDS),
        SCHEDULER_INTERVAL_SECONDS="0.2",
    )
    budget_mission = _mission(
        urls[0],
        auth,
        {"max_budget": {"amount": "1000.00", "currency": "USD"}},
        [_entry(["invoices.pay"])],
    )
    calls_mission = _mission(
        urls[0],
        auth,
        {"max_calls": [{"call_class": n, "max": m} for n, m in CLASS_LIMITS.items()]},
        [
            _entry(["invoices.read"], call_class="read"),
            _entry(["invoices.pay"], call_class="write"),
        ],
    )
    tokens = [_token(urls[0], auth, m) for m in (budget_mission, calls_mission)]
    time.sleep(1.0)  # both replicas hold the Mandates (the follower's idle poll is 1 s at most)

    tally = Tally()
    for kind, token in zip(("budget", "calls"), tokens, strict=True):
        threads = [
            threading.Thread(
                target=_spend, args=(urls, auth["pep"], kind, token, tally, seed), daemon=True
            )
            for seed in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(MAX_SECONDS + 60)
    time.sleep(TTL_SECONDS + 2)  # the reservations left unreported expire and are released

    budget_events = _events(urls[1], auth["auditor"], budget_mission)
    spent, ended = _replay_budget(budget_events)
    usage = _usage(urls[1], auth["auditor"], budget_mission)
    assert Decimal(usage["spent"]) == spent
    assert Decimal(usage["reserved"]) == 0
    assert spent == sum(tally.committed.values(), Decimal(0))
    assert Decimal(usage["remaining"]) == BUDGET - spent
    # The run meant something: every kind of ending happened, most permits came from a
    # replica's lease (no commit before the answer), and the bounds were reached.
    assert min(ended[kind] for kind in ("executed", "aborted", "expired")) > 0, ended
    assert ended["under a lease"] > 0, ended
    assert tally.exceeded == {"budget", "calls"}, tally.decisions

    counted = _replay_calls(_events(urls[0], auth["auditor"], calls_mission))
    calls = _usage(urls[0], auth["auditor"], calls_mission)["call_classes"]
    assert {c["call_class"]: c["calls"] for c in calls} == dict(counted)


def _fifty_dollar_mission(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> tuple[list[str], dict[str, dict[str, str]], str, str]:
    """Two replicas, and a Mission with a 50.00 USD budget and a Mandate token on it."""
    urls, auth = _replicas(postgres_url, servers, tmp_path)
    mission = _mission(
        urls[0],
        auth,
        {"max_budget": {"amount": "50.00", "currency": "USD"}},
        [_entry(["invoices.pay"])],
    )
    return urls, auth, mission, _token(urls[0], auth, mission)


def test_the_pep_toolkit_reports_usage_to_another_replica(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """``PdpClient.report_usage`` against the real service: the permit is decided on one
    replica, its usage reported to the other, and the Mission shows it spent."""
    urls, auth, mission, token = _fifty_dollar_mission(postgres_url, servers, tmp_path)
    pep_key = auth["pep"]["Authorization"].removeprefix("Bearer ")
    with PdpClient(urls[0], pep_key, timeout=10) as a, PdpClient(urls[1], pep_key, timeout=10) as b:
        decision = a.evaluate(_decision(token, "invoices.pay", "40.00"))
        assert decision.allowed, decision.context
        reported = b.report_usage(decision.context["evaluation_id"], "executed", amount="12.50")
        assert reported.status_code == 200, reported.text
        assert reported.json()["outcome"] == "executed"
        refused = b.evaluate(_decision(token, "invoices.pay", "37.51"))
        assert refused.reason == "budget_exceeded"
    assert _usage(urls[1], auth["auditor"], mission)["spent"] == "12.50"


def test_the_pep_toolkit_batches_usage_reports_in_the_background(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """``UsageReporter`` against the real service: permits decided on one replica (from its
    budget lease), their reports gathered and sent in batches to the other; every report is
    answered and the Mission shows exactly what was committed."""
    urls, auth, mission, token = _fifty_dollar_mission(postgres_url, servers, tmp_path)
    pep_key = auth["pep"]["Authorization"].removeprefix("Bearer ")
    answers: list[dict[str, Any]] = []
    with PdpClient(urls[0], pep_key, timeout=10) as a, PdpClient(urls[1], pep_key, timeout=10) as b:
        with UsageReporter(b, interval=0.2, on_result=answers.append) as reporter:
            for _ in range(20):
                decision = a.evaluate(_decision(token, "invoices.pay", "1.00"))
                assert decision.allowed, decision.context
                reporter.report(decision.context["evaluation_id"], "executed", amount="0.50")
            assert reporter.flush(timeout=30)
        assert reporter.batches < 20
    assert [a["status"] for a in answers] == [200] * 20
    assert _usage(urls[1], auth["auditor"], mission)["spent"] == "10.00"
