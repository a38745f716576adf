"""Revocation is never stale: 1,000 trials of revoke-then-evaluate.

On the replica that accepted the revocation, the very next evaluation denies. On another
replica (two server processes on one PostgreSQL), an evaluation carrying the revocation's
``Ledger-Position`` as ``min_position`` denies too; without it, the other replica denies
within moments (the lag is measured by ``bench/replica_lag.py``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, create_key, store_env
from tests.mandate_builders import proof_of

pytestmark = pytest.mark.slow

TRIALS = 1_000
CLIENTS = 4
_seeds = itertools.count()


def _jkt() -> str:
    digest = hashlib.sha256(f"trial-{next(_seeds)}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Actors:
    def __init__(self, env: dict[str, str]) -> None:
        self.agent = {"Authorization": "Bearer " + create_key(env, "agent", "agent-r")}
        self.approver = {"Authorization": "Bearer " + create_key(env, "approver", "approver-r")}
        self.operator = {"Authorization": "Bearer " + create_key(env, "operator", "operator-r")}
        self.pep = {"Authorization": "Bearer " + create_key(env, "pep", "pep-r")}


def _mission(client: httpx.Client, actors: Actors) -> str:
    body = {
        "intent": {
            "goal": "revocation trials",
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
        "client_id": "agent-r",
    }
    proposal = client.post("/v1/proposals", json=body, headers=actors.agent).json()
    return str(
        client.post(
            f"/v1/proposals/{proposal['submission_id']}/approve", json={}, headers=actors.approver
        ).json()["id"]
    )


def _evaluation(token: str, min_position: int | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {"mandate": token, "proof": proof_of(token)}
    if min_position is not None:
        context["consistency"] = {"min_position": min_position}
    return {
        "subject": {"type": "agent", "id": "agent-r", "properties": {"instance_id": "i-1"}},
        "action": {"name": "invoices.read"},
        "resource": {"type": "api", "id": "https://erp.example.com"},
        "context": context,
    }


def _trial(
    a: httpx.Client, b: httpx.Client | None, actors: Actors, mission: str
) -> tuple[bool, bool | None]:
    issued = a.post(
        f"/v1/missions/{mission}/mandates",
        json={"actor": {"client_id": "agent-r", "instance_id": "i-1"}, "cnf": {"jkt": _jkt()}},
        headers=actors.agent,
    )
    assert issued.status_code == 201, issued.text
    token = issued.json()["token"]
    before = a.post("/access/v1/evaluation", json=_evaluation(token), headers=actors.pep)
    assert before.json()["decision"] is True, before.text
    revoked = a.post(
        f"/v1/mandates/{issued.json()['mandate_id']}/revoke", json={}, headers=actors.operator
    )
    assert revoked.status_code == 200, revoked.text
    position = int(revoked.headers["Ledger-Position"])
    on_a = a.post("/access/v1/evaluation", json=_evaluation(token), headers=actors.pep)
    on_b = None
    if b is not None:
        on_b = b.post(
            "/access/v1/evaluation", json=_evaluation(token, position), headers=actors.pep
        ).json()["decision"]
    return on_a.json()["decision"], on_b


def test_revocation_is_never_stale_on_the_accepting_replica(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    """Embedded SQLite; on PostgreSQL the next test counts the accepting replica's permits
    over the same trials."""
    env = store_env(data_dir=tmp_path / "data")
    actors = Actors(env)
    server = launch(servers, env, tmp_path)
    with httpx.Client(base_url=server.url, timeout=10.0) as a:
        mission = _mission(a, actors)
        permits = sum(_trial(a, None, actors, mission)[0] for _ in range(TRIALS))
    assert permits == 0


@pytest.mark.postgres
def test_min_position_makes_another_replica_deny_too(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    actors = Actors(env)
    first = launch(servers, env, tmp_path, "a")
    second = launch(servers, env, tmp_path, "b")

    def permits(trials: int) -> tuple[int, int]:
        """``trials`` trials in a row on a Mission of their own: permits on A, on B."""
        permits_a = permits_b = 0
        with (
            httpx.Client(base_url=first.url, timeout=10.0) as a,
            httpx.Client(base_url=second.url, timeout=10.0) as b,
        ):
            mission = _mission(a, actors)
            for _ in range(trials):
                on_a, on_b = _trial(a, b, actors, mission)
                permits_a += on_a
                permits_b += bool(on_b)
        return permits_a, permits_b

    # The trials run in CLIENTS concurrent sequences: each trial still evaluates right after
    # its own revocation is answered, while the servers' waits (commits, B catching up) overlap.
    with ThreadPoolExecutor(CLIENTS) as pool:
        counts = list(pool.map(permits, [TRIALS // CLIENTS] * CLIENTS))
    assert sum(a for a, _ in counts) == 0
    assert sum(b for _, b in counts) == 0
