"""A running app (through its real lifespan) with one key per role, for the decision APIs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.domain.actors import Actor
from ledger.domain.instants import format_instant
from ledger.domain.roles import Role
from ledger.settings import Settings
from tests.builders import SUBJECT
from tests.conftest import T0, TEST_KEK, MutableClock, PostgresServer, in_process_writer, with_kek
from tests.mandate_builders import jkt

ROLES = {
    "admin": "admin-1",
    "agent": "agent-1",
    "agent2": "agent-2",
    "approver": "approver-1",
    "operator": "operator-1",
    "auditor": "auditor-1",
    "pep": "pep-1",
}


@dataclass
class Harness:
    client: TestClient
    keys: dict[str, str]
    clock: MutableClock

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def head(self) -> int:
        services = self.client.app.state.services  # type: ignore[attr-defined]
        return int(services.ledger.head_position())

    def mission(
        self,
        authority: list[dict[str, Any]],
        *,
        client: str = "agent",
        days: int = 30,
        controls: dict[str, Any] | None = None,
    ) -> str:
        client_id = ROLES[client]
        resources = sorted({e["resource"] for e in authority})
        intent: dict[str, Any] = {
            "goal": "decision test",
            "resources": resources,
            "expires_at": format_instant(self.clock.now() + timedelta(days=days)),
        }
        if controls is not None:
            intent["controls"] = controls
        body = {
            "intent": intent,
            "authorization_details": authority,
            "subject": SUBJECT,
            "client_id": client_id,
        }
        proposal = self.client.post("/v1/proposals", json=body, headers=self.auth(client))
        assert proposal.status_code == 202, proposal.text
        approved = self.client.post(
            f"/v1/proposals/{proposal.json()['submission_id']}/approve",
            json={},
            headers=self.auth("approver"),
        )
        assert approved.status_code == 201, approved.text
        return str(approved.json()["id"])

    def mandate(
        self,
        mission_id: str,
        *,
        client: str = "agent",
        instance: str = "i-1",
        details: list[dict[str, Any]] | None = None,
        ttl: int | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Issue a Mandate bound to the key thumbprint ``key`` (a fresh one by default)."""
        body: dict[str, Any] = {
            "actor": {"client_id": ROLES[client], "instance_id": instance},
            "cnf": {"jkt": key or jkt()},
        }
        if details is not None:
            body["authorization_details"] = details
        if ttl is not None:
            body["ttl_seconds"] = ttl
        response = self.client.post(
            f"/v1/missions/{mission_id}/mandates", json=body, headers=self.auth(client)
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def evaluate(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = self.client.post(
            "/access/v1/evaluation", json=body, headers={**self.auth("pep"), **headers}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def server_settings(store_settings: Settings, **update: Any) -> Settings:
    """``store_settings`` with ``update``, and a key-encryption key where the store needs
    one (``with_kek``)."""
    return with_kek(store_settings.model_copy(update=update))


@pytest.fixture
def harness(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    yield from _started(server_settings(store_settings), clock)


@pytest.fixture(scope="module")
def shared_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One embedded app for a whole module of transport-level tests (no state between them
    matters: they only read)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("shared") / "data")
    yield from _started(settings, MutableClock(T0))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    """``shared_harness`` on each store in turn (PostgreSQL: a database of its own), for
    the property tests whose examples share one app and write (usage, access requests)."""
    if request.param == "sqlite":
        data = tmp_path_factory.mktemp("store-harness") / "data"
        yield from _started(Settings(data_dir=data), MutableClock(T0))
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = server.create_database(template=server.template)
    settings = Settings(
        database_url=server.url_for(database), db_pool_size=2, key_encryption_key=TEST_KEK
    )
    yield from _started(settings, MutableClock(T0))
    server.drop_later(database)


def _started(settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    app = create_app(in_process_writer(settings), clock=clock)
    with TestClient(app) as client:
        ledger = app.state.services.ledger
        keys = {
            who: ledger.issue_api_key(
                name=name,
                role=Role("agent" if who.startswith("agent") else who),
                actor=Actor(type="cli", name="test"),
            ).secret
            for who, name in ROLES.items()
        }
        # The keys are written straight to the ledger: wait until this app's key directory
        # holds them (a loaded machine's first request could otherwise outrun it: 401).
        assert app.state.services.follower.wait(ledger.head_position(), 10)
        yield Harness(client=client, keys=keys, clock=clock)
