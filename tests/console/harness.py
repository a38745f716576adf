"""Real components for the console's browser tests: Debian's Chromium driven by Playwright,
panva's oidc-provider (npm, pinned in package-lock.json) as the OpenID Provider, axe-core
evaluated through the DevTools protocol, and `mission-ledger serve` in a subprocess."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import PostgresServer
from tests.e2e.server import ServerProcess, create_key, free_port, proposal_body, store_env
from tests.mandate_builders import jkt, proof_of

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
AXE = NODE_MODULES / "axe-core" / "axe.min.js"
CLIENT_ID = "ml-console"
CLIENT_SECRET = "console-test-secret"
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
DOCS_SCREENSHOTS = HERE.parent.parent / "docs" / "screenshots"


def chromium() -> str:
    """Debian's Chromium (`apt-get install chromium`; `.ci/run` installs it when missing)."""
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found is None:
        msg = "the console's browser tests need Chromium: apt-get install -y chromium"
        raise RuntimeError(msg)
    return found


def ensure_node_modules() -> None:
    """`npm ci` once per package-lock.json (a stamp file records the lock's digest); a lock
    file keeps parallel test workers from installing at the same time."""
    lock = (HERE / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()
    stamp = NODE_MODULES / ".installed-lock-sha256"
    with (HERE / ".npm-ci.lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == digest:
            return
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            msg = f"npm ci failed in {HERE}: {done.stderr}"
            raise RuntimeError(msg)
        stamp.write_text(digest)


class OidcProvider:
    """oidc-provider in a node process of its own (node itself, so SIGTERM reaches it)."""

    def __init__(self, redirect_uri: str, log_path: Path) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uri = redirect_uri
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> OidcProvider:
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_REDIRECT_URI": self.redirect_uri,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        }
        self.process = subprocess.Popen(
            ["node", str(HERE / "oidc_provider.mjs")],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        ready = threading.Event()
        lines: list[str] = []

        def read() -> None:
            assert self.process is not None
            assert self.process.stdout is not None
            with self.log_path.open("a") as log:
                for line in self.process.stdout:
                    lines.append(line)
                    log.write(line)
                    log.flush()
                    if line.startswith("READY"):
                        ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            msg = f"the OpenID Provider did not start: {''.join(lines)}"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Stack:
    """A running console: the server, its OpenID Provider and API keys per role."""

    server: ServerProcess
    provider: OidcProvider
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def submit(
        self,
        goal: str = "Reconcile the Q3 invoices",
        *,
        actions: tuple[str, ...] = ("invoices.read", "invoices.pay", "reports.*"),
        amount: str = "500",
    ) -> str:
        """A proposal from agent-1 over the API; its id."""
        body = proposal_body(goal, "agent-1", actions)
        body["authorization_details"][0]["constraints"] = {  # type: ignore[index]
            "max_amount": {"amount": amount, "currency": "EUR"}
        }
        response = httpx.post(
            f"{self.url}/v1/proposals",
            json=body,
            headers={"Authorization": f"Bearer {self.keys['agent']}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["submission_id"])

    def get(self, who: str, path: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}{path}",
            headers={"Authorization": f"Bearer {self.keys[who]}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def mission(self, mission_id: str) -> dict[str, Any]:
        return self.get("operator", f"/v1/missions/{mission_id}")

    def events(self, mission_id: str) -> list[dict[str, Any]]:
        return list(self.get("operator", f"/v1/missions/{mission_id}/events")["data"])

    def approve_over_api(self, proposal_id: str) -> str:
        response = httpx.post(
            f"{self.url}/v1/proposals/{proposal_id}/approve",
            headers={"Authorization": f"Bearer {self.keys['approver']}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def post(self, who: str, path: str, body: dict[str, Any], status: int) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.keys[who]}"},
            timeout=10,
        )
        assert response.status_code == status, response.text
        return dict(response.json())

    def access_request(self, justification: str = "month-end close", *, who: str = "pep") -> str:
        """A pending access request (its task id): a Mission whose entry needs each action
        approved, a Mandate, the PEP's requestable denial, and the request ``who`` makes."""
        body = proposal_body("Pay invoices one by one", "agent-1", ("invoices.pay",))
        body["authorization_details"][0]["constraints"] = {  # type: ignore[index]
            "requires_action_approval": True
        }
        proposal = self.post("agent", "/v1/proposals", body, 202)["submission_id"]
        mission = self.approve_over_api(proposal)
        token = self.post(
            "agent",
            f"/v1/missions/{mission}/mandates",
            {"actor": {"client_id": "agent-1", "instance_id": "i-1"}, "cnf": {"jkt": jkt()}},
            201,
        )["token"]
        question = {
            "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
            "action": {"name": "invoices.pay", "properties": {"amount": "120", "currency": "EUR"}},
            "resource": {"type": "api", "id": "https://erp.example.com/invoices/7"},
            "context": {"mandate": token, "proof": proof_of(token)},
        }
        denied = self.post("pep", "/access/v1/evaluation", question, 200)
        access = denied["context"]["access_request"]
        request = {
            **question,
            "context": {**question["context"], "business_justification": justification},
            "denial": {
                "evaluation_id": denied["context"]["evaluation_id"],
                "expires_at": access["expires_at"],
                "reason": denied["context"]["reason"],
                "binding_token": access["binding_token"],
            },
        }
        return str(self.post(who, "/access/v1/requests", request, 202)["task"]["id"])

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get("approver", f"/v1/access-requests/{task_id}")

    def head(self) -> int:
        return int(httpx.get(f"{self.url}/readyz", timeout=10).json()["head_position"])


def start_stack(tmp: Path, env: dict[str, str]) -> Stack:
    server = ServerProcess(env, tmp / "server.log")
    provider = OidcProvider(f"{server.url}/console/auth/callback", tmp / "provider.log").start()
    server.env.update(
        {
            "MISSION_LEDGER_CONSOLE_OIDC_ISSUER": provider.issuer,
            "MISSION_LEDGER_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
            "MISSION_LEDGER_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "MISSION_LEDGER_CONSOLE_API_KEY_SIGNIN": "true",
        }
    )
    try:
        server.start()
    except Exception:
        provider.stop()
        raise
    keys = {
        role: create_key(server.env, role, f"{role}-1")
        for role in ("agent", "approver", "operator", "auditor", "admin", "pep")
    }
    return Stack(server=server, provider=provider, keys=keys)


def running_stack(request: Any, tmp_path_factory: Any, backend: str) -> Iterator[Stack]:
    ensure_node_modules()
    tmp = tmp_path_factory.mktemp(f"console-{backend}")
    pg: PostgresServer | None = None
    database = ""
    if backend == "sqlite":
        env = store_env(data_dir=tmp / "data")
    else:
        pg = request.getfixturevalue("postgres_server")
        database = pg.create_database(template=pg.template)
        env = store_env(database_url=pg.url_for(database))
    running = start_stack(tmp, env)
    try:
        yield running
    finally:
        running.server.stop()
        running.provider.stop()
        if pg is not None:
            pg.drop_later(database)


# ---------------------------------------------------------------------- axe-core


def axe_violations(page: Any, *, impacts: tuple[str, ...] = ("serious", "critical")) -> list[Any]:
    """axe-core's violations of ``impacts`` on the page, evaluated over the DevTools protocol
    (a CSP without 'unsafe-eval' or inline scripts does not apply to it)."""
    session = page.context.new_cdp_session(page)
    try:
        session.send("Runtime.evaluate", {"expression": AXE.read_text()})
        result = session.send(
            "Runtime.evaluate",
            {
                "expression": "axe.run(document, {resultTypes: ['violations']})"
                ".then(r => JSON.stringify(r.violations))",
                "awaitPromise": True,
                "returnByValue": True,
            },
        )
    finally:
        session.detach()
    violations = json.loads(result["result"]["value"])
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in violations
        if v.get("impact") in impacts
    ]


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# ---------------------------------------------------------------------- signing in


def sign_in_with_key(context: Any, stack: Stack, role: str) -> Any:
    """A page signed in with the API key of ``role`` (the sign-in form, as a person would)."""
    page = context.new_page()
    page.goto(f"{stack.url}/console/signin")
    page.fill("#api_key", stack.keys[role])
    page.click("text=Sign in with the key")
    page.wait_for_load_state()
    return page


def sign_in_with_oidc(context: Any, stack: Stack, login: str) -> Any:
    """A page signed in through the real OpenID Provider: its login form, then back."""
    page = context.new_page()
    page.goto(f"{stack.url}/console/signin")
    page.click("text=Sign in with your organisation's account")
    page.wait_for_url(f"{stack.provider.issuer}/interaction/**")
    page.fill("#login", login)
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{stack.url}/console/**")
    return page
