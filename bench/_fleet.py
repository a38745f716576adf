"""Two (or more) real ``mission-ledger serve`` replicas on one throwaway PostgreSQL database,
for the benchmarks that need server processes talking to each other through the store
(``bench.revocation``, ``bench.replica_lag``).

``fleet(label)`` creates a uniquely named database (``bench._support.PostgresServer``),
applies the migrations and creates API keys with the CLI, starts the replicas on free
ports with a shared issuer and the same key-encryption key, and on leaving (also on an
exception or Ctrl-C) stops every process it started and drops the database.

It also holds the small HTTP pieces both benchmarks use: a Mission created over the API,
a keep-alive asyncio HTTP/1.1 client for timed requests, and an ES256 verifier of compact
JWS built from the server's JWKS with ``cryptography`` (no JOSE library in the timed path).

This mirrors ``tests/e2e/server.py`` (benchmarks do not import from ``tests/``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bench._support import PostgresServer
from bench.evaluate import free_port

BIN = Path(sys.executable).parent
#: The key-encryption key of tests/e2e/server.py: signing keys are sealed at rest with it,
#: and every replica must hold the same one to use the keys in the shared database.
KEK = "lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA"
RESOURCE = "https://erp.example.com"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def install_sigterm_handler() -> None:
    """Turn SIGTERM into SystemExit so that ``finally`` blocks stop servers and drop
    databases when the benchmark itself is terminated."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


# ---------------------------------------------------------------------- processes


def store_env(database_url: str) -> dict[str, str]:
    """The environment of a replica (and of the CLI) on ``database_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
    env["MISSION_LEDGER_DATABASE_URL"] = database_url
    env["MISSION_LEDGER_KEY_ENCRYPTION_KEY"] = KEK
    env["MISSION_LEDGER_LOG_LEVEL"] = "warning"
    return env


def cli(env: Mapping[str, str], *args: str) -> str:
    """Run ``mission-ledger ARGS``; its stdout, or RuntimeError with its stderr."""
    done = subprocess.run(
        [str(BIN / "mission-ledger"), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        msg = f"mission-ledger {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        raise RuntimeError(msg)
    return done.stdout


def create_key(env: Mapping[str, str], role: str, name: str) -> str:
    return str(
        json.loads(cli(env, "keys", "create", "--role", role, "--name", name, "--json"))["key"]
    )


class Replica:
    """One ``mission-ledger serve`` process on a free port, logging to a file."""

    def __init__(self, name: str, env: Mapping[str, str], log_path: Path, port: int) -> None:
        self.name = name
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
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
                msg = f"replica {self.name} exited {self.process.returncode}: {self.log_tail()}"
                raise RuntimeError(msg)
            try:
                ready = httpx.get(self.url + "/readyz", timeout=2.0)
                if ready.status_code == 200 and ready.json().get("lag") == 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        msg = f"replica {self.name} was not ready in {timeout:.0f} s: {self.log_tail()}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_problems(self) -> list[str]:
        """Lines of the log that report an error (the log level is ``warning``)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [
            line
            for line in text.splitlines()
            if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line) is not None
        ]


@dataclass
class Fleet:
    database_url: str
    env: dict[str, str]
    issuer: str
    replicas: list[Replica]
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@contextmanager
def fleet(
    label: str,
    *,
    replicas: int = 2,
    key_names: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Fleet]:
    """A fresh database, migrated, with one API key per role of ``key_names`` (role ->
    name), and ``replicas`` server processes A, B, ... sharing one issuer URL (replicas of
    one service behind one name; it is A's URL)."""
    server = PostgresServer.from_env()
    progress(f"PostgreSQL {server.version()} at {server.admin_url}")
    with ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ml-bench-fleet-")))
        database_url = stack.enter_context(server.database(label))
        env = store_env(database_url)
        env.update(extra_env or {})
        cli(env, "migrate")
        ports = [free_port() for _ in range(replicas)]
        issuer = f"http://127.0.0.1:{ports[0]}"
        env["MISSION_LEDGER_ISSUER"] = issuer
        the_fleet = Fleet(database_url=database_url, env=env, issuer=issuer, replicas=[])
        for role, name in (key_names or {}).items():
            the_fleet.keys[role] = create_key(env, role, name)
        for index, port in enumerate(ports):
            name = chr(ord("A") + index)
            replica = Replica(name, env, logs / f"{name}.log", port)
            stack.callback(replica.stop)  # registered first: stopped even if start fails
            the_fleet.replicas.append(replica)
            replica.start()
        yield the_fleet


# ---------------------------------------------------------------------- API helpers


def proposal_body(
    client_id: str,
    sub: str,
    actions: list[str] | None = None,
    constraints: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A proposal for agent ``client_id`` over ``RESOURCE`` (reading invoices by default)."""
    entry: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": RESOURCE,
        "actions": actions or ["invoices.read"],
    }
    if constraints:
        entry["resource_match"] = "prefix"
        entry["constraints"] = dict(constraints)
    return {
        "intent": {
            "goal": "benchmark",
            "resources": [RESOURCE],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": [entry],
        "subject": {"iss": "https://idp.example.com", "sub": sub},
        "client_id": client_id,
    }


def create_mission(client: httpx.Client, fleet: Fleet, client_id: str, sub: str) -> str:
    """Submit and approve a Mission for agent ``client_id`` (reading invoices); its id."""
    body = proposal_body(client_id, sub)
    proposal = client.post("/v1/proposals", json=body, headers=fleet.auth("agent"))
    if proposal.status_code not in (200, 201, 202):
        msg = f"proposal: {proposal.status_code} {proposal.text}"
        raise RuntimeError(msg)
    approved = client.post(
        f"/v1/proposals/{proposal.json()['submission_id']}/approve",
        json={},
        headers=fleet.auth("approver"),
    )
    if approved.status_code not in (200, 201):
        msg = f"approve: {approved.status_code} {approved.text}"
        raise RuntimeError(msg)
    return str(approved.json()["id"])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class AsyncHttp:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams (responses must carry
    ``Content-Length``, as every JSON answer of the service does)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self._reader is not None
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        parsed: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                parsed[name.strip().lower()] = value.strip()
        length = int(parsed.get("content-length", "0"))
        content = await self._reader.readexactly(length) if length else b""
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, parsed, content)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with suppress(OSError):
                await self._writer.wait_closed()
            self._writer = self._reader = None


# ---------------------------------------------------------------------- verification


def b64url(text: str | bytes) -> bytes:
    data = text.encode("ascii") if isinstance(text, str) else text
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class InvalidToken(ValueError):
    pass


class Es256Verifier:
    """Verifies compact ES256 JWS against a JWKS (the keys' ``kid``), with ``cryptography``."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self.keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
                numbers = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(b64url(jwk["x"]), "big"),
                    int.from_bytes(b64url(jwk["y"]), "big"),
                    ec.SECP256R1(),
                )
                self.keys[str(jwk["kid"])] = numbers.public_key()

    def verify(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(protected header, claims) of a valid token, else InvalidToken."""
        try:
            head, payload, signature = token.split(".")
            header = json.loads(b64url(head))
            if header.get("alg") != "ES256":
                msg = f"alg {header.get('alg')!r}"
                raise InvalidToken(msg)
            key = self.keys.get(str(header.get("kid")))
            if key is None:
                msg = f"unknown kid {header.get('kid')!r}"
                raise InvalidToken(msg)
            raw = b64url(signature)
            if len(raw) != 64:
                msg = "an ES256 signature is 64 bytes"
                raise InvalidToken(msg)
            der = encode_dss_signature(
                int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
            )
            key.verify(der, f"{head}.{payload}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
            claims = json.loads(b64url(payload))
        except InvalidSignature:
            msg = "bad signature"
            raise InvalidToken(msg) from None
        except (ValueError, KeyError, UnicodeError) as error:
            if isinstance(error, InvalidToken):
                raise
            msg = f"malformed token ({error})"
            raise InvalidToken(msg) from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            msg = "header and claims must be JSON objects"
            raise InvalidToken(msg)
        return header, claims
