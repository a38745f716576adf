"""SSF poll delivery over HTTP (RFC 8936, reference/standards.md 3.10 and 10 items 27-30):
the three polling modes, long polls woken by new SETs, held SETs of paused streams, dropped
SETs of disabled streams, receiver errors, the ``{"err", "description"}`` error shape, and
SETs that verify against the JWKS with the SSF profile's claims."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import jwt as pyjwt
import pytest
from httpx import Response

from api.routes import ssf_poll
from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.domain.streams import LIFECYCLE_CHANGE, POLL, SSE, STREAM_UPDATED, VERIFICATION
from tests.api.pdp.conftest import Harness

AUTHORITY = [
    {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["r"]}
]


# ---------------------------------------------------------------------- helpers


def create(h: Harness, body: dict[str, Any] | None = None) -> dict[str, Any]:
    scoped = {"resources": ["https://erp.example.com"], **(body or {})}
    response = h.client.post("/ssf/streams", json=scoped, headers=h.auth("pep"))
    assert response.status_code == 201, response.text
    return dict(response.json())


def stream(h: Harness, body: dict[str, Any] | None = None) -> str:
    return str(create(h, body)["stream_id"])


def poll(h: Harness, stream_id: str, body: dict[str, Any] | None = None) -> Response:
    return h.client.post(f"/ssf/poll/{stream_id}", json=body or {}, headers=h.auth("pep"))


def sets(h: Harness, stream_id: str, **members: Any) -> dict[str, str]:
    """The SETs a ``returnImmediately`` poll answers (``members`` go in the body too)."""
    response = poll(h, stream_id, {"returnImmediately": True, **members})
    assert response.status_code == 200, response.text
    return dict(response.json()["sets"])


def claims(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


def lifecycle_states(tokens: dict[str, str]) -> list[str]:
    return [claims(t)["events"][LIFECYCLE_CHANGE]["state"] for t in tokens.values()]


def suspend(h: Harness, mission: str) -> None:
    response = h.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "suspend", "reason": "poll test"},
        headers=h.auth("operator"),
    )
    assert response.status_code == 200, response.text


def set_status(h: Harness, stream_id: str, status: str) -> None:
    response = h.client.post(
        "/ssf/status", json={"stream_id": stream_id, "status": status}, headers=h.auth("pep")
    )
    assert response.status_code == 200, response.text


def logged(h: Harness, stream_id: str) -> list[str]:
    """Every jti of the stream's SET log, in seq order."""
    services = h.client.app.state.services  # type: ignore[attr-defined]
    assert services.follower.wait(h.head(), 5)
    rows = services.ledger.database.fetchall(
        "SELECT jti FROM set_log WHERE stream_id = %s ORDER BY seq", (stream_id,)
    )
    return [str(r["jti"]) for r in rows]


def assert_poll_error(response: Response, status: int = 400, err: str = "invalid_request") -> None:
    """The one shape of every poll error: RFC 8936's ``err`` and ``description``, in
    problem details."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["err"] == err
    assert isinstance(body["description"], str)
    assert body["description"]
    assert body["description"] == body["detail"]
    assert body["status"] == status


class Background:
    """One poll running in another thread (the TestClient serves requests concurrently)."""

    def __init__(self, h: Harness, stream_id: str, body: dict[str, Any]) -> None:
        self.response: Response | None = None
        self.finished_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(h, stream_id, body))
        self._thread.start()

    def _run(self, h: Harness, stream_id: str, body: dict[str, Any]) -> None:
        self.response = poll(h, stream_id, body)
        self.finished_at = time.monotonic()

    def result(self, timeout: float = 30) -> Response:
        self._thread.join(timeout)
        assert self.response is not None, "the poll did not answer"
        return self.response

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


# ---------------------------------------------------------------------- consistency


@pytest.mark.postgres_smoke
def test_a_write_answers_before_the_signal_log_and_a_poll_then_waits_for_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes wait for the core read models only (boards, index); a poll waits until the
    signal log has reached them, so it still sees the SETs of every answered write."""
    stream_id = stream(harness)
    mission = harness.mission(AUTHORITY)
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    assert services.follower.wait(services.follower.head(), 5)
    release = threading.Event()
    applied = services.signals.apply

    def held(cur: Any, item: Any) -> None:
        release.wait(10)
        applied(cur, item)

    monkeypatch.setattr(services.signals, "apply", held)
    try:
        suspend(harness, mission)  # answers while the signal log is held
        rows = services.ledger.database.fetchall(
            "SELECT seq FROM set_log WHERE stream_id = %s", (stream_id,)
        )
        assert len(rows) == 1  # only the activation so far
        waiting = Background(harness, stream_id, {"returnImmediately": True})
        time.sleep(0.2)
        assert not waiting.done  # the poll waits for the signal log to catch up
    finally:
        release.set()
    assert lifecycle_states(waiting.result().json()["sets"]) == ["active", "suspended"]


# ---------------------------------------------------------------------- the three modes


@pytest.mark.postgres_smoke
def test_poll_only_returns_pending_sets_and_keeps_them_until_acknowledged(
    harness: Harness,
) -> None:
    stream_id = stream(harness)
    mission = harness.mission(AUTHORITY)
    suspend(harness, mission)
    first = poll(harness, stream_id, {"returnImmediately": True})
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    body = first.json()
    assert list(body["sets"]) == logged(harness, stream_id)
    assert lifecycle_states(body["sets"]) == ["active", "suspended"]
    assert body.get("moreAvailable", False) is False
    again = sets(harness, stream_id)
    assert again == body["sets"]  # retransmitted: nothing was acknowledged


def test_acknowledge_only_with_max_events_zero_returns_no_sets(harness: Harness) -> None:
    stream_id = stream(harness)
    harness.mission(AUTHORITY)
    harness.mission(AUTHORITY)
    pending = sets(harness, stream_id)
    assert len(pending) == 2
    first = next(iter(pending))
    started = time.monotonic()
    response = poll(harness, stream_id, {"maxEvents": 0, "ack": [first]})
    assert response.status_code == 200
    assert response.json()["sets"] == {}
    assert time.monotonic() - started < 2  # no long poll
    assert list(sets(harness, stream_id)) == [jti for jti in pending if jti != first]


def test_poll_and_acknowledge_in_one_request(harness: Harness) -> None:
    stream_id = stream(harness)
    mission = harness.mission(AUTHORITY)
    first = sets(harness, stream_id)
    suspend(harness, mission)
    response = poll(harness, stream_id, {"returnImmediately": True, "ack": list(first)})
    assert response.status_code == 200
    second = response.json()["sets"]
    assert len(second) == 1
    assert not set(second) & set(first)
    assert lifecycle_states(second) == ["suspended"]


def test_acknowledged_sets_never_come_back(harness: Harness) -> None:
    stream_id = stream(harness)
    harness.mission(AUTHORITY)
    acknowledged = sets(harness, stream_id)
    assert sets(harness, stream_id, ack=list(acknowledged)) == {}
    harness.mission(AUTHORITY)
    later = sets(harness, stream_id)
    assert len(later) == 1
    assert not set(later) & set(acknowledged)
    # Acknowledging again (or something unknown) changes nothing.
    assert sets(harness, stream_id, ack=[*acknowledged, "unknown-jti"]) == later


def test_more_available_when_max_events_truncates(harness: Harness) -> None:
    stream_id = stream(harness)
    mission = harness.mission(AUTHORITY)
    suspend(harness, mission)
    harness.mission(AUTHORITY)
    log = logged(harness, stream_id)
    assert len(log) == 3
    response = poll(harness, stream_id, {"returnImmediately": True, "maxEvents": 2})
    body = response.json()
    assert list(body["sets"]) == log[:2]
    assert body["moreAvailable"] is True
    rest = poll(harness, stream_id, {"returnImmediately": True, "ack": log[:2]}).json()
    assert list(rest["sets"]) == log[2:]
    assert rest.get("moreAvailable", False) is False


def test_return_immediately_answers_empty_sets_quickly_when_idle(harness: Harness) -> None:
    stream_id = stream(harness)
    started = time.monotonic()
    response = poll(harness, stream_id, {"returnImmediately": True})
    assert time.monotonic() - started < 1.0
    assert response.status_code == 200
    assert response.json()["sets"] == {}
    assert response.json().get("moreAvailable", False) is False


# ---------------------------------------------------------------------- long poll


@pytest.mark.postgres_smoke
def test_a_long_poll_wakes_when_a_mission_changes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssf_poll, "LONG_POLL_SECONDS", 20.0)
    monkeypatch.setattr(ssf_poll, "RECHECK_SECONDS", 60.0)  # only a wake-up can end it early
    stream_id = stream(harness)
    waiting = Background(harness, stream_id, {})
    time.sleep(0.5)
    assert not waiting.done  # nothing pending: the poll waits
    harness.mission(AUTHORITY)
    changed_at = time.monotonic()
    response = waiting.result()
    assert waiting.finished_at - changed_at < 3.0  # well before the 20 s timeout
    assert response.status_code == 200
    assert lifecycle_states(response.json()["sets"]) == ["active"]


def test_a_long_poll_answers_empty_sets_at_its_timeout(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssf_poll, "LONG_POLL_SECONDS", 0.6)
    stream_id = stream(harness)
    started = time.monotonic()
    response = poll(harness, stream_id, {"returnImmediately": False})
    elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 5
    assert response.status_code == 200
    assert response.json()["sets"] == {}


@pytest.mark.postgres_smoke
def test_a_long_poll_on_a_paused_stream_answers_once_it_is_enabled(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssf_poll, "LONG_POLL_SECONDS", 20.0)
    monkeypatch.setattr(ssf_poll, "RECHECK_SECONDS", 60.0)
    stream_id = stream(harness)
    set_status(harness, stream_id, "paused")
    harness.mission(AUTHORITY)  # held
    waiting = Background(harness, stream_id, {})
    time.sleep(0.5)
    assert not waiting.done
    set_status(harness, stream_id, "enabled")
    enabled_at = time.monotonic()
    response = waiting.result()
    assert waiting.finished_at - enabled_at < 3.0
    assert list(response.json()["sets"]) == logged(harness, stream_id)


# ---------------------------------------------------------------------- status


@pytest.mark.postgres_smoke
def test_a_paused_stream_holds_its_sets_and_releases_them_in_order(harness: Harness) -> None:
    stream_id = stream(harness)
    set_status(harness, stream_id, "paused")
    first = harness.mission(AUTHORITY)
    suspend(harness, first)
    harness.mission(AUTHORITY)
    assert sets(harness, stream_id) == {}
    log = logged(harness, stream_id)
    assert len(log) == 3  # held in the log
    set_status(harness, stream_id, "enabled")
    released = sets(harness, stream_id)
    assert list(released) == log
    assert lifecycle_states(released) == ["active", "suspended", "active"]


def test_a_disabled_stream_drops_what_was_raised_while_disabled(harness: Harness) -> None:
    stream_id = stream(harness)
    before = harness.mission(AUTHORITY)
    set_status(harness, stream_id, "disabled")
    during = harness.mission(AUTHORITY)
    assert sets(harness, stream_id) == {}
    set_status(harness, stream_id, "enabled")
    after = harness.mission(AUTHORITY)
    delivered = sets(harness, stream_id)
    subjects = [claims(t)["sub_id"]["id"] for t in delivered.values()]
    assert subjects == [before, after]
    assert during not in subjects


def stream_updates(tokens: dict[str, str]) -> list[str]:
    return [
        claims(t)["events"][STREAM_UPDATED]["status"]
        for t in tokens.values()
        if STREAM_UPDATED in claims(t)["events"]
    ]


def test_a_transmitter_initiated_disable_is_polled_before_holding(harness: Harness) -> None:
    stream_id = stream(harness)
    before = harness.mission(AUTHORITY)
    response = harness.client.post(
        "/ssf/status",
        json={"stream_id": stream_id, "status": "disabled", "reason": "abuse"},
        headers=harness.auth("admin"),  # not the stream's owner: the transmitter
    )
    assert response.status_code == 200, response.text
    harness.mission(AUTHORITY)  # raised while disabled: dropped
    told = sets(harness, stream_id)
    assert stream_updates(told) == ["disabled"]
    assert [claims(t)["sub_id"]["id"] for t in told.values()] == [before, stream_id]
    ack = poll(harness, stream_id, {"ack": list(told), "returnImmediately": True})
    assert ack.json()["sets"] == {}  # then everything is held


def test_a_transmitter_initiated_pause_holds_what_comes_after_its_announcement(
    harness: Harness,
) -> None:
    stream_id = stream(harness)
    response = harness.client.post(
        "/ssf/status",
        json={"stream_id": stream_id, "status": "paused"},
        headers=harness.auth("admin"),
    )
    assert response.status_code == 200, response.text
    harness.mission(AUTHORITY)  # held
    told = sets(harness, stream_id)
    assert stream_updates(told) == ["paused"]
    assert len(told) == 1
    assert len(logged(harness, stream_id)) == 2


def test_a_removed_subject_is_left_out_of_the_poll(harness: Harness) -> None:
    stream_id = stream(harness)
    mission = harness.mission(AUTHORITY)
    subject = {"format": "opaque", "id": mission}
    removed = harness.client.post(
        "/ssf/subjects/remove",
        json={"stream_id": stream_id, "subject": subject},
        headers=harness.auth("pep"),
    )
    assert removed.status_code == 204
    acknowledged = sets(harness, stream_id)
    sets(harness, stream_id, ack=list(acknowledged))
    suspend(harness, mission)
    assert sets(harness, stream_id) == {}


# ---------------------------------------------------------------------- receiver errors


def test_set_errs_are_accepted_and_end_those_sets_delivery(harness: Harness) -> None:
    stream_id = stream(harness)
    harness.mission(AUTHORITY)
    harness.mission(AUTHORITY)
    failed, kept = list(sets(harness, stream_id))
    response = poll(
        harness,
        stream_id,
        {
            "returnImmediately": True,
            "setErrs": {failed: {"err": "invalid_key", "description": "unknown kid"}},
        },
    )
    assert response.status_code == 200, response.text
    assert list(response.json()["sets"]) == [kept]


MALFORMED = {
    "invalid-json": b'{"maxEvents": ',
    "empty": b"",
    "array": b"[]",
    "string": b'"poll"',
    "null": b"null",
    "negative-max": b'{"maxEvents": -1}',
    "string-max": b'{"maxEvents": "5"}',
    "bool-max": b'{"maxEvents": true}',
    "float-max": b'{"maxEvents": 1.5}',
    "string-immediately": b'{"returnImmediately": "yes"}',
    "ack-string": b'{"ack": "jti-1"}',
    "ack-numbers": b'{"ack": [1, 2]}',
    "ack-control-chars": b'{"ack": ["a\\u0000b"]}',
    "set-errs-array": b'{"setErrs": [{"err": "invalid_key"}]}',
    "set-errs-string": b'{"setErrs": {"jti-1": "invalid_key"}}',
    "set-errs-no-err": b'{"setErrs": {"jti-1": {"description": "x"}}}',
    "set-errs-number-description": b'{"setErrs": {"jti-1": {"err": "x", "description": 5}}}',
}


def test_a_malformed_poll_body_is_400_with_err_and_description(harness: Harness) -> None:
    stream_id = stream(harness)
    harness.mission(AUTHORITY)
    pending = sets(harness, stream_id)
    for name, raw in MALFORMED.items():
        response = harness.client.post(
            f"/ssf/poll/{stream_id}",
            content=raw,
            headers={**harness.auth("pep"), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, name
        assert_poll_error(response)
    assert sets(harness, stream_id) == pending  # nothing was acknowledged


def test_polling_a_stream_not_delivered_by_poll_is_400_with_err(harness: Harness) -> None:
    stream_id = stream(harness, {"delivery": {"method": SSE}})
    assert_poll_error(poll(harness, stream_id, {"returnImmediately": True}))


def test_members_rfc_8936_does_not_name_are_ignored(harness: Harness) -> None:
    """The caep.dev receiver library always sends ``stream_id`` and ``max_events``."""
    stream_id = stream(harness)
    harness.mission(AUTHORITY)
    pending = sets(harness, stream_id)
    assert pending
    response = poll(
        harness,
        stream_id,
        {"stream_id": stream_id, "max_events": 5, "returnImmediately": True, "acks": []},
    )
    assert response.status_code == 200, response.text
    assert response.json()["sets"] == pending


def test_credential_and_ownership_failures_have_the_poll_error_shape(harness: Harness) -> None:
    stream_id = stream(harness)
    path = f"/ssf/poll/{stream_id}"
    body = {"returnImmediately": True}
    assert_poll_error(harness.client.post(path, json=body), 401, "authentication_failed")
    agent = harness.client.post(path, json=body, headers=harness.auth("agent"))
    assert_poll_error(agent, 403, "access_denied")
    unknown = harness.client.post(
        "/ssf/poll/0123456789abcdef", json=body, headers=harness.auth("pep")
    )
    assert_poll_error(unknown, 404)


# ---------------------------------------------------------------------- credentials


def test_poll_needs_a_credential_the_pep_role_and_the_stream(harness: Harness) -> None:
    stream_id = stream(harness)
    path = f"/ssf/poll/{stream_id}"
    body = {"returnImmediately": True}
    anonymous = harness.client.post(path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer ")
    bogus = harness.client.post(path, json=body, headers={"Authorization": "Bearer mlk_x.y"})
    assert bogus.status_code == 401
    assert harness.client.post(path, json=body, headers=harness.auth("agent")).status_code == 403
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    other = services.ledger.issue_api_key(
        name="pep-2", role=Role.PEP, actor=Actor(type="cli", name="test")
    ).secret
    assert services.follower.wait(harness.head(), 5)
    theirs = harness.client.post(path, json=body, headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 404
    unknown = harness.client.post(
        "/ssf/poll/0123456789abcdef", json=body, headers=harness.auth("pep")
    )
    assert unknown.status_code == 404


# ---------------------------------------------------------------------- the SETs


def test_a_polled_set_verifies_against_the_jwks_with_the_ssf_profile(harness: Harness) -> None:
    config = create(harness)
    mission = harness.mission(AUTHORITY)
    [(jti, token)] = sets(harness, config["stream_id"]).items()
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "secevent+jwt"
    jwks = harness.client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert key["alg"] == header["alg"] == "ES256"
    metadata = harness.client.get("/.well-known/ssf-configuration").json()
    verified = pyjwt.decode(
        token,
        pyjwt.PyJWK.from_json(json.dumps(key)).key,
        algorithms=[key["alg"]],
        audience=config["aud"],
        issuer=metadata["issuer"],
        # The harness clock is frozen in the past: check the signature, not the time.
        options={"verify_iat": False, "require": ["iss", "iat", "jti", "aud"]},
    )
    assert verified["jti"] == jti
    assert verified["iss"] == config["iss"] == metadata["issuer"]
    assert verified["aud"] == config["aud"] == "pep-1"
    assert "sub" not in verified
    assert "exp" not in verified
    assert verified["sub_id"] == {"format": "opaque", "id": mission}
    assert list(verified["events"]) == [LIFECYCLE_CHANGE]
    assert LIFECYCLE_CHANGE in config["events_delivered"]


def test_an_rs256_stream_delivers_sets_that_verify_with_its_rs256_key(harness: Harness) -> None:
    stream_id = stream(harness, {"signing_alg": "RS256"})
    harness.mission(AUTHORITY)
    [token] = sets(harness, stream_id).values()
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    jwks = harness.client.get("/.well-known/jwks.json").json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    verified = pyjwt.decode(
        token,
        pyjwt.PyJWK.from_json(json.dumps(key)).key,
        algorithms=["RS256"],
        audience="pep-1",
        options={"verify_iat": False},
    )
    assert list(verified["events"]) == [LIFECYCLE_CHANGE]


def test_the_verification_set_arrives_by_poll_with_the_state_and_the_stream_subject(
    harness: Harness,
) -> None:
    stream_id = stream(harness, {"delivery": {"method": POLL}})
    response = harness.client.post(
        "/ssf/verify",
        json={"stream_id": stream_id, "state": "VGhpcyBpcyBh"},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 204
    [token] = sets(harness, stream_id).values()
    verification = claims(token)
    assert verification["events"] == {VERIFICATION: {"state": "VGhpcyBpcyBh"}}
    assert verification["sub_id"] == {"format": "opaque", "id": stream_id}
    assert verification["aud"] == "pep-1"
    # A second verification, once the interval has passed, echoes its own state.
    harness.clock.advance(seconds=10)
    again = harness.client.post(
        "/ssf/verify", json={"stream_id": stream_id, "state": "second"}, headers=harness.auth("pep")
    )
    assert again.status_code == 204
    states = [claims(t)["events"][VERIFICATION]["state"] for t in sets(harness, stream_id).values()]
    assert states == ["VGhpcyBpcyBh", "second"]
