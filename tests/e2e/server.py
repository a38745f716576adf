"""Real server processes for end-to-end tests: `mission-ledger serve` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.persistence.store import open_ledger
from ledger.settings import Settings

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mission-ledger"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: What a test PEP's SSF stream guards (the resource of ``proposal_body``; a PEP's stream
#: must name its ``resources``, SPEC 7.3 signal scoping).
PEP_SCOPE = ["https://erp.example.com"]


def proposal_body(
    goal: str, client_id: str, actions: tuple[str, ...] = ("invoices.read",)
) -> dict[str, object]:
    """A proposal for ``client_id`` over the test ERP, open until 2099."""
    return {
        "intent": {
            "goal": goal,
            "resources": ["https://erp.example.com"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": [
            {
                "type": "mission_resource_access",
                "resource": "https://erp.example.com",
                "actions": list(actions),
            }
        ],
        "subject": {"iss": "https://idp.example.com", "sub": "alice"},
        "client_id": client_id,
    }


def gated_proposal_body(client_id: str) -> dict[str, object]:
    """A proposal for ``client_id`` whose one action (``invoices.pay`` under the test ERP)
    needs a person's approval each time (``requires_action_approval``)."""
    body = proposal_body("pay invoices", client_id, ("invoices.pay",))
    body["authorization_details"] = [
        {
            "type": "mission_resource_access",
            "resource": "https://erp.example.com",
            "resource_match": "prefix",
            "actions": ["invoices.pay"],
            "constraints": {"requires_action_approval": True},
        }
    ]
    return body


def cli_create_key(env: dict[str, str], role: str, name: str) -> str:
    """An API key made by `mission-ledger keys create` (a subprocess, as an operator would)."""
    done = cli(env, "keys", "create", "--role", role, "--name", name, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["key"])


def settings_of(env: dict[str, str]) -> Settings:
    """The store settings a server started with ``env`` uses."""
    if "MISSION_LEDGER_DATABASE_URL" in env:
        return Settings(
            database_url=env["MISSION_LEDGER_DATABASE_URL"],
            key_encryption_key=SecretStr(env["MISSION_LEDGER_KEY_ENCRYPTION_KEY"]),
        )
    return Settings(data_dir=Path(env["MISSION_LEDGER_DATA_DIR"]))


def create_key(env: dict[str, str], role: str, name: str) -> str:
    """An API key written straight into the store (what the CLI does, without starting a
    Python process per key: the CLI itself is tested in tests/api/test_cli.py)."""
    ledger = open_ledger(settings_of(env))
    try:
        issued = ledger.issue_api_key(
            name=name, role=Role(role), actor=Actor(type="cli", name="e2e")
        )
        return str(issued.secret)
    finally:
        ledger.close()


def store_env(*, data_dir: Path | None = None, database_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
    if data_dir is not None:
        env["MISSION_LEDGER_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        env["MISSION_LEDGER_DATABASE_URL"] = database_url
        env["MISSION_LEDGER_KEY_ENCRYPTION_KEY"] = "lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA"
    env["MISSION_LEDGER_LOG_LEVEL"] = "warning"
    # Closing an SSE client unblocks its reading thread only when the next bytes arrive.
    env["MISSION_LEDGER_SSE_HEARTBEAT_SECONDS"] = "1"
    return env


class ServerProcess:
    """One `mission-ledger serve` process on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path, *, port: int | None = None) -> None:
        self.env = dict(env)
        self.port = port or free_port()
        self.env["MISSION_LEDGER_ISSUER"] = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(BIN / "mission-ledger"), "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"server exited with {self.process.returncode}: {self.log_path.read_text()}"
                raise RuntimeError(msg)
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        msg = f"server did not start in {timeout}s: {self.log_path.read_text()}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


#: The PEP toolkit's PDP timeout in these tests (its default is 2 s): they run beside
#: CPU-heavy ones on two vCPUs, where a decision has taken longer (the toolkit then fails
#: closed with ``pdp_unavailable``, and the test asserting a permit fails).
PDP_TIMEOUT = 15.0


@contextmanager
def running_service(
    tmp_path: Path, agent: str, suffix: str, roles: tuple[str, ...] = ("agent", "approver", "pep")
) -> Iterator[tuple[str, dict[str, str]]]:
    """A server on a fresh SQLite store under ``tmp_path``, with an API key per role (the
    agent's named ``agent``, the others ``<role>-<suffix>``): ``(url, keys by role)``."""
    env = store_env(data_dir=tmp_path / "data")
    keys = {
        role: create_key(env, role, agent if role == "agent" else f"{role}-{suffix}")
        for role in roles
    }
    server = ServerProcess(env, tmp_path / "server.log").start()
    try:
        yield server.url, keys
    finally:
        server.stop()


def post_json(url: str, key: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
    """POST ``body`` to ``url + path`` with ``key``; the answer must have ``status``."""
    answer = httpx.post(
        url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20.0
    )
    assert answer.status_code == status, (path, answer.text)
    return dict(answer.json())
