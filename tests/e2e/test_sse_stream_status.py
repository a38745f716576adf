"""SSE delivery tells a receiver that the transmitter paused or disabled its stream: the
``stream-updated`` SET goes out before the stream holds what comes after it."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess
from tests.e2e.test_sse_credentials import Reader, revoke
from tests.e2e.test_sse_resume import Fleet

pytestmark = pytest.mark.slow

STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"


def _events(token: str) -> dict[str, dict[str, str]]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    return dict(json.loads(base64.urlsafe_b64decode(padded))["events"])


def test_a_transmitter_initiated_pause_is_sent_before_holding(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    fleet = Fleet(server_env)
    server = launch(servers, server_env, tmp_path)
    fleet.setup(server.url)
    reader = Reader(fleet.events_url(server.url), fleet.auth["pep"])
    reader.wait_for("set")  # the activation
    paused = httpx.post(
        server.url + "/ssf/status",
        json={"stream_id": fleet.stream_id, "status": "paused", "reason": "maintenance"},
        headers=fleet.auth["admin"],  # not the stream's owner: the transmitter
    )
    assert paused.status_code == 200, paused.text
    reader.wait_for("set", 2)
    assert _events(reader.events[-1][1])[STREAM_UPDATED]["status"] == "paused"
    fleet.flip(server.url, 1)  # held
    time.sleep(1.5)
    assert reader.kinds().count("set") == 2, reader.events
    revoke(server_env, "pep-sse")  # ends the stream (and the reading thread)
    reader.wait_end(timeout=10)
