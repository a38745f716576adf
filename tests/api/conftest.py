"""A started app (through its real lifespan) with one API key per role, for the HTTP
contract tests of proposals, Missions, roles, idempotency and read-your-writes.

``api`` is a fresh app per test on ``store_settings`` (SQLite; PostgreSQL too for tests
marked ``postgres_smoke``, see tests/conftest.py). ``shared_api`` is one embedded app for a
whole module, for tests that only read or are refused (or write only what no other test
looks at): it never sees another module's writes, but does see its own module's. Their
helpers keep tests short: ``auth(who)`` gives the headers of a role, ``submit``/``mission``
drive a proposal to a Mission, ``head()`` is the ledger's head position (compared before
and after every refused request: a refusal writes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from ledger.domain.actors import Actor
from ledger.domain.instants import format_instant
from ledger.domain.roles import Role
from ledger.settings import Settings
from tests.builders import ERP, SUBJECT
from tests.conftest import T0, MutableClock, PostgresServer, in_process_writer, with_kek

# who -> key name (an agent key's name is its client_id)
ROLES = {
    "admin": "admin-1",
    "agent": "agent-1",
    "agent2": "agent-2",
    "approver": "approver-1",
    "operator": "operator-1",
    "auditor": "auditor-1",
    "pep": "pep-1",
}
PROBLEM_PREFIX = "urn:mission-ledger:problem:"


def entry(resource: str = ERP, actions: list[str] | None = None, **members: Any) -> dict[str, Any]:
    """One ``mission_resource_access`` entry."""
    return {
        "type": "mission_resource_access",
        "resource": resource,
        "actions": actions or ["invoices.read", "journal-entries.write"],
        **members,
    }


def assert_problem(response: Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the stable type URN and ``code`` member."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["type"] == PROBLEM_PREFIX + code, body
    assert body["code"] == code
    assert body["status"] == status
    return body


def pointers(response: Response) -> list[str]:
    return [e["pointer"] for e in response.json().get("errors", [])]


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]
    clock: MutableClock
    settings: Settings

    # ------------------------------------------------------------ credentials and state

    def auth(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}", **extra}

    @property
    def services(self) -> Any:
        return self.client.app.state.services  # type: ignore[attr-defined]

    def head(self) -> int:
        return int(self.services.ledger.head_position())

    # ------------------------------------------------------------ bodies

    def intent(self, *, days: int = 30, resources: list[str] | None = None) -> dict[str, Any]:
        return {
            "goal": "Reconcile Q3 invoices",
            "resources": resources or [ERP],
            "expires_at": format_instant(self.clock.now() + timedelta(days=days)),
        }

    def proposal_body(
        self, *, client: str = "agent", days: int = 30, **overrides: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "intent": self.intent(days=days),
            "authorization_details": [entry()],
            "subject": dict(SUBJECT),
            "client_id": ROLES[client],
        }
        body.update(overrides)
        return body

    # ------------------------------------------------------------ flows

    def submit(self, *, who: str = "agent", **body: Any) -> dict[str, Any]:
        """Submit a proposal as ``who`` (for its own client_id); the 202 body."""
        response = self.client.post(
            "/v1/proposals", json=self.proposal_body(client=who, **body), headers=self.auth(who)
        )
        assert response.status_code == 202, response.text
        return dict(response.json())

    def approve(self, submission_id: str, body: dict[str, Any] | None = None) -> Response:
        return self.client.post(
            f"/v1/proposals/{submission_id}/approve",
            json=body if body is not None else {},
            headers=self.auth("approver"),
        )

    def mission(self, *, who: str = "agent", **body: Any) -> dict[str, Any]:
        """Submit and approve: the new Mission (201 body)."""
        proposal = self.submit(who=who, **body)
        response = self.approve(proposal["submission_id"])
        assert response.status_code == 201, response.text
        return dict(response.json())

    def get_mission(self, mission_id: str, who: str = "operator") -> dict[str, Any]:
        response = self.client.get(f"/v1/missions/{mission_id}", headers=self.auth(who))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def lifecycle(
        self, mission_id: str, operation: str, *, who: str = "operator", **extra: Any
    ) -> Response:
        body = {"operation": operation, "reason": f"test {operation}", **extra}
        return self.client.post(
            f"/v1/missions/{mission_id}/lifecycle", json=body, headers=self.auth(who)
        )

    def events(self, mission_id: str) -> list[dict[str, Any]]:
        response = self.client.get(
            f"/v1/missions/{mission_id}/events", headers=self.auth("auditor")
        )
        assert response.status_code == 200, response.text
        return list(response.json()["data"])


def issue_keys(client: TestClient) -> dict[str, str]:
    ledger = client.app.state.services.ledger  # type: ignore[attr-defined]
    return {
        who: ledger.issue_api_key(
            name=name,
            role=Role("agent" if who.startswith("agent") else who),
            actor=Actor(type="cli", name="test"),
        ).secret
        for who, name in ROLES.items()
    }


@pytest.fixture
def api(store_settings: Settings, clock: MutableClock) -> Iterator[Api]:
    yield from _started(with_kek(store_settings), clock)


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One embedded app (and clock, at ``T0``) for a whole module: only for tests that leave
    nothing behind that another test of the module could notice (reads, refusals). Never
    move its clock."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("shared-api") / "data")
    yield from _started(settings, MutableClock(T0))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """``shared_api`` on each store in turn (PostgreSQL: a database of its own): for the
    property tests whose examples share one app, where a value one store takes and the other
    refuses matters (PostgreSQL text cannot hold NUL)."""
    if request.param == "sqlite":
        yield from _started(
            Settings(data_dir=tmp_path_factory.mktemp("store-api") / "data"), MutableClock(T0)
        )
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database = server.create_database(template=server.template)
    settings = with_kek(Settings(database_url=server.url_for(database), db_pool_size=2))
    yield from _started(settings, MutableClock(T0))
    server.drop_later(database)


def _started(settings: Settings, clock: MutableClock) -> Iterator[Api]:
    with TestClient(create_app(in_process_writer(settings), clock=clock)) as client:
        yield Api(client=client, keys=issue_keys(client), clock=clock, settings=settings)
