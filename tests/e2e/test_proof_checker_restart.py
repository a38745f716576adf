"""A running server's DPoP proof checker (decision 0023): killed, it costs no answer (the
server checks the signatures itself meanwhile: a genuine proof permits, a forged one is
``key_mismatch``), it is started again, and it does not outlive the server. In ``auto``
mode (the default) a decision that is the only request in progress has its signature
checked by the server, and decisions made together by the checker."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, create_key, proposal_body, store_env

AGENT = "agent-checker"
ERP = "https://erp.example.com"
HTU = ERP + "/invoices/7"
KEY = ECKey.generate_key("P-256")


def proof(*, forged: bool = False) -> str:
    header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": KEY.as_dict(private=False)}
    claims = {"htm": "POST", "htu": HTU, "iat": int(time.time()), "jti": secrets.token_hex(8)}
    token = jws.serialize_compact(header, json.dumps(claims).encode(), KEY)
    if not forged:
        return token
    other = jws.serialize_compact(header, json.dumps({**claims, "jti": "x"}).encode(), KEY)
    return ".".join([*token.split(".")[:2], other.split(".")[2]])


class Client:
    def __init__(self, server: ServerProcess) -> None:
        env = server.env
        self.http = httpx.Client(base_url=server.url, timeout=10.0)
        names = {"agent": AGENT, "approver": "approver-c", "pep": "pep-c", "operator": "ops-c"}
        self.auth = {
            role: {"Authorization": "Bearer " + create_key(env, role, name)}
            for role, name in names.items()
        }
        proposal = self.http.post(
            "/v1/proposals", json=proposal_body("checker", AGENT), headers=self.auth["agent"]
        )
        assert proposal.status_code == 202, proposal.text
        mission = self.http.post(
            f"/v1/proposals/{proposal.json()['submission_id']}/approve",
            json={},
            headers=self.auth["approver"],
        )
        assert mission.status_code == 201, mission.text
        issued = self.http.post(
            f"/v1/missions/{mission.json()['id']}/mandates",
            json={
                "actor": {"client_id": AGENT, "instance_id": "i-1"},
                "cnf": {"jkt": KEY.thumbprint()},
            },
            headers=self.auth["agent"],
        )
        assert issued.status_code == 201, issued.text
        self.token = issued.json()["token"]

    def decide(self, dpop: str) -> dict[str, object]:
        body = {
            "subject": {"type": "agent", "id": AGENT, "properties": {"instance_id": "i-1"}},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api", "id": ERP},
            "context": {"mandate": self.token, "proof": {"dpop": dpop, "htm": "POST", "htu": HTU}},
        }
        answer = self.http.post("/access/v1/evaluation", json=body, headers=self.auth["pep"])
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def close(self) -> None:
        self.http.close()

    def metric(self, name: str) -> float:
        text = self.http.get("/metrics", headers=self.auth["operator"]).text
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0


def checker_of(server: ServerProcess) -> int | None:
    """The server's proof checker process, if it runs."""
    assert server.process is not None
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"api.workers.proof_child" in command:
            return int(child)
    return None


def wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


CHECKED_BY_CHECKER = 'mission_ledger_dpop_signature_checks_total{by="checker"}'
CHECKED_BY_SERVER = 'mission_ledger_dpop_signature_checks_total{by="server"}'
CHECKED_ALONE = 'mission_ledger_dpop_signature_checks_total{by="alone"}'


def test_a_killed_checker_costs_no_answer_and_is_started_again(
    servers: list[ServerProcess], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = store_env(data_dir=tmp_path / "data") | {"MISSION_LEDGER_PROOF_VERIFIER": "process"}
    server = launch(servers, env, tmp_path)
    client = Client(server)
    request.addfinalizer(client.close)

    def checked_apart() -> bool:
        assert client.decide(proof())["decision"] is True
        return client.metric(CHECKED_BY_CHECKER) > 0

    wait_for(checked_apart)  # the checker starts at the first proof and takes over
    first = checker_of(server)
    assert first is not None

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: checker_of(server) is None)
    by_server = client.metric(CHECKED_BY_SERVER)
    assert client.decide(proof())["decision"] is True  # checked by the server meanwhile
    forged = client.decide(proof(forged=True))
    assert forged["decision"] is False
    assert forged["context"]["reason"] == "key_mismatch"  # type: ignore[index]
    assert client.metric(CHECKED_BY_SERVER) == by_server + 2
    assert client.metric("mission_ledger_dpop_checker_restarts_total") == 1

    before = client.metric(CHECKED_BY_CHECKER)

    def checker_back() -> bool:
        assert client.decide(proof())["decision"] is True
        return client.metric(CHECKED_BY_CHECKER) > before

    wait_for(checker_back)
    second = checker_of(server)
    assert second not in (None, first)

    client.http.close()
    server.stop()
    assert (
        not Path(f"/proc/{second}").exists()
        or b"zombie" in Path(f"/proc/{second}/status").read_bytes().lower()
    )


def test_by_default_a_decision_alone_is_checked_by_the_server_and_many_by_the_checker(
    servers: list[ServerProcess], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = launch(servers, store_env(data_dir=tmp_path / "data"), tmp_path)
    client = Client(server)
    request.addfinalizer(client.close)
    for _ in range(5):  # one at a time: each the only request in progress
        assert client.decide(proof())["decision"] is True
    assert client.metric(CHECKED_ALONE) == 5
    assert checker_of(server) is None  # not needed yet
    decided = 5

    def together() -> bool:
        nonlocal decided
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: client.decide(proof()), range(64)))
        decided += len(answers)
        assert all(answer["decision"] is True for answer in answers)
        return client.metric(CHECKED_BY_CHECKER) > 0

    wait_for(together)  # (the checker starts at the first decision made with others)
    assert checker_of(server) is not None
    checked = (CHECKED_BY_CHECKER, CHECKED_BY_SERVER, CHECKED_ALONE)
    assert sum(client.metric(name) for name in checked) == decided  # each checked once
