"""Console sessions live in the database (SPEC 7.5; migration 0009, decision record 0022):
a session opened on one replica works on another and after a restart, sign-out deletes it
everywhere, the table holds only token digests, and expired sessions are purged."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from tests.api.conftest import Api
from tests.api.test_console_http import Person


class Browser:
    """A browser holding ``cookies``, talking to one replica."""

    def __init__(self, client: TestClient, cookies: dict[str, str]) -> None:
        self.client = client
        self.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())

    def get(self, path: str) -> Response:
        return self.client.get(path, headers={"cookie": self.cookie})


@contextmanager
def another_replica(api: Api, cookies: dict[str, str]) -> Iterator[Browser]:
    """A second service process on the same store (its own memory, its own follower), and
    a browser holding ``cookies`` that talks to it."""
    app = create_app(api.settings, clock=api.clock)
    with TestClient(app, follow_redirects=False) as client:
        services = app.state.services
        assert services.follower.wait(services.ledger.head_position(), 10)  # its keys
        yield Browser(client, cookies)


def rows(api: Api) -> list[dict[str, object]]:
    return list(
        api.services.ledger.database.fetchall(
            "SELECT session_hash, last_seen FROM console_sessions"
        )
    )


@pytest.mark.postgres_smoke
def test_a_session_opened_on_one_replica_works_on_another(api: Api) -> None:
    approver = Person(api, "approver")
    cookies = dict(approver.client.cookies)
    with another_replica(api, cookies) as replica_b:
        page = replica_b.get("/console/inbox")
        assert page.status_code == 200, page.text
        assert "Requests waiting for a decision" in page.text
        assert "approver-1" in page.text


@pytest.mark.postgres_smoke
def test_signing_out_on_one_replica_ends_the_session_on_the_other(api: Api) -> None:
    approver = Person(api, "approver")
    cookies = dict(approver.client.cookies)
    with another_replica(api, cookies) as replica_b:
        assert replica_b.get("/console/inbox").status_code == 200
        signed_out = approver.post("/console/signout", {"csrf": approver.csrf("/console/inbox")})
        assert signed_out.status_code == 303
        assert replica_b.get("/console/inbox").status_code == 303
    assert rows(api) == []


def test_a_session_survives_a_restart(api: Api, tmp_path_factory: pytest.TempPathFactory) -> None:
    approver = Person(api, "approver")
    cookies = dict(approver.client.cookies)
    api.client.__exit__(None, None, None)  # the first process stops
    try:
        with another_replica(api, cookies) as restarted:
            assert restarted.get("/console/inbox").status_code == 200
    finally:
        api.client.__enter__()


def test_the_table_holds_the_tokens_digest_never_the_token(api: Api) -> None:
    approver = Person(api, "approver")
    token = next(iter(dict(approver.client.cookies).values()))
    (row,) = rows(api)
    assert row["session_hash"] == hashlib.sha256(token.encode()).hexdigest()
    dump = str(api.services.ledger.database.fetchall("SELECT * FROM console_sessions"))
    assert token not in dump


def test_expired_sessions_are_purged_when_someone_signs_in(api: Api) -> None:
    Person(api, "approver")
    Person(api, "operator")
    assert len(rows(api)) == 2
    api.clock.advance(minutes=api.settings.console_idle_minutes + 1)
    Person(api, "auditor")
    assert len(rows(api)) == 1


def test_page_loads_record_activity_at_most_once_a_minute(api: Api) -> None:
    approver = Person(api, "approver")
    (before,) = rows(api)
    api.clock.advance(seconds=20)
    assert approver.get("/console/inbox").status_code == 200
    assert rows(api) == [before]
    api.clock.advance(seconds=50)
    assert approver.get("/console/inbox").status_code == 200
    (after,) = rows(api)
    assert int(str(after["last_seen"])) > int(str(before["last_seen"]))
