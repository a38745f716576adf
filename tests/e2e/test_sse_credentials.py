"""An open SSE subscription lives no longer than the credential that opened it: revoking
the API key ends the stream within seconds (no later SET is delivered), a JWT's stream
ends at its ``exp``; and a ``Last-Event-ID`` that is not an event id gets ``event:
resync`` (a 400 would make a browser's EventSource stop reconnecting for good)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from ledger.domain.actors import Actor
from ledger.persistence.store import open_ledger
from tests.api.test_oauth_http import AUDIENCE, ISSUER, Issuer
from tests.e2e.conftest import launch
from tests.e2e.server import PEP_SCOPE, ServerProcess, create_key, settings_of
from tests.e2e.test_sse_resume import Fleet

pytestmark = pytest.mark.slow

SSE = "urn:mission-ledger:delivery:sse"


class Reader:
    """One SSE response read in a thread: its events (type, data) and when it ended."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[tuple[str, str]] = []
        self.ended_at: float | None = None
        self.status: int | None = None
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        kind, data = "message", ""
        try:
            with httpx.stream("GET", url, headers=headers, timeout=30) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and data:
                        self.events.append((kind, data))
                        kind, data = "message", ""
        finally:
            self.ended_at = time.monotonic()

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.kinds().count(kind) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.kinds().count(kind) >= count, self.events

    def wait_end(self, timeout: float) -> float:
        """When the stream ended (monotonic), failing if it is still open after ``timeout``."""
        self._thread.join(timeout)
        assert self.ended_at is not None, f"the stream is still open: {self.events}"
        return self.ended_at


def revoke(env: dict[str, str], name: str) -> None:
    ledger = open_ledger(settings_of(env))
    try:
        ledger.revoke_api_key(name=name, actor=Actor(type="cli", name="e2e"), reason="test")
    finally:
        ledger.close()


def test_revoking_the_api_key_ends_its_open_stream_before_the_next_set(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    fleet = Fleet(server_env)
    server = launch(servers, server_env, tmp_path)
    fleet.setup(server.url)
    reader = Reader(fleet.events_url(server.url), fleet.auth["pep"])
    reader.wait_for("set")  # the activation
    revoke(server_env, "pep-sse")
    revoked_at = time.monotonic()
    fleet.flip(server.url, 1)  # a SET raised after the revocation
    ended_at = reader.wait_end(timeout=10)
    assert ended_at - revoked_at < 5
    assert reader.kinds().count("set") == 1, reader.events
    assert reader.kinds()[-1] == "unauthorized"
    again = httpx.get(fleet.events_url(server.url), headers=fleet.auth["pep"])
    assert again.status_code == 401


def test_a_jwt_stream_ends_at_the_token_exp(
    servers: list[ServerProcess], tmp_path: Path, server_env: dict[str, str]
) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "idp-1", "use": "sig"}, private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
    env = {
        **server_env,
        "MISSION_LEDGER_OAUTH_ISSUER": ISSUER,
        "MISSION_LEDGER_OAUTH_JWKS_URI": jwks.as_uri(),
        "MISSION_LEDGER_OAUTH_AUDIENCE": AUDIENCE,
    }
    server = launch(servers, env, tmp_path)
    issuer = Issuer(key)
    manage = {"Authorization": "Bearer " + issuer.token(scope="mission_ledger.pep")}
    created = httpx.post(
        server.url + "/ssf/streams",
        json={"delivery": {"method": SSE}, "resources": PEP_SCOPE},
        headers=manage,
    )
    assert created.status_code == 201, created.text
    url = f"{server.url}/ssf/streams/{created.json()['stream_id']}/events"
    exp = int(time.time()) + 3
    short = issuer.token(scope="mission_ledger.pep", exp=exp)
    reader = Reader(url, {"Authorization": f"Bearer {short}"})
    reader.wait_end(timeout=10)
    assert reader.status == 200
    assert time.time() >= exp
    assert reader.kinds() == ["unauthorized"]


def test_a_last_event_id_that_is_not_an_event_id_gets_a_resync(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = launch(servers, server_env, tmp_path)
    pep = {"Authorization": "Bearer " + create_key(server_env, "pep", "pep-resync")}
    created = httpx.post(
        server.url + "/ssf/streams",
        json={"delivery": {"method": SSE}, "resources": PEP_SCOPE},
        headers=pep,
    )
    assert created.status_code == 201, created.text
    url = f"{server.url}/ssf/streams/{created.json()['stream_id']}/events"
    reader = Reader(url, {**pep, "Last-Event-ID": "not-a-number"})
    reader.wait_for("resync")
    assert reader.status == 200
    assert json.loads(reader.events[0][1])["oldest"] == 1
    revoke(server_env, "pep-resync")  # ends the stream (and the reading thread)
    reader.wait_end(timeout=10)
