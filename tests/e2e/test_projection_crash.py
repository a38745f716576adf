"""Kill the server while its follower applies events; after a restart the read models equal
a fresh rebuild from position 0 (nothing applied twice, nothing skipped)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.server import (
    PEP_SCOPE,
    ServerProcess,
    cli,
    create_key,
    proposal_body,
    settings_of,
)
from tests.read_model_dump import dump

pytestmark = pytest.mark.slow


def _proposal(n: int) -> dict[str, object]:
    return proposal_body(f"crash probe {n}", "agent-crash")


def test_read_models_equal_a_rebuild_after_a_crash(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    agent = {"Authorization": "Bearer " + create_key(server_env, "agent", "agent-crash")}
    approver = {"Authorization": "Bearer " + create_key(server_env, "approver", "approver-c")}
    operator = {"Authorization": "Bearer " + create_key(server_env, "operator", "operator-c")}
    pep = {"Authorization": "Bearer " + create_key(server_env, "pep", "pep-c")}
    server = launch(servers, server_env, tmp_path)
    scoped = {"resources": PEP_SCOPE}
    assert httpx.post(server.url + "/ssf/streams", json=scoped, headers=pep).status_code == 201
    stop = threading.Event()

    def write(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    proposal = client.post(
                        "/v1/proposals", json=_proposal(worker * 10_000 + n), headers=agent
                    ).json()
                    mission = client.post(
                        f"/v1/proposals/{proposal['submission_id']}/approve",
                        json={},
                        headers=approver,
                    ).json()
                    client.post(
                        f"/v1/missions/{mission['id']}/lifecycle",
                        json={"operation": "suspend", "reason": "crash"},
                        headers=operator,
                    )
                except (httpx.HTTPError, KeyError, ValueError):
                    return

    writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for writer in writers:
        writer.start()
    time.sleep(2.0)
    server.kill()
    stop.set()
    for writer in writers:
        writer.join(timeout=10)

    # The issuer is part of every SET (iss, and the txn derived from it): the restart and the
    # rebuild below run under the same issuer, as every process of one deployment does.
    restarted = ServerProcess(server_env, tmp_path / "restarted.log", port=server.port).start()
    servers.append(restarted)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready = httpx.get(restarted.url + "/readyz").json()
        if ready.get("lag") == 0:
            break
        time.sleep(0.1)
    restarted.stop()
    settings = settings_of(server_env)
    incremental = dump(settings)
    assert len(incremental["mission_board"]) > 5
    for name in ("proposal_board", "mission_board", "mandate_register", "signal_log"):
        done = cli(
            {**server_env, "MISSION_LEDGER_ISSUER": server.url}, "projections", "rebuild", name
        )
        assert done.returncode == 0, done.stderr
    assert dump(settings) == incremental
