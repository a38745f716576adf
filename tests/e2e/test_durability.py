"""An acknowledged write survives SIGKILL of the server (real subprocess, both backends)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, cli, create_key, proposal_body

pytestmark = pytest.mark.slow


def _proposal(n: int) -> dict[str, object]:
    return proposal_body(f"durability probe {n}", "agent-durable")


def test_sigkill_during_writes_loses_no_acknowledged_write(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    agent = create_key(server_env, "agent", "agent-durable")
    server = launch(servers, server_env, tmp_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write_until_killed(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    response = client.post(
                        "/v1/proposals",
                        json=_proposal(worker * 100_000 + n),
                        headers={"Authorization": f"Bearer {agent}"},
                    )
                except httpx.HTTPError:
                    return  # the server is gone; this write was never acknowledged
                if response.status_code == 202:
                    with lock:
                        acknowledged.append(response.json()["submission_id"])

    workers = [threading.Thread(target=write_until_killed, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    server.kill()
    stop.set()
    for worker in workers:
        worker.join(timeout=10)
    assert len(acknowledged) > 20, "the writers should have been acknowledged many times"

    restarted = launch(servers, server_env, tmp_path, "restarted")
    with httpx.Client(base_url=restarted.url, timeout=10.0) as client:
        missing = [
            submission_id
            for submission_id in acknowledged
            if client.get(
                f"/v1/proposals/{submission_id}", headers={"Authorization": f"Bearer {agent}"}
            ).status_code
            != 200
        ]
    assert missing == []
    restarted.stop()
    verify = cli(server_env, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
