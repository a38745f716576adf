"""Decision 0025 on a running server with its defaults: its decision log writer runs under
``SCHED_IDLE``; a neighbour that keeps every CPU busy starves it; the server replaces it with
one under ``nice`` alone and goes on answering, and every decision a client received is
logged exactly once."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.cpu_hogs import every_cpu_busy
from tests.e2e.conftest import launch
from tests.e2e.decision_load import DecisionLoad, credentials, logged_ids, mandate_token
from tests.e2e.server import ServerProcess, create_key, store_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not (hasattr(os, "SCHED_IDLE") and os.path.exists("/proc/self/schedstat")),
        reason="Linux scheduling policy and scheduler statistics",
    ),
]

#: Long enough for a starved writer to hold answers back and be looked at twice.
BUSY_SECONDS = 4.0


def _starved(url: str, operator: dict[str, str]) -> float:
    text = httpx.get(url + "/metrics", headers=operator, timeout=30.0).text
    found = re.search(
        r"^mission_ledger_decision_log_writer_starved_total (\S+)$", text, re.MULTILINE
    )
    assert found is not None, "the metric is missing"
    return float(found.group(1))


def test_a_decision_log_writer_starved_by_a_neighbour_is_replaced_and_nothing_is_lost(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    auth = credentials(env)
    operator = {"Authorization": "Bearer " + create_key(env, "operator", "operator-dl")}
    server = launch(servers, env, tmp_path, "a")
    token, _ = mandate_token(server.url, auth)
    load = DecisionLoad(token, auth["pep"])
    assert _starved(server.url, operator) == 0

    with every_cpu_busy():
        ends = time.monotonic() + BUSY_SECONDS
        asyncio.run(load.run([server.url], 4, lambda: time.monotonic() > ends))
        replaced = _starved(server.url, operator)
    server.stop()  # a graceful stop writes what is still queued

    assert load.failures == []
    assert replaced == 1
    received = Counter(r.evaluation_id for r in load.received)
    assert len(received) > 0
    assert Counter(logged_ids(postgres_url)) == received
