"""The egress proxy example (deploy/examples/egress-proxy, SPEC 7.2, RFC 8908) with a real
HTTP client: a running service, the proxy as a process of its own, httpx sending through
it to a local web server. The first request gets 511 with a captive-portal Link whose
Captive Portal API answers captive; a person approves the access request the proxy made;
the same request then goes through, and seconds-remaining counts down to approved_until."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import post_json, running_service

pytestmark = [pytest.mark.slow]

AGENT = "agent-egress"
PROXY = Path(__file__).parents[2] / "deploy" / "examples" / "egress-proxy" / "proxy.py"
ALLOWED = "https://api.allowed.example"
CAPTIVE_JSON = "application/captive+json"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the target\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with running_service(tmp_path, AGENT, "egress") as running:
        yield running


def _mandate(url: str, keys: dict[str, str], jkt: str) -> str:
    """A Mission allowing egress to one other origin only, and the agent's Mandate on it."""
    proposal = post_json(
        url,
        keys["agent"],
        "/v1/proposals",
        {
            "intent": {
                "goal": "fetch reports",
                "resources": [ALLOWED],
                "expires_at": "2099-01-01T00:00:00Z",
            },
            "authorization_details": [
                {
                    "type": "mission_resource_access",
                    "resource": ALLOWED,
                    "resource_match": "exact",
                    "actions": ["egress.connect"],
                }
            ],
            "subject": {"iss": "https://idp.example.com", "sub": "alice"},
            "client_id": AGENT,
        },
        202,
    )
    mission = post_json(
        url, keys["approver"], f"/v1/proposals/{proposal['submission_id']}/approve", {}, 201
    )["id"]
    body = {"actor": {"client_id": AGENT, "instance_id": "i-1"}, "cnf": {"jkt": jkt}}
    return str(
        post_json(url, keys["agent"], f"/v1/missions/{mission}/mandates", body, 201)["token"]
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def proxy(
    service: tuple[str, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[str, str, dict[str, str]]]:
    url, keys = service
    jkt = base64.urlsafe_b64encode(hashlib.sha256(b"agent key").digest()).decode().rstrip("=")
    mandate = tmp_path / "mandate.jwt"
    mandate.write_text(_mandate(url, keys, jkt))
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(PROXY),
            "--port",
            str(port),
            "--pdp",
            url,
            "--pep-key",
            keys["pep"],
            "--mandate-file",
            str(mandate),
            "--jkt",
            jkt,
            "--agent",
            AGENT,
            "--instance",
            "i-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}", url, keys
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _captive_link(response: httpx.Response) -> str:
    link = response.headers["link"]
    assert link.endswith('>; rel="captive-portal"'), link
    return link[1 : link.index(">")]


def test_an_agent_held_at_the_captive_portal_gets_through_after_approval(
    proxy: tuple[str, str, dict[str, str]], target: str
) -> None:
    proxy_url, url, keys = proxy
    pep = {"Authorization": f"Bearer {keys['pep']}", "Accept": CAPTIVE_JSON}
    with httpx.Client(proxy=proxy_url, timeout=20.0) as agent:
        held = agent.get(target + "/report.csv")
        assert held.status_code == 511, held.text
        portal_url = _captive_link(held)
        portal = httpx.get(portal_url, headers=pep)
        assert portal.status_code == 200
        assert portal.headers["content-type"] == CAPTIVE_JSON
        captive = portal.json()
        assert captive["captive"] is True
        access = captive["access-request"]["context"]["access_request"]
        assert access["captive_url"] == portal_url
        task_id = captive["user-portal-url"].rsplit("/", 1)[1]

        post_json(
            url,
            keys["approver"],
            f"/v1/access-requests/{task_id}/approve",
            {"reason": "the weekly report", "max_uses": 5},
            200,
        )
        until = datetime.fromisoformat(
            httpx.get(f"{url}/access/v1/requests/{task_id}", headers=pep).json()["result"][
                "approval"
            ]["approved_until"]
        )
        first = httpx.get(portal_url, headers=pep).json()
        assert first["captive"] is False
        left = until.timestamp() - time.time()  # the server's clock: this machine's
        assert left - 5 <= first["seconds-remaining"] <= left
        time.sleep(1.1)
        second = httpx.get(portal_url, headers=pep).json()
        assert second["seconds-remaining"] < first["seconds-remaining"]

        through = agent.get(target + "/report.csv")
        assert through.status_code == 200, through.text
        assert through.text == "hello from the target\n"
