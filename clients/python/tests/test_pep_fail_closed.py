"""Fail closed: whatever goes wrong between the PEP and the PDP, the answer is a deny with
reason ``pdp_unavailable`` and the protected app is never called."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mission_ledger_pep import AsyncPdpClient, MissionLedgerMiddleware, PdpClient
from pep_asgi import Recorder, call

REQUEST = {
    "subject": {"type": "agent", "id": "a1"},
    "action": {"name": "invoices.read"},
    "resource": {"type": "api", "id": "https://erp.example.com/invoices/7"},
}


def mapper(scope: Any, headers: Any) -> dict[str, Any]:
    return dict(REQUEST)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers (a PDP slower than any timeout)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def answering(status: int, content: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


def guarded(pdp: AsyncPdpClient) -> tuple[MissionLedgerMiddleware, Recorder]:
    app = Recorder()
    return MissionLedgerMiddleware(app, pdp=pdp, mapper=mapper), app


def assert_refused(response: dict[str, Any], app: Recorder) -> None:
    assert response["status"] == 403
    assert response["headers"]["content-type"] == "application/problem+json"
    assert response["body"]["reason"] == "pdp_unavailable"
    assert app.calls == 0


def test_stopped_pdp_is_a_403_and_the_app_is_not_called() -> None:
    pdp = AsyncPdpClient(f"http://127.0.0.1:{free_port()}", "k", timeout=1.0)
    middleware, app = guarded(pdp)
    assert_refused(asyncio.run(call(middleware)), app)


def test_pdp_slower_than_the_timeout_is_a_403_within_the_timeout(silent_server: str) -> None:
    pdp = AsyncPdpClient(silent_server, "k", timeout=0.3)
    middleware, app = guarded(pdp)
    started = time.monotonic()
    response = asyncio.run(call(middleware))
    assert time.monotonic() - started < 2.0
    assert_refused(response, app)


def test_pdp_answering_500_is_a_403() -> None:
    pdp = AsyncPdpClient("http://pdp.test", "k", transport=answering(500, b'{"decision": true}'))
    middleware, app = guarded(pdp)
    assert_refused(asyncio.run(call(middleware)), app)


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"decision": "true"}', b"[true]", b'{"decision": true, "context": 3}', b""],
)
def test_pdp_answering_malformed_json_is_a_403(content: bytes) -> None:
    pdp = AsyncPdpClient("http://pdp.test", "k", transport=answering(200, content))
    middleware, app = guarded(pdp)
    assert_refused(asyncio.run(call(middleware)), app)


def test_a_mapper_that_raises_refuses_instead_of_passing() -> None:
    def broken(scope: Any, headers: Any) -> dict[str, Any]:
        raise KeyError("subject")

    app = Recorder()
    pdp = AsyncPdpClient("http://pdp.test", transport=answering(200, b'{"decision": true}'))
    middleware = MissionLedgerMiddleware(app, pdp=pdp, mapper=broken)
    response = asyncio.run(call(middleware))
    assert response["status"] == 403
    assert app.calls == 0


def test_sync_client_fails_closed_on_a_stopped_pdp() -> None:
    decision = PdpClient(f"http://127.0.0.1:{free_port()}", timeout=0.5).evaluate(REQUEST)
    assert (decision.allowed, decision.reason) == (False, "pdp_unavailable")


def test_sync_client_fails_closed_on_timeout(silent_server: str) -> None:
    decision = PdpClient(silent_server, timeout=0.3).evaluate(REQUEST)
    assert (decision.allowed, decision.reason) == (False, "pdp_unavailable")


def test_batch_with_a_broken_answer_denies_every_item() -> None:
    client = PdpClient("http://pdp.test", transport=answering(502, b""))
    batch = {**REQUEST, "evaluations": [{}, {}, {}]}
    assert [d.allowed for d in client.evaluations(batch)] == [False, False, False]


def test_search_failure_finds_nothing() -> None:
    client = PdpClient("http://pdp.test", transport=answering(200, b"{}"))
    assert client.search_resource(REQUEST)["results"] == []
