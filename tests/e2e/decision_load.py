"""A decision load for the decision log's end-to-end tests: a Mission and a Mandate made over
the API, then concurrent PEP clients sending a mix of single evaluations (permits and
denials), batches of four and search calls, each keeping every ``evaluation_id`` it received
with the moment it arrived (``time.monotonic()``)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg

from tests.e2e.server import create_key, proposal_body
from tests.mandate_builders import jkt, proof_of

AGENT = "agent-dl"
ERP = "https://erp.example.com"


@dataclass
class Received:
    evaluation_id: str
    at: float  # time.monotonic() when the answer arrived


def credentials(env: dict[str, str]) -> dict[str, dict[str, str]]:
    names = {"agent": AGENT, "approver": "approver-dl", "pep": "pep-dl"}
    return {
        role: {"Authorization": "Bearer " + create_key(env, role, name)}
        for role, name in names.items()
    }


def mandate_token(url: str, auth: dict[str, dict[str, str]]) -> tuple[str, int]:
    """A Mandate for ``AGENT`` (instance ``i-1``) under a fresh Mission, made through the
    server at ``url``; with the ``Ledger-Position`` of the issuance."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        proposal = client.post(
            "/v1/proposals", json=proposal_body("decision log", AGENT), headers=auth["agent"]
        )
        assert proposal.status_code == 202, proposal.text
        approved = client.post(
            f"/v1/proposals/{proposal.json()['submission_id']}/approve",
            json={},
            headers=auth["approver"],
        )
        assert approved.status_code == 201, approved.text
        issued = client.post(
            f"/v1/missions/{approved.json()['id']}/mandates",
            json={"actor": {"client_id": AGENT, "instance_id": "i-1"}, "cnf": {"jkt": jkt()}},
            headers=auth["agent"],
        )
        assert issued.status_code == 201, issued.text
        return str(issued.json()["token"]), int(issued.headers["Ledger-Position"])


@dataclass
class DecisionLoad:
    token: str
    pep: dict[str, str]
    received: list[Received] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def _evaluation(self, rng: random.Random, **context: Any) -> dict[str, Any]:
        return {
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            # invoices.read is granted (permit), invoices.pay is not (out_of_authority)
            "action": {"name": rng.choice(("invoices.read", "invoices.read", "invoices.pay"))},
            "resource": {"type": "api", "id": ERP, "properties": {"n": rng.randrange(1000)}},
            "context": {"mandate": self.token, "proof": proof_of(self.token), **context},
        }

    def _request(self, rng: random.Random, **context: Any) -> tuple[str, dict[str, Any]]:
        kind = rng.random()
        if kind < 0.6:
            return "/access/v1/evaluation", self._evaluation(rng, **context)
        if kind < 0.85:
            body = self._evaluation(rng, **context)
            body["evaluations"] = [{"action": {"name": "invoices.read"}}, {}, {}, {}]
            return "/access/v1/evaluations", body
        return "/access/v1/search/resource", {
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api"},
        }

    async def _worker(
        self, client: httpx.AsyncClient, seed: int, done: Callable[[], bool], **context: Any
    ) -> None:
        rng = random.Random(seed)
        while not done():
            path, body = self._request(rng, **context)
            try:
                response = await client.post(path, json=body, headers=self.pep)
            except httpx.HTTPError:
                return  # the server is gone: this answer never arrived
            at = time.monotonic()
            if response.status_code != 200:
                self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
                return
            answer = response.json()
            items = answer.get("evaluations", [answer])
            self.received += [Received(i["context"]["evaluation_id"], at) for i in items]

    async def run(
        self, urls: list[str], connections: int, done: Callable[[], bool], **context: Any
    ) -> None:
        """``connections`` clients per server until ``done()`` (or the server is gone)."""
        clients = [
            httpx.AsyncClient(base_url=url, timeout=30.0, limits=httpx.Limits(max_connections=1))
            for url in urls
            for _ in range(connections)
        ]
        try:
            await asyncio.gather(
                *(self._worker(c, n, done, **context) for n, c in enumerate(clients))
            )
        finally:
            for client in clients:
                await client.aclose()


def logged_ids(database_url: str) -> list[str]:
    """Every ``evaluation_id`` in the decision log, one per row (read from the table)."""
    with psycopg.connect(database_url) as conn:
        return [str(row[0]) for row in conn.execute("SELECT evaluation_id FROM decision_log")]
