"""Several server processes on one PostgreSQL database."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, create_key, store_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _approve_mission(url: str, agent: str, approver: str) -> str:
    body = {
        "intent": {
            "goal": "replica race",
            "resources": ["https://erp.example.com"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": [
            {
                "type": "mission_resource_access",
                "resource": "https://erp.example.com",
                "actions": ["invoices.read"],
            }
        ],
        "subject": {"iss": "https://idp.example.com", "sub": "alice"},
        "client_id": "agent-race",
    }
    proposal = httpx.post(
        url + "/v1/proposals", json=body, headers={"Authorization": f"Bearer {agent}"}
    )
    assert proposal.status_code == 202, proposal.text
    mission = httpx.post(
        f"{url}/v1/proposals/{proposal.json()['submission_id']}/approve",
        json={},
        headers={"Authorization": f"Bearer {approver}"},
    )
    assert mission.status_code == 201, mission.text
    return str(mission.json()["id"])


def test_same_expected_version_from_two_processes_one_wins(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    agent = create_key(env, "agent", "agent-race")
    approver = create_key(env, "approver", "approver-race")
    operator = create_key(env, "operator", "operator-race")
    first = launch(servers, env, tmp_path, "a")
    second = launch(servers, env, tmp_path, "b")
    auth = {"Authorization": f"Bearer {operator}"}
    trials = 15
    outcomes: list[tuple[int, int]] = []
    for _ in range(trials):
        mission_id = _approve_mission(first.url, agent, approver)

        def suspend(url: str, mission_id: str = mission_id) -> int:
            response = httpx.post(
                f"{url}/v1/missions/{mission_id}/lifecycle",
                json={"operation": "suspend", "reason": "race", "expected_version": 1},
                headers=auth,
                timeout=10.0,
            )
            if response.status_code == 409:
                assert response.json()["code"] == "stale_version", response.text
            return response.status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            codes = sorted(pool.map(suspend, [first.url, second.url]))
        events = httpx.get(
            f"{second.url}/v1/missions/{mission_id}/events", headers=auth, timeout=10.0
        ).json()["data"]
        outcomes.append((codes[0], codes[1]))
        assert codes == [200, 409]
        assert [e["version"] for e in events] == [1, 2]
    assert len(outcomes) == trials
