"""Access-request callbacks (SPEC 7.1 "Signals"): each task state change is POSTed once to
the request's https callback, HMAC-signed with the secret returned at creation, retried
with backoff; callbacks to private, loopback or link-local hosts are refused at submission
and again at delivery (DNS rebinding). Delivery goes to a real HTTPS receiver on
127.0.0.1 (a test CA the service is told to trust, with ALLOW_PRIVATE)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.workers.callbacks import CallbackDelivery
from ledger.settings import Settings
from projections.callbacks import delivery_of
from tests.api.pdp.access_flow import Flow, request_body
from tests.api.pdp.conftest import TEST_KEK, Harness, _started
from tests.callback_receiver import TlsReceiver, signature_verifies, tls_receiver
from tests.conftest import MutableClock

REFUSED = "urn:mission-ledger:problem:callback_refused"


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[TlsReceiver]:
    with tls_receiver(tmp_path) as rec:
        yield rec


@pytest.fixture
def open_harness(
    store_settings: Settings, clock: MutableClock, receiver: TlsReceiver
) -> Iterator[Harness]:
    """A service that may call back private addresses and trusts the receiver's CA."""
    update: dict[str, Any] = {
        "access_request_callback_allow_private": True,
        "access_request_callback_ca_file": receiver.ca_file,
    }
    if not store_settings.embedded:
        update["key_encryption_key"] = TEST_KEK
    yield from _started(store_settings.model_copy(update=update), clock)


def worker(h: Harness) -> CallbackDelivery:
    callbacks = h.client.app.state.services.callbacks  # type: ignore[attr-defined]
    assert isinstance(callbacks, CallbackDelivery)
    return callbacks


def row(h: Harness, task_id: str) -> dict[str, Any]:
    services = h.client.app.state.services  # type: ignore[attr-defined]
    found = delivery_of(services.ledger.database, task_id)
    assert found is not None
    return found


def pump(h: Harness, until: Callable[[], bool], *, advance: float = 61) -> None:
    """Move the test clock past any backoff and wake the worker until ``until()``."""
    deadline = time.monotonic() + 10
    while not until():
        assert time.monotonic() < deadline, "the callback did not get there in time"
        h.clock.advance(seconds=advance)
        worker(h).ring()
        time.sleep(0.02)


def settle(h: Harness) -> None:
    """Let the worker run a few more rounds (moving the clock)."""
    deadline = time.monotonic() + 0.4
    while time.monotonic() < deadline:
        h.clock.advance(seconds=61)
        worker(h).ring()
        time.sleep(0.02)


def submitted(h: Harness, callback: dict[str, Any]) -> tuple[Flow, dict[str, Any]]:
    """A pending task with ``callback``: (its flow, the 202 body)."""
    flow = Flow.gated(h)
    denied, decision = flow.evaluate()
    response = flow.submit(request_body(denied, decision, callback=callback))
    assert response.status_code == 202, response.text
    return flow, dict(response.json())


def cancel(h: Harness, task_id: str) -> None:
    url = f"/access/v1/requests/{task_id}/cancel"
    assert h.client.post(url, headers=h.auth("pep")).status_code == 200


def deny(h: Harness, task_id: str) -> None:
    url = f"/v1/access-requests/{task_id}/deny"
    assert h.client.post(url, json={}, headers=h.auth("approver")).status_code == 200


def expire(h: Harness, task_id: str) -> None:
    h.clock.advance(hours=24, seconds=1)
    h.client.app.state.scheduler.tick()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- delivery


@pytest.mark.postgres_smoke
def test_an_approval_is_posted_to_the_callback_signed_with_the_secret_given_at_creation(
    open_harness: Harness, receiver: TlsReceiver
) -> None:
    h = open_harness
    flow, created = submitted(h, {"endpoint": receiver.url(), "state": "pep-ctx-7"})
    secret = created["callback"]["secret"]
    task_id = created["task"]["id"]
    assert flow.approve(task_id).status_code == 200
    pump(h, lambda: len(receiver.seen()) == 1)
    (sent,) = receiver.seen()
    assert sent.headers["content-type"] == "application/json"
    assert signature_verifies(secret, sent)
    body = json.loads(sent.body)
    assert body["task"] == {
        "id": task_id,
        "status": "approved",
        "status_endpoint": created["task"]["status_endpoint"],
    }
    assert body["approval_id"] == flow.status(task_id)["result"]["approval"]["id"]
    assert body["state"] == "pep-ctx-7"


def test_a_signature_made_with_another_secret_does_not_verify(
    open_harness: Harness, receiver: TlsReceiver
) -> None:
    h = open_harness
    flow, created = submitted(h, {"endpoint": receiver.url()})
    _, other = submitted(h, {"endpoint": receiver.url("other")})
    assert created["callback"]["secret"] != other["callback"]["secret"]
    flow.approve(created["task"]["id"])
    pump(h, lambda: len(receiver.seen()) == 1)
    assert not signature_verifies(other["callback"]["secret"], receiver.seen()[0])


@pytest.mark.parametrize(
    ("end", "status"), [(deny, "denied"), (cancel, "cancelled"), (expire, "expired")]
)
def test_each_terminal_state_is_delivered_exactly_once(
    open_harness: Harness,
    receiver: TlsReceiver,
    end: Callable[[Harness, str], None],
    status: str,
) -> None:
    h = open_harness
    _, created = submitted(h, {"endpoint": receiver.url()})
    end(h, created["task"]["id"])
    pump(h, lambda: len(receiver.seen()) == 1)
    settle(h)
    assert [json.loads(r.body)["task"]["status"] for r in receiver.seen()] == [status]
    assert row(h, created["task"]["id"])["delivery"] == "delivered"


def test_a_failing_callback_is_retried_with_the_same_body_after_a_backoff(
    open_harness: Harness, receiver: TlsReceiver
) -> None:
    h = open_harness
    receiver.script = [503, 500]
    flow, created = submitted(h, {"endpoint": receiver.url()})
    task_id = created["task"]["id"]
    flow.approve(task_id)
    pump(h, lambda: len(receiver.seen()) == 1, advance=0)
    time.sleep(0.3)  # the clock stands still: the retry is not due yet
    assert len(receiver.seen()) == 1
    state = row(h, task_id)
    assert (state["delivery"], state["attempts"], state["last_error"]) == ("due", 1, "HTTP 503")
    assert state["next_attempt_at"] > int(h.clock.now().timestamp() * 1_000_000)
    pump(h, lambda: row(h, task_id)["delivery"] == "delivered")
    assert [r.answer for r in receiver.seen()] == [503, 500, 200]
    assert len({r.body for r in receiver.seen()}) == 1
    counters = worker(h).counters()
    assert (counters["delivered"], counters["failed_attempts"]) == (1, 2)
    metrics = h.client.get("/metrics", headers=h.auth("operator")).text
    assert "access_request_callbacks_failed_attempts_total 2.0" in metrics


def test_a_state_left_out_of_the_callbacks_events_is_not_sent(
    open_harness: Harness, receiver: TlsReceiver
) -> None:
    h = open_harness
    _, created = submitted(h, {"endpoint": receiver.url(), "events": ["approved"]})
    deny(h, created["task"]["id"])
    pump(h, lambda: row(h, created["task"]["id"])["delivery"] == "not_requested", advance=0)
    settle(h)
    assert receiver.seen() == []


def test_a_replayed_binding_token_does_not_hand_out_the_secret_again(
    open_harness: Harness, receiver: TlsReceiver
) -> None:
    flow = Flow.gated(open_harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision, callback={"endpoint": receiver.url()})
    assert "secret" in flow.submit(body).json()["callback"]
    again = flow.submit(body)
    assert again.status_code == 200
    assert "callback" not in again.json()


# ---------------------------------------------------------------------- SSRF


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("https://127.0.0.1/cb", "a loopback address"),
        ("https://10.20.30.40/cb", "a private address"),
        ("https://192.168.1.5/cb", "a private address"),
        ("https://169.254.169.254/latest/meta-data", "a link-local address"),
        ("https://[::1]/cb", "a loopback address"),
        ("https://[fe80::1]/cb", "a link-local address"),
        ("https://[::ffff:127.0.0.1]/cb", "a loopback address"),
        ("https://localhost/cb", "resolves to 127.0.0.1, a loopback address"),
        ("http://pep.example.com/cb", "must be an https URL"),
        ("https://user:pw@pep.example.com/cb", "may not carry credentials"),
    ],
)
def test_a_callback_that_is_not_https_to_a_public_address_is_refused_and_writes_nothing(
    harness: Harness, endpoint: str, why: str
) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    before = harness.head()
    response = flow.submit(request_body(denied, decision, callback={"endpoint": endpoint}))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == REFUSED
    assert why in response.json()["detail"]
    assert harness.head() == before


def test_a_callback_host_rebound_to_a_private_address_is_not_called(harness: Harness) -> None:
    """Accepted while the name resolved to a public address; by delivery time it resolves to
    loopback: the connection is refused before it is made, and retried later."""
    answers = {"now": ["93.184.216.34"]}
    worker(harness).resolver = lambda host, port: list(answers["now"])
    flow, created = submitted(harness, {"endpoint": "https://callbacks.example.test/cb"})
    answers["now"] = ["93.184.216.34", "127.0.0.1"]
    task_id = created["task"]["id"]
    flow.approve(task_id)
    pump(harness, lambda: row(harness, task_id)["attempts"] >= 1, advance=0)
    state = row(harness, task_id)
    assert state["delivery"] == "due"
    assert state["last_error"].startswith("refused: ")
    assert "127.0.0.1, a loopback address" in state["last_error"]
