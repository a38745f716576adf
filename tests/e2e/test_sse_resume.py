"""SSE delivery with an independent client library (requests-sse) that resumes with
``Last-Event-ID``: exactly the events after its last id, in order, no duplicates, across a
client disconnect, a server restart and a switch to another replica."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from requests_sse import EventSource

from tests.e2e.conftest import launch
from tests.e2e.server import PEP_SCOPE, ServerProcess, create_key, proposal_body, store_env

pytestmark = pytest.mark.slow

LIFECYCLE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"


class Fleet:
    """Keys, a Mission to flip, and one SSE stream."""

    def __init__(self, env: dict[str, str]) -> None:
        self.auth = {
            role: {"Authorization": "Bearer " + create_key(env, role, f"{role}-sse")}
            for role in ("agent", "approver", "operator", "pep", "admin")
        }

    def setup(self, url: str) -> None:
        body = proposal_body("sse", "agent-sse")
        stream = httpx.post(
            url + "/ssf/streams",
            json={
                "delivery": {"method": "urn:mission-ledger:delivery:sse"},
                "resources": PEP_SCOPE,
            },
            headers=self.auth["pep"],
        )
        assert stream.status_code == 201, stream.text
        self.stream_id = stream.json()["stream_id"]
        proposal = httpx.post(url + "/v1/proposals", json=body, headers=self.auth["agent"]).json()
        self.mission = httpx.post(
            f"{url}/v1/proposals/{proposal['submission_id']}/approve",
            json={},
            headers=self.auth["approver"],
        ).json()["id"]
        self.suspended = False

    def flip(self, url: str, times: int) -> None:
        """Suspend/resume the Mission ``times`` times: one SET each."""
        for _ in range(times):
            operation = "resume" if self.suspended else "suspend"
            who = "admin" if operation == "resume" else "operator"
            response = httpx.post(
                f"{url}/v1/missions/{self.mission}/lifecycle",
                json={"operation": operation, "reason": "sse test"},
                headers=self.auth[who],
            )
            assert response.status_code == 200, response.text
            self.suspended = not self.suspended

    def events_url(self, url: str) -> str:
        return f"{url}/ssf/streams/{self.stream_id}/events"


class Listener:
    """A requests-sse client in a thread, collecting (id, event, data)."""

    def __init__(self, url: str, headers: dict[str, str], last_id: str | None = None) -> None:
        self.received: list[tuple[int, str, str]] = []
        self._source = EventSource(
            url,
            headers=headers,
            timeout=30,
            latest_event_id=last_id,
            reconnection_time=timedelta(milliseconds=200),
            max_connect_retry=50,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._source as source:
                for event in source:
                    self.received.append((int(event.last_event_id), event.type, event.data))
        except Exception:
            return

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.received) >= count, self.received

    @property
    def last_id(self) -> str:
        return str(self.received[-1][0])

    def close(self) -> None:
        self._source.close()
        self._thread.join(timeout=5)


def _verify(url: str, token: str) -> dict[str, Any]:
    jwks = httpx.get(url + "/.well-known/jwks.json").json()
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    return dict(
        pyjwt.decode(
            token,
            pyjwt.PyJWK.from_json(json.dumps(key)).key,
            algorithms=["ES256"],
            audience="pep-sse",
        )
    )


@pytest.fixture(scope="module")
def fleet(shared_server: ServerProcess) -> Fleet:
    """Keys on the module's shared server (each test sets up its own stream and Mission)."""
    return Fleet(shared_server.env)


# The tests on the shared server run on one xdist worker: one server start per backend.
on_the_shared_server = pytest.mark.xdist_group("sse-shared-server")


def _ids(events: list[tuple[int, str, str]]) -> list[int]:
    return [event_id for event_id, kind, _ in events if kind == "set"]


def test_resume_after_a_client_disconnect(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    fleet = Fleet(server_env)
    server = launch(servers, server_env, tmp_path)
    fleet.setup(server.url)
    first = Listener(fleet.events_url(server.url), fleet.auth["pep"])
    first.wait_for(1)  # the activation
    fleet.flip(server.url, 3)
    first.wait_for(4)
    first.close()
    seen = list(first.received)
    fleet.flip(server.url, 4)  # raised while nobody listens
    second = Listener(fleet.events_url(server.url), fleet.auth["pep"], last_id=str(seen[-1][0]))
    second.wait_for(4)
    fleet.flip(server.url, 1)
    second.wait_for(5)
    second.close()
    ids = _ids(seen) + _ids(second.received)
    assert ids == list(range(1, len(ids) + 1))  # every event once, in order
    assert len(ids) == 9
    claims = _verify(server.url, second.received[-1][2])
    assert list(claims["events"]) == [LIFECYCLE]


def test_resume_across_a_server_restart(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    fleet = Fleet(server_env)
    server = launch(servers, server_env, tmp_path)
    fleet.setup(server.url)
    listener = Listener(fleet.events_url(server.url), fleet.auth["pep"])
    fleet.flip(server.url, 2)
    listener.wait_for(3)
    server.kill()
    restarted = ServerProcess(server_env, tmp_path / "restarted.log", port=server.port).start()
    servers.append(restarted)
    fleet.flip(restarted.url, 3)
    listener.wait_for(6, timeout=30)
    listener.close()
    assert _ids(listener.received) == [1, 2, 3, 4, 5, 6]


@pytest.mark.postgres
def test_resume_on_another_replica(
    postgres_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    env = store_env(database_url=postgres_url)
    fleet = Fleet(env)
    first = launch(servers, env, tmp_path, "a")
    second = launch(servers, env, tmp_path, "b")
    fleet.setup(first.url)
    on_a = Listener(fleet.events_url(first.url), fleet.auth["pep"])
    fleet.flip(first.url, 3)
    on_a.wait_for(4)
    on_a.close()
    fleet.flip(first.url, 2)  # accepted by A while the client moves to B
    on_b = Listener(fleet.events_url(second.url), fleet.auth["pep"], last_id=on_a.last_id)
    fleet.flip(second.url, 2)  # accepted by B
    on_b.wait_for(4)
    on_b.close()
    assert _ids(on_a.received) + _ids(on_b.received) == list(range(1, 9))


@on_the_shared_server
def test_a_cursor_outside_the_log_gets_resync(fleet: Fleet, shared_server: ServerProcess) -> None:
    fleet.setup(shared_server.url)  # a stream and a Mission of this test's own
    listener = Listener(fleet.events_url(shared_server.url), fleet.auth["pep"], last_id="9999")
    listener.wait_for(2)
    listener.close()
    assert listener.received[0][1] == "resync"
    assert _ids(listener.received)[0] == 1


@on_the_shared_server
def test_no_credential_is_401_before_the_stream_opens(
    fleet: Fleet, shared_server: ServerProcess
) -> None:
    fleet.setup(shared_server.url)  # a stream and a Mission of this test's own
    response = httpx.get(fleet.events_url(shared_server.url))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


@on_the_shared_server
def test_stream_headers_and_retry_come_first(fleet: Fleet, shared_server: ServerProcess) -> None:
    fleet.setup(shared_server.url)  # a stream and a Mission of this test's own
    with httpx.stream(
        "GET", fleet.events_url(shared_server.url), headers=fleet.auth["pep"], timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] in {"no-store", "no-cache"}
        lines = response.iter_lines()
        assert next(lines).startswith("retry: ")


@on_the_shared_server
def test_an_idle_stream_gets_heartbeat_comments(fleet: Fleet, shared_server: ServerProcess) -> None:
    fleet.setup(shared_server.url)  # heartbeat every second (store_env)
    with httpx.stream(
        "GET", fleet.events_url(shared_server.url), headers=fleet.auth["pep"], timeout=10
    ) as response:
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(12)]  # retry, the activation SET, then comments
    comments = [line for line in seen if line.startswith(":")]
    assert len(comments) >= 2
