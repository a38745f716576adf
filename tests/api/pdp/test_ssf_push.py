"""SSF push delivery (RFC 8935): a real receiver on 127.0.0.1 gets every SET of a push
stream, in order, with the right headers, only once it answers 202; paused streams hold,
disabled streams drop; several replicas never send one SET twice."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt as pyjwt
import pytest

from api.workers.push import SET_MEDIA_TYPE, Outcome, PushDelivery, backoff_seconds
from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.streams import LIFECYCLE_CHANGE, PUSH, STREAM_UPDATED, StreamStatus
from ledger.persistence.snapshots import StateCodec
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from projections.follower import LogFollower
from projections.signals import SignalLog
from tests.api.pdp.conftest import TEST_KEK, Harness
from tests.builders import active_mission

PEP = Actor(type="api_key", name="pep-1", role="pep")
AUTHORITY = [
    {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["r"]}
]
HANG = "hang"

# ---------------------------------------------------------------------- the test receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: str
    answer: int | str


@dataclass
class Receiver:
    """A threaded HTTP receiver that records every request and answers from ``script``
    (one answer per request, in order: a status code or ``HANG``), then 202."""

    server: ThreadingHTTPServer | None = None
    requests: list[Received] = field(default_factory=list)
    script: list[int | str] = field(default_factory=list)
    delay: float = 0.0
    max_in_flight: Counter[str] = field(default_factory=Counter)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def take(self, path: str, headers: dict[str, str], body: str) -> int | str:
        """Record a request as it arrives; return the answer to give it."""
        with self._lock:
            self._in_flight[path] += 1
            self.max_in_flight[path] = max(self.max_in_flight[path], self._in_flight[path])
            answer = self.script.pop(0) if self.script else 202
            self.requests.append(Received(path, headers, body, answer))
            return answer

    def done(self, path: str) -> None:
        with self._lock:
            self._in_flight[path] -= 1

    def seen(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def jtis(self, path: str | None = None, *, accepted: bool = False) -> list[str]:
        return [jti_of(r.body) for r in self.seen(path) if not accepted or r.answer == 202]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.receiver.take(self.path, headers, body)
        if self.receiver.delay:
            time.sleep(self.receiver.delay)
        # Done before answering: the transmitter may send the next SET once it has the answer.
        self.receiver.done(self.path)
        if answer == HANG:
            self.receiver.release.wait(10)
            self.close_connection = True
            return
        assert isinstance(answer, int)
        payload = b""
        if answer == 400:
            payload = json.dumps({"err": "invalid_key", "description": "unknown kid"}).encode()
        self.send_response(answer)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    handler = type("Handler", (_Handler,), {"receiver": rec})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    rec.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield rec
    rec.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def jti_of(token: str) -> str:
    return str(pyjwt.decode(token, options={"verify_signature": False})["jti"])


# ---------------------------------------------------------------------- helpers


def push_worker(h: Harness) -> PushDelivery:
    worker = h.client.app.state.push  # type: ignore[attr-defined]
    assert isinstance(worker, PushDelivery)
    return worker


def ledger_of(h: Harness) -> Ledger:
    ledger = h.client.app.state.services.ledger  # type: ignore[attr-defined]
    assert isinstance(ledger, Ledger)
    return ledger


def push_stream(
    h: Harness,
    url: str,
    authorization: str | None = None,
    resources: list[str] | None = None,
) -> str:
    ledger = ledger_of(h)
    ledger.allow_http_loopback_push = True
    delivery = {"method": PUSH, "endpoint_url": url}
    if authorization is not None:
        delivery["authorization_header"] = authorization
    config: dict[str, Any] = {"delivery": delivery}
    if resources is not None:
        config["resources"] = resources
    written = ledger.create_stream(actor=PEP, aud="pep-1", receiver_config=config)
    return written.value.stream_id


def set_status(h: Harness, stream_id: str, status: StreamStatus) -> None:
    ledger_of(h).set_stream_status(actor=PEP, stream_id=stream_id, status=status, reason=None)


def logged(h: Harness, stream_id: str) -> list[str]:
    """The stream's SET log (jtis in seq order), once the read side has caught up."""
    services = h.client.app.state.services  # type: ignore[attr-defined]
    assert services.follower.wait(h.head(), 5)
    rows = ledger_of(h).database.fetchall(
        "SELECT jti FROM set_log WHERE stream_id = %s ORDER BY seq", (stream_id,)
    )
    return [str(r["jti"]) for r in rows]


def push_state(h: Harness, stream_id: str) -> dict[str, Any]:
    row = ledger_of(h).database.fetchone(
        "SELECT * FROM push_state WHERE stream_id = %s", (stream_id,)
    )
    assert row is not None
    return row


def push_state_or_none(h: Harness, stream_id: str, column: str) -> Any:
    row = ledger_of(h).database.fetchone(
        "SELECT * FROM push_state WHERE stream_id = %s", (stream_id,)
    )
    return None if row is None else row[column]


def pump(h: Harness, until: Callable[[], bool], *, timeout: float = 5.0, advance: float = 61):
    """Move the test clock past any backoff and wake the worker until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "push delivery did not get there in time"
        if advance:
            h.clock.advance(seconds=advance)
        push_worker(h).ring()
        time.sleep(0.02)


def settle(h: Harness, seconds: float = 0.4) -> None:
    """Let the worker run a few rounds (moving the clock), expecting nothing in particular."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        h.clock.advance(seconds=61)
        push_worker(h).ring()
        time.sleep(0.02)


def suspend(h: Harness, mission: str) -> None:
    response = h.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "suspend", "reason": "push test"},
        headers=h.auth("operator"),
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------- behaviour


@pytest.mark.postgres_smoke
def test_each_push_carries_the_set_media_type_and_the_stream_authorization(
    harness: Harness, receiver: Receiver
) -> None:
    with_header = push_stream(harness, receiver.url("a"), authorization="Bearer s3cr3t Zz")
    without = push_stream(harness, receiver.url("b"))
    harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen("/a")) == 1 and len(receiver.seen("/b")) == 1)
    a, b = receiver.seen("/a")[0], receiver.seen("/b")[0]
    for request in (a, b):
        assert request.headers["content-type"] == SET_MEDIA_TYPE
        assert request.headers["accept"] == "application/json"
        assert request.body.count(".") == 2  # one compact JWS, nothing else
    assert a.headers["authorization"] == "Bearer s3cr3t Zz"
    assert "authorization" not in b.headers
    assert [jti_of(a.body)] == logged(harness, with_header)
    assert [jti_of(b.body)] == logged(harness, without)
    pump(harness, lambda: push_state_or_none(harness, with_header, "delivered_seq") == 1)


def test_the_pushed_set_verifies_against_the_jwks(harness: Harness, receiver: Receiver) -> None:
    stream = push_stream(harness, receiver.url("s"))
    mission = harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen()) == 1)
    token = receiver.seen()[0].body
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    jwks = harness.client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = pyjwt.decode(
        token,
        pyjwt.PyJWK.from_json(json.dumps(key)).key,
        algorithms=[key["alg"]],
        audience="pep-1",
        # The harness clock is frozen in the past: check the signature, not the time.
        options={"verify_iat": False},
    )
    assert claims["aud"] == "pep-1"
    assert claims["sub_id"] == {"format": "opaque", "id": mission}
    assert list(claims["events"]) == [LIFECYCLE_CHANGE]
    assert [claims["jti"]] == logged(harness, stream)


def test_a_scoped_stream_is_pushed_only_the_sets_of_its_resources(
    harness: Harness, receiver: Receiver
) -> None:
    elsewhere = [{**AUTHORITY[0], "resource": "https://crm.example.com/contacts"}]
    stream = push_stream(harness, receiver.url("s"), resources=[AUTHORITY[0]["resource"]])
    harness.mission(elsewhere)  # raised first: pushed first, were it carried
    mission = harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen()) >= 1)
    settle(harness)
    pushed = [pyjwt.decode(r.body, options={"verify_signature": False}) for r in receiver.seen()]
    assert [c["sub_id"] for c in pushed] == [{"format": "opaque", "id": mission}]
    assert [c["jti"] for c in pushed] == logged(harness, stream)


@pytest.mark.postgres_smoke
def test_a_failing_receiver_gets_the_set_again_and_later_sets_wait_behind_it(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.script = [503, 503]
    stream = push_stream(harness, receiver.url("s"))
    mission = harness.mission(AUTHORITY)
    pump(harness, lambda: push_state_or_none(harness, stream, "attempts") == 1, advance=0)
    # Backing off: the clock has not moved, so no retry yet, and nothing recorded as sent.
    time.sleep(0.3)
    assert len(receiver.seen()) == 1
    state = push_state(harness, stream)
    assert state["delivered_seq"] == 0
    assert state["attempts"] == 1
    assert state["last_error"] == "HTTP 503"
    assert state["next_attempt_at"] > int(harness.clock.now().timestamp() * 1_000_000)
    # Two more SETs queue up behind the failing one.
    suspend(harness, mission)
    harness.mission(AUTHORITY)
    log = logged(harness, stream)
    assert len(log) == 3
    pump(harness, lambda: receiver.jtis(accepted=True) == log)
    assert receiver.jtis() == [log[0], log[0], log[0], log[1], log[2]]
    assert [r.answer for r in receiver.seen()] == [503, 503, 202, 202, 202]
    settle(harness)
    assert len(receiver.seen()) == 5  # nothing is sent again after its 202
    state = push_state(harness, stream)
    assert (state["delivered_seq"], state["attempts"], state["last_error"]) == (3, 0, None)
    counters = push_worker(harness).counters()
    assert counters["delivered"] == 3
    assert counters["failed_attempts"] == 2


def test_only_202_is_success(harness: Harness, receiver: Receiver) -> None:
    receiver.script = [400, 200, 204, 201]
    stream = push_stream(harness, receiver.url("s"))
    harness.mission(AUTHORITY)
    # The receiver's RFC 8935 error is kept for the operator, and the SET is retried.
    pump(
        harness,
        lambda: (
            push_state_or_none(harness, stream, "last_error")
            == "HTTP 400 err=invalid_key: unknown kid"
        ),
        advance=0,
    )
    log = logged(harness, stream)
    pump(harness, lambda: push_state_or_none(harness, stream, "delivered_seq") == 1)
    assert receiver.jtis() == log * 5
    assert [r.answer for r in receiver.seen()] == [400, 200, 204, 201, 202]


def test_a_timeout_is_a_failure_and_is_retried(harness: Harness, receiver: Receiver) -> None:
    push_worker(harness).timeout = 0.3
    receiver.script = [HANG]
    stream = push_stream(harness, receiver.url("s"))
    harness.mission(AUTHORITY)
    pump(harness, lambda: push_state_or_none(harness, stream, "attempts") == 1, advance=0)
    assert str(push_state(harness, stream)["last_error"]).startswith("timeout after 0.3s")
    log = logged(harness, stream)
    pump(harness, lambda: receiver.jtis(accepted=True) == log)
    assert receiver.jtis() == log * 2


def test_a_paused_stream_holds_its_sets_and_releases_them_in_order(
    harness: Harness, receiver: Receiver
) -> None:
    stream = push_stream(harness, receiver.url("s"))
    set_status(harness, stream, StreamStatus.PAUSED)
    first = harness.mission(AUTHORITY)
    suspend(harness, first)
    harness.mission(AUTHORITY)
    log = logged(harness, stream)
    assert len(log) == 3  # held in the log
    settle(harness)
    assert receiver.seen() == []
    set_status(harness, stream, StreamStatus.ENABLED)
    pump(harness, lambda: len(receiver.seen()) == 3)
    assert receiver.jtis() == log


def test_a_transmitter_initiated_disable_is_pushed_before_holding(
    harness: Harness, receiver: Receiver
) -> None:
    stream = push_stream(harness, receiver.url("s"))
    harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen()) == 1)
    admin = Actor(type="api_key", name="admin-1", role="admin")  # not the owner
    ledger_of(harness).set_stream_status(
        actor=admin, stream_id=stream, status=StreamStatus.DISABLED, reason="abuse"
    )
    harness.mission(AUTHORITY)  # raised while disabled: dropped
    log = logged(harness, stream)
    assert len(log) == 2
    pump(harness, lambda: len(receiver.seen()) == 2)
    announced = pyjwt.decode(receiver.seen()[1].body, options={"verify_signature": False})
    assert announced["events"][STREAM_UPDATED]["status"] == "disabled"
    assert receiver.jtis() == log


def test_a_disabled_stream_never_receives_what_was_raised_while_disabled(
    harness: Harness, receiver: Receiver
) -> None:
    stream = push_stream(harness, receiver.url("s"))
    harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen()) == 1)
    set_status(harness, stream, StreamStatus.DISABLED)
    harness.mission(AUTHORITY)
    settle(harness)
    assert len(receiver.seen()) == 1
    set_status(harness, stream, StreamStatus.ENABLED)
    harness.mission(AUTHORITY)
    log = logged(harness, stream)
    assert len(log) == 2  # the event raised while disabled was never appended
    pump(harness, lambda: len(receiver.seen()) == 2)
    settle(harness)
    assert receiver.jtis() == log


def test_a_deleted_stream_gets_nothing_more(harness: Harness, receiver: Receiver) -> None:
    receiver.script = [503]
    stream = push_stream(harness, receiver.url("s"))
    harness.mission(AUTHORITY)
    pump(harness, lambda: len(receiver.seen()) == 1, advance=0)
    ledger_of(harness).delete_stream(actor=PEP, stream_id=stream)
    logged(harness, stream)
    settle(harness)
    assert len(receiver.seen()) == 1


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempts, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (8, 60.0), (500, 60.0)):
        for _ in range(20):
            delay = backoff_seconds(attempts)
            assert ceiling / 2 <= delay <= ceiling


def test_the_worker_stops_promptly(harness: Harness) -> None:
    worker = PushDelivery(ledger_of(harness), interval=0.5)
    worker.start()
    time.sleep(0.1)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 1.0


# ---------------------------------------------------------------------- replicas


@pytest.mark.postgres
def test_replicas_never_push_one_set_twice(postgres_url: str, receiver: Receiver) -> None:
    """Two stores on one PostgreSQL database (as two processes would be), two workers on
    each: every SET reaches its receiver exactly once, in order, one at a time."""
    settings = Settings(database_url=postgres_url, key_encryption_key=TEST_KEK)
    ledgers = [open_ledger(settings), open_ledger(settings)]
    workers: list[PushDelivery] = []
    try:
        writer = ledgers[0]
        keyring = Keyring.open(settings, writer.database)
        keyring.ensure("ES256", writer.clock.now())
        follower = LogFollower(
            writer,
            durable=[SignalLog(StateCodec(writer.mapper.transcoder), keyring, writer.issuer)],
        )
        writer.allow_http_loopback_push = True
        names = ["r0", "r1", "r2"]
        streams = {
            name: writer.create_stream(
                actor=PEP,
                aud="pep-1",
                receiver_config={"delivery": {"method": PUSH, "endpoint_url": receiver.url(name)}},
            ).value.stream_id
            for name in names
        }
        for _ in range(8):
            active_mission(writer)
        follower.catch_up()
        receiver.delay = 0.005
        receiver.script = [503 if i % 7 == 3 else 202 for i in range(40)]
        workers = [
            PushDelivery(ledger, interval=0.02, backoff_base=0.01, backoff_cap=0.05)
            for ledger in ledgers
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        expected = {
            name: [
                str(r["jti"])
                for r in writer.database.fetchall(
                    "SELECT jti FROM set_log WHERE stream_id = %s ORDER BY seq", (stream_id,)
                )
            ]
            for name, stream_id in streams.items()
        }
        assert all(len(jtis) == 8 for jtis in expected.values())
        deadline = time.monotonic() + 20
        while any(
            not set(expected[n]) <= set(receiver.jtis(f"/{n}", accepted=True)) for n in names
        ):
            assert time.monotonic() < deadline, "replicas did not deliver everything"
            time.sleep(0.05)
        time.sleep(0.2)
        for name in names:
            accepted = receiver.jtis(f"/{name}", accepted=True)
            assert accepted == expected[name]  # each exactly once, in order
            assert receiver.max_in_flight[f"/{name}"] == 1  # never two at once
        assert sum(w.counters()["delivered"] for w in workers) == 24
        assert any(w.attempt(streams["r0"]) is Outcome.IDLE for w in workers)
    finally:
        for worker in workers:
            worker.stop()
        for ledger in ledgers:
            ledger.close()
