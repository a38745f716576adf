"""The PEP toolkit (clients/python) against the real service in a subprocess, on both
backends: the example gateway refuses a revoked Mandate, the subscriber's revocation set
holds it before the revoke answers in the typical case (the count is reported), a restarted
subscriber resumes from its persisted cursor, and a rotated signing key is fetched on
first sight."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey
from mission_ledger_pep import PdpClient, SignalSubscriber
from mission_ledger_pep.jwks import JwksCache
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import launch
from tests.e2e.server import PDP_TIMEOUT, PEP_SCOPE, ServerProcess, cli, create_key, proposal_body

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "gateway.py"
ROLES = ("agent", "approver", "operator", "pep")
#: How soon after a fetch the subscriber's JWKS cache may fetch again (its default).
JWKS_MIN_REFRESH_SECONDS = float(
    inspect.signature(JwksCache).parameters["min_refresh_interval"].default
)


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pep_example_gateway", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


class Ledger:
    """Keys, one active Mission, and Mandates on it for agent instance ``i-1``."""

    def __init__(self, server: ServerProcess, keys: dict[str, str]) -> None:
        self.url = server.url
        self.keys = keys
        self.http = httpx.Client(base_url=server.url, timeout=10.0)
        self.holder = ECKey.generate_key("P-256")
        self.jkt = self.holder.thumbprint()
        body = proposal_body("pep e2e", "agent-pep")
        body["authorization_details"][0]["resource_match"] = "prefix"  # type: ignore[index]
        proposal = self.post("agent", "/v1/proposals", body)
        approved = self.post("approver", f"/v1/proposals/{proposal['submission_id']}/approve", {})
        self.mission = approved["id"]

    def post(self, role: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post(path, json=body, headers=self.auth(role))
        assert response.status_code in (200, 201, 202), response.text
        return dict(response.json())

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.keys[role]}

    def metric(self, name: str) -> dict[str, float]:
        """The samples of one counter family on ``/metrics``, by their ``outcome`` label."""
        response = self.http.get("/metrics", headers=self.auth("operator"))
        assert response.status_code == 200, response.text
        return {
            sample.labels.get("outcome", ""): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == name
        }

    def mandate(self) -> dict[str, Any]:
        body = {"actor": {"client_id": "agent-pep", "instance_id": "i-1"}, "cnf": {"jkt": self.jkt}}
        return self.post("agent", f"/v1/missions/{self.mission}/mandates", body)

    def revoke(self, mandate_id: str) -> None:
        self.post("operator", f"/v1/mandates/{mandate_id}/revoke", {"reason": "pep e2e"})

    def stream(self) -> str:
        body = {"delivery": {"method": "urn:mission-ledger:delivery:sse"}, "resources": PEP_SCOPE}
        return str(self.post("pep", "/ssf/streams", body)["stream_id"])

    def agent_headers(self, token: str) -> dict[str, str]:
        return {
            "X-Mandate": token,
            "X-Agent-Id": "agent-pep",
            "X-Agent-Instance": "i-1",
            "X-Proof-Jkt": self.jkt,
        }


@pytest.fixture
def ledger(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> Iterator[Ledger]:
    keys = {role: create_key(server_env, role, f"{role}-pep") for role in ROLES}
    the_ledger = Ledger(launch(servers, server_env, tmp_path), keys)
    yield the_ledger
    the_ledger.http.close()


def subscriber(ledger: Ledger, stream_id: str, cursor: Path, **kw: Any) -> SignalSubscriber:
    started = SignalSubscriber(
        ledger.url, ledger.keys["pep"], stream_id, cursor_path=cursor, backoff_initial=0.1, **kw
    )
    started.start()
    assert started.wait_connected(10.0)
    return started


def test_example_gateway_refuses_a_revoked_mandate_and_learns_of_it_by_signal(
    ledger: Ledger, tmp_path: Path
) -> None:
    gateway = example().build(
        ledger.url, ledger.keys["pep"], tmp_path / "gateway", pdp_timeout=PDP_TIMEOUT
    )
    gateway.subscriber.start()
    assert gateway.subscriber.wait_connected(10.0)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for _ in range(3):
                issued = ledger.mandate()
                headers = ledger.agent_headers(issued["token"])
                allowed = await client.get("/invoices/7", headers=headers)
                assert allowed.status_code == 200, allowed.text
                ledger.revoke(issued["mandate_id"])
                refused = await client.get("/invoices/7", headers=headers)  # the next request
                assert refused.status_code == 403, refused.text
                assert eventually(lambda m=issued["mandate_id"]: gateway.guard.is_revoked(m))
        await gateway.pdp.aclose()

    try:
        asyncio.run(scenario())
        assert gateway.subscriber.rejected_total == 0
    finally:
        gateway.subscriber.stop()
        gateway.guard.close()


#: Revocations in the "typical case" test, and how many of them must have reached the
#: subscriber before the revoke answered: a clear majority, with room for a loaded machine
#: (the server waits at most signal_wait_ms, and the client's threads still race).
ROUNDS = 20
TYPICAL = 12


def test_the_revocation_set_holds_the_mandate_before_the_revoke_answers_in_the_typical_case(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = example().build(
        ledger.url, ledger.keys["pep"], tmp_path / "gateway", pdp_timeout=PDP_TIMEOUT
    )
    gateway.subscriber.start()
    assert gateway.subscriber.wait_connected(10.0)
    held_before_answer = 0
    try:
        warm = ledger.mandate()["mandate_id"]  # the subscriber fetches the JWKS on its first SET
        ledger.revoke(warm)
        assert eventually(lambda: gateway.guard.is_revoked(warm))
        for _ in range(ROUNDS):
            mandate_id = ledger.mandate()["mandate_id"]
            ledger.revoke(mandate_id)  # returns once the answer is read
            held_before_answer += gateway.guard.is_revoked(mandate_id)
            assert eventually(lambda m=mandate_id: gateway.guard.is_revoked(m))
        waits = ledger.metric("mission_ledger_signal_waits_total")
    finally:
        gateway.subscriber.stop()
        gateway.guard.close()
        asyncio.run(gateway.pdp.aclose())
    with capsys.disabled():
        print(
            f"\n[pep e2e] revocation set held the Mandate before the revoke answered in "
            f"{held_before_answer}/{ROUNDS} rounds; the server's waits: {waits}"
        )
    assert held_before_answer >= TYPICAL
    # every revoke found the subscriber connected to this server and waited for it
    assert waits["sent"] + waits.get("timeout", 0) == ROUNDS + 1


def test_restarted_subscriber_resumes_from_its_cursor_and_gets_both_revocations_once(
    ledger: Ledger, tmp_path: Path
) -> None:
    stream_id, cursor = ledger.stream(), tmp_path / "cursor"
    revoked: list[str] = []

    def record(claims: dict[str, Any]) -> None:
        revoked.append(claims["sub_id"]["session"]["id"])

    first, second = ledger.mandate()["mandate_id"], ledger.mandate()["mandate_id"]
    running = subscriber(ledger, stream_id, cursor, on_mandate_revoked=record)
    ledger.revoke(first)
    assert eventually(lambda: first in revoked)
    running.stop()
    saved = cursor.read_text()
    ledger.revoke(second)  # while no subscriber runs
    restarted = subscriber(ledger, stream_id, cursor, on_mandate_revoked=record)
    try:
        assert eventually(lambda: second in revoked)
        time.sleep(0.5)  # anything delivered twice would arrive by now
    finally:
        restarted.stop()
    assert int(cursor.read_text()) > int(saved)
    assert revoked == [first, second]


def test_rotated_signing_key_is_fetched_on_first_sight_of_its_kid(
    ledger: Ledger, server_env: dict[str, str], tmp_path: Path
) -> None:
    revoked: list[str] = []
    running = subscriber(
        ledger,
        ledger.stream(),
        tmp_path / "cursor",
        on_mandate_revoked=lambda claims: revoked.append(claims["sub_id"]["session"]["id"]),
    )
    try:
        before = ledger.mandate()["mandate_id"]
        ledger.revoke(before)
        assert eventually(lambda: before in revoked)
        assert running.jwks is not None
        fetches = running.jwks.fetches
        # The cache refetches on an unknown kid at most once a second: a rotation picked up
        # within a second of the fetch above would be (rightly) refused a refetch.
        time.sleep(JWKS_MIN_REFRESH_SECONDS)
        rotated = cli(server_env, "keys", "rotate-signing", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = json.loads(rotated.stdout)["kid"]
        signed_by_new_key = ledger.mandate()
        while _kid(signed_by_new_key["token"]) != new_kid:  # the server reloads keys each tick
            time.sleep(0.2)
            signed_by_new_key = ledger.mandate()
        ledger.revoke(signed_by_new_key["mandate_id"])
        assert eventually(lambda: signed_by_new_key["mandate_id"] in revoked)
        assert running.jwks.fetches == fetches + 1
        assert running.rejected_total == 0
    finally:
        running.stop()


def _kid(token: str) -> str:
    import base64  # noqa: PLC0415

    header = token.split(".", maxsplit=1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def test_poll_subscriber_receives_a_revocation_and_acknowledges_it(
    ledger: Ledger, tmp_path: Path
) -> None:
    stream_id = str(
        ledger.post(
            "pep",
            "/ssf/streams",
            {"delivery": {"method": "urn:ietf:rfc:8936"}, "resources": PEP_SCOPE},
        )["stream_id"]
    )
    revoked: list[str] = []
    running = subscriber(
        ledger,
        stream_id,
        tmp_path / "cursor",
        delivery="poll",
        on_mandate_revoked=lambda claims: revoked.append(claims["sub_id"]["session"]["id"]),
    )
    try:
        mandate_id = ledger.mandate()["mandate_id"]
        ledger.revoke(mandate_id)
        assert eventually(lambda: mandate_id in revoked)
        assert running.rejected_total == 0
    finally:
        running.stop()
    assert revoked == [mandate_id]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [
        ("execute_all", [True, False, True]),
        ("deny_on_first_deny", [True, False]),
        ("permit_on_first_permit", [True]),
    ],
)
def test_the_toolkit_reads_the_servers_batch_answers_whole(
    ledger: Ledger, semantic: str, expected: list[bool]
) -> None:
    """The server's short-circuit answers are the shapes the toolkit accepts (it denies
    every item of any other)."""
    issued = ledger.mandate()
    context = {"mandate": issued["token"], "proof": {"jkt": ledger.jkt}}
    subject = {"type": "agent", "id": "agent-pep", "properties": {"instance_id": "i-1"}}
    resource = {"type": "api", "id": "https://erp.example.com/invoices/7"}
    batch = {
        "subject": subject,
        "resource": resource,
        "context": context,
        "evaluations": [
            {"action": {"name": "invoices.read"}},
            {"action": {"name": "invoices.void"}},
            {"action": {"name": "invoices.read"}},
        ],
        "options": {"evaluations_semantic": semantic},
    }
    with PdpClient(ledger.url, ledger.keys["pep"], timeout=PDP_TIMEOUT) as pdp:
        decisions = pdp.evaluations(batch)
    assert [d.allowed for d in decisions] == expected
    assert all(d.reason != "pdp_unavailable" for d in decisions)
