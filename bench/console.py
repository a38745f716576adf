"""The console's inbox page: render time with 10,000 and 100,000 pending items (proposals and
access requests), against the same page with 100 pending items measured in the same run (the
baseline).

Subject: the service app itself (``create_app``, started through its lifespan, on a fresh
store), an approver signed in to the console with an API key, and ``GET /console/inbox``
(the first page, oldest first) and a page deep inside the inbox (``?cursor=`` of the
item in the middle), server time (an ASGI wrapper: from the request's start to its last
body byte; the test client's own work is left out): the route class, the session (a row of
``console_sessions``, read from the store on every request), the read-model queries (26
rows of ``proposal_board`` and of ``access_request_board``, each by its ``(status,
created_position)`` index, merged in log order), thawing the snapshots, rendering the
plain-language authority and denials and the template.

The inbox is filled through its own read models: ``ProposalBoard.apply`` and
``AccessRequestBoard.apply`` of ``Submitted`` events (made by ``Proposal.submit`` and
``AccessRequest.submit``, as the write side makes them; one item in four an access
request), without the event store (writing 100,000 real items would take minutes and
measure the write path, not the page). A page whose time grew with the inbox's size would
show a ratio well above 1 against the 100-item baseline.

    python -m bench.console [--rounds 200] [--sizes 10000 100000] [--backend sqlite] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.app import create_app
from bench._support import (
    PostgresServer,
    PostgresUnavailable,
    load_average,
    machine_description,
    table,
)
from ledger.domain.access_requests import AccessRequest, DeniedRequest, Requester
from ledger.domain.actors import Actor
from ledger.domain.canonical import intent_hash, proposal_hash
from ledger.domain.events import LedgerEvent
from ledger.domain.proposals import Proposal, Submission
from ledger.domain.roles import Role
from ledger.domain.subjects import PrincipalIdentity
from ledger.persistence.migrations import migrate
from ledger.settings import Settings
from projections.aggregate_tables import encode_cursor
from projections.follower import Item

BASELINE = 100
FIRST_POSITION = 1_000_000_000  # synthetic positions, far past the real log
ISSUER = "http://127.0.0.1:8080"
AGENT = Actor(type="api_key", name="agent-1", role="agent", client_id="agent-1")
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def intent(now_iso: str) -> dict[str, Any]:
    return {
        "goal": "Reconcile the Q3 invoices and pay the approved ones",
        "resources": ["https://erp.example.com"],
        "expires_at": now_iso,
    }


AUTHORITY = [
    {
        "type": "mission_resource_access",
        "resource": "https://erp.example.com",
        "actions": ["invoices.read", "invoices.pay", "reports.*"],
        "constraints": {"max_amount": {"amount": "500", "currency": "EUR"}},
    }
]


TASK_EVERY = 4  # one inbox item in four is an access request


def access_request(index: int, now: Any) -> AccessRequest:
    """A pending access request, as ``AccessRequest.submit`` records one."""
    return AccessRequest.submit(
        task_id=f"tsk_bench{index:09d}",
        issuer=ISSUER,
        denied=DeniedRequest(
            subject={"type": "agent", "id": "agent-1"},
            resource={"type": "api", "id": "https://erp.example.com/invoices/7"},
            action={"name": "invoices.pay", "properties": {"amount": "120", "currency": "EUR"}},
            context={"mandate": "m", "proof": {"jkt": "k"}},
            reason="approval_required",
            template="mission_gate",
            evaluation_id=f"ev_bench{index:09d}",
            binding_hash="h",
            binding_jti=f"jti{index}",
            denial_expires_at=now + timedelta(minutes=10),
        ),
        requester=Requester(
            actor=Actor(type="api_key", name="pep-1", role="pep"),
            identity=PrincipalIdentity(iss=ISSUER, sub="pep-1"),
            scope="api_key::pep-1",
            client_id="agent-1",
            mission_id="msn_bench",
            mission_subject={"iss": "https://idp.example.com", "sub": "alice"},
            required_acr=None,
        ),
        justification="month-end close: the supplier must be paid today",
        requested_until=None,
        expires_at=now + timedelta(days=3650),
        now=now,
    )


def fill_inbox(app: Any, count: int) -> None:
    """``count`` pending items in the inbox's read models (see the module docstring)."""
    services = app.state.services
    now = services.clock.now()
    expires = now + timedelta(days=3650)
    raw_intent = intent(expires.strftime("%Y-%m-%dT%H:%M:%SZ"))
    submission = Submission(
        issuer=ISSUER,
        client_id="agent-1",
        instance_id=None,
        subject={"iss": "https://idp.example.com", "sub": "alice"},
        intent=raw_intent,
        proposed_authority=AUTHORITY,
        intent_hash=intent_hash(ISSUER, raw_intent),
        proposal_hash=proposal_hash(ISSUER, AUTHORITY),
        expires_at=expires,
        predecessor=None,
    )
    board = services.proposals
    tasks = services.access_requests
    batch = 5_000
    for start in range(0, count, batch):
        with services.ledger.database.transaction() as cur:
            for index in range(start, min(count, start + batch)):
                target: Any
                if index % TASK_EVERY == TASK_EVERY - 1:
                    aggregate: Any = access_request(index, now)
                    target = tasks
                else:
                    aggregate = Proposal.submit(
                        proposal_id=f"prp_bench{index:09d}",
                        submission=submission,
                        actor=AGENT,
                        now=now,
                    )
                    target = board
                (event,) = aggregate.collect_events()
                assert isinstance(event, LedgerEvent)
                topic = str(type(event).TOPIC)  # type: ignore[attr-defined]
                target.apply(cur, Item(position=FIRST_POSITION + index, topic=topic, event=event))


class ServerTimer:
    """ASGI wrapper: the server's time per request, from its start to its last body byte
    handed to the server (what a client's network and parsing would add is left out)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.samples.append((time.perf_counter() - started_at) * 1000)
            await send(message)

        await self.app(scope, receive, timed)


@contextmanager
def started(settings: Settings) -> Iterator[tuple[TestClient, Any, ServerTimer]]:
    app = create_app(settings)
    timer = ServerTimer(app)
    with TestClient(timer, follow_redirects=False) as client:
        yield client, app, timer


def signed_in(client: TestClient, app: Any) -> None:
    key = app.state.services.ledger.issue_api_key(
        name="approver-1", role=Role.APPROVER, actor=Actor(type="cli", name="bench")
    ).secret
    token = CSRF.search(client.get("/console/signin").text)
    assert token is not None
    response = client.post("/console/signin/key", data={"csrf": token.group(1), "api_key": key})
    assert response.status_code == 303, response.text


def middle_cursor(count: int) -> str:
    """The cursor of the page that starts in the middle of the inbox."""
    return encode_cursor(FIRST_POSITION + count // 2)


def time_pages(
    client: TestClient, timer: ServerTimer, rounds: int, params: dict[str, str]
) -> list[float]:
    """Server times of ``rounds`` inbox pages."""
    timer.samples.clear()
    for _ in range(rounds):
        response = client.get("/console/inbox", params=params)
        assert response.status_code == 200, response.text
        assert response.text.count('class="card"') == 25
        assert "Access request from" in response.text
    return list(timer.samples)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(settings: Settings, count: int, rounds: int) -> dict[str, Any]:
    with started(settings) as (client, app, timer):
        filled_at = time.perf_counter()
        fill_inbox(app, count)
        fill_seconds = time.perf_counter() - filled_at
        signed_in(client, app)
        time_pages(client, timer, max(5, rounds // 10), {})  # warm-up
        first = time_pages(client, timer, rounds, {})
        deep = time_pages(client, timer, rounds, {"cursor": middle_cursor(count)})
    return {
        "pending": count,
        "fill_seconds": round(fill_seconds, 2),
        "first_page_ms": summary(first),
        "deep_page_ms": summary(deep),
    }


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


@contextmanager
def store(backend: str, label: str) -> Iterator[Settings]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"ml-bench-console-{label}-") as tmp:
            yield Settings(data_dir=Path(tmp) / "data", gc_freeze=False)
        return
    server = PostgresServer.from_env()
    server.version()
    with server.database(f"console_{label}") as url:
        settings = Settings(
            database_url=url,
            key_encryption_key=SecretStr("lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA"),
            gc_freeze=False,
        )
        migrate(settings)
        yield settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    parser.add_argument("--rounds", type=int, default=200, help="page loads per measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="(ignored: rounds count)")
    args, _ = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    rounds = max(20, args.rounds)
    print(f"load average at start: {load_average()}", flush=True)
    results = []
    try:
        for count in [BASELINE, *args.sizes]:
            with store(args.backend, str(count)) as settings:
                results.append(measure(settings, count, rounds))
            print(f"  measured {count:,} pending", flush=True)
    except PostgresUnavailable as error:
        print(error, file=sys.stderr)
        return 2
    base = results[0]
    rows = []
    for result in results:
        first, deep = result["first_page_ms"], result["deep_page_ms"]
        rows.append(
            [
                f"{result['pending']:,}",
                f"{first['p50']:.1f}",
                f"{first['p99']:.1f}",
                f"{deep['p50']:.1f}",
                f"{deep['p99']:.1f}",
                f"{first['p99'] / base['first_page_ms']['p99']:.2f}",
            ]
        )
    print(
        table(
            [
                "pending",
                "first p50 ms",
                "first p99 ms",
                "deep p50 ms",
                "deep p99 ms",
                "first p99 / 100",
            ],
            rows,
        )
    )
    worst = max(max(r["first_page_ms"]["p99"], r["deep_page_ms"]["p99"]) for r in results)
    print(f"target: p99 < 50 ms; worst p99 here {worst:.1f} ms ({args.backend}, {rounds} loads)")
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine_description(),
                    "backend": args.backend,
                    "rounds": rounds,
                    "results": results,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
