"""Acceptance (issue 13, decision log): after a decision load on two replicas (two server
processes, one PostgreSQL), every ``evaluation_id`` a client received is in the decision
log exactly once, and the log holds nothing else.

The load is ``DECISION_LOG_E2E_DECISIONS`` decisions (default 3,000 in the suite): 16
clients per replica sending single evaluations (permits and denials), batches of four and
search calls. The acceptance figure is 100,000 (``DECISION_LOG_E2E_DECISIONS=100000``,
``--timeout 0``): on 2026-12-04 on the 2-vCPU VM, 100,058 decisions in 580 s, 100,058
records, every id exactly once (bench/README.md, "The decision log").
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.decision_load import (
    AGENT,
    ERP,
    DecisionLoad,
    Received,
    credentials,
    logged_ids,
    mandate_token,
)
from tests.e2e.server import ServerProcess, store_env
from tests.mandate_builders import proof_of

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DECISIONS = int(os.environ.get("DECISION_LOG_E2E_DECISIONS", "3000"))


def test_every_decision_received_on_two_replicas_is_logged_exactly_once(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    auth = credentials(env)
    a = launch(servers, env, tmp_path, "a")
    b = launch(servers, env, tmp_path, "b")
    token, position = mandate_token(a.url, auth)
    load = DecisionLoad(token, auth["pep"])
    # B answers once it holds the Mandate issued on A.
    first = httpx.post(
        b.url + "/access/v1/evaluation",
        json={
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api", "id": ERP},
            "context": {
                "mandate": token,
                "proof": proof_of(token),
                "consistency": {"min_position": position},
            },
        },
        headers=auth["pep"],
        timeout=10.0,
    ).json()
    assert first["decision"] is True, first
    load.received.append(Received(first["context"]["evaluation_id"], time.monotonic()))

    started = time.monotonic()
    asyncio.run(load.run([a.url, b.url], 16, lambda: len(load.received) >= DECISIONS))
    seconds = time.monotonic() - started
    assert load.failures == []
    # A graceful stop writes what is still queued (the lifespan flushes the writer).
    a.stop()
    b.stop()

    received = Counter(r.evaluation_id for r in load.received)
    logged = Counter(logged_ids(postgres_url))
    print(
        f"\n{len(load.received)} decisions in {seconds:.1f} s on two replicas "
        f"({len(load.received) / seconds:.0f}/s); {sum(logged.values())} records logged"
    )
    assert len(load.received) >= DECISIONS
    assert max(received.values()) == 1  # evaluation ids are unique across replicas
    assert max(logged.values()) == 1  # no record twice
    assert logged == received  # every decision received is logged, and nothing else
