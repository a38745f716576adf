"""SSF 1.0 transmitter management over HTTP (reference/standards.md 3.1-3.6, SPEC 3 and 6.3):
metadata, stream create/read/update/replace/delete, status, subjects and verification, with
every status code the specification fixes; only the ``pep`` role, only one's own streams,
and a refused request never writes anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from httpx import Response

from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.domain.streams import (
    EVENTS_BY_DEFAULT,
    EVENTS_SUPPORTED,
    LIFECYCLE_CHANGE,
    POLL,
    PUSH,
    SESSION_REVOKED,
    SSE,
)
from tests.api.pdp.conftest import Harness

PROBLEM = "application/problem+json"
UNKNOWN_EVENT = "urn:example:secevent:events:type_4"
EMAIL = {"format": "email", "email": "alice@example.com"}


# ---------------------------------------------------------------------- helpers


def issuer(h: Harness) -> str:
    return str(h.client.app.state.services.settings.public_issuer)  # type: ignore[attr-defined]


#: The resources a PEP's stream is scoped to (required for it: SPEC 7.3 signal scoping).
SCOPE = {"resources": ["https://api.example.com/"]}


def create(h: Harness, body: dict[str, Any] | None = None, who: str = "pep") -> dict[str, Any]:
    response = h.client.post("/ssf/streams", json={**SCOPE, **(body or {})}, headers=h.auth(who))
    assert response.status_code == 201, response.text
    return dict(response.json())


def read(h: Harness, stream_id: str, who: str = "pep") -> Response:
    return h.client.get("/ssf/streams", params={"stream_id": stream_id}, headers=h.auth(who))


def second_pep(h: Harness) -> dict[str, str]:
    """Headers of another PEP (``pep-2``), which owns nothing of ``pep-1``'s."""
    services = h.client.app.state.services  # type: ignore[attr-defined]
    issued = services.ledger.issue_api_key(
        name="pep-2", role=Role.PEP, actor=Actor(type="cli", name="test")
    )
    assert services.follower.wait(h.head(), 5)
    return {"Authorization": f"Bearer {issued.secret}"}


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = dict(response.json())
    assert body["status"] == status
    return body


def position(response: Response) -> int:
    value = response.headers["ledger-position"]
    assert value.isdigit()
    return int(value)


# One call per management endpoint (stream id filled in): method, path, params, body.
Call = tuple[str, str, dict[str, str] | None, dict[str, Any] | None]


def calls(stream_id: str) -> dict[str, Call]:
    sid = {"stream_id": stream_id}
    return {
        "create": ("POST", "/ssf/streams", None, {**SCOPE}),
        "read": ("GET", "/ssf/streams", sid, None),
        "list": ("GET", "/ssf/streams", None, None),
        "update": ("PATCH", "/ssf/streams", None, {**sid, "description": "d"}),
        "replace": ("PUT", "/ssf/streams", None, {**sid, **SCOPE}),
        "delete": ("DELETE", "/ssf/streams", sid, None),
        "status-read": ("GET", "/ssf/status", sid, None),
        "status-update": ("POST", "/ssf/status", None, {**sid, "status": "paused"}),
        "subject-add": ("POST", "/ssf/subjects/add", None, {**sid, "subject": EMAIL}),
        "subject-remove": ("POST", "/ssf/subjects/remove", None, {**sid, "subject": EMAIL}),
        "verify": ("POST", "/ssf/verify", None, {**sid, "state": "s"}),
    }


ENDPOINTS = list(calls("x"))
PER_STREAM = [name for name in ENDPOINTS if name not in {"create", "list"}]


def send(h: Harness, call: Call, headers: dict[str, str]) -> Response:
    method, path, params, body = call
    kwargs: dict[str, Any] = {"params": params} if params else {}
    if body is not None:
        kwargs["json"] = body
    return h.client.request(method, path, headers=headers, **kwargs)


# ---------------------------------------------------------------------- metadata


def test_metadata_names_every_endpoint_under_the_issuer(harness: Harness) -> None:
    response = harness.client.get("/.well-known/ssf-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    metadata = response.json()
    base = issuer(harness)
    assert metadata == {
        "spec_version": "1_0",
        "issuer": base,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "delivery_methods_supported": [PUSH, POLL, SSE],
        "configuration_endpoint": f"{base}/ssf/streams",
        "status_endpoint": f"{base}/ssf/status",
        "add_subject_endpoint": f"{base}/ssf/subjects/add",
        "remove_subject_endpoint": f"{base}/ssf/subjects/remove",
        "verification_endpoint": f"{base}/ssf/verify",
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
        "default_subjects": "ALL",
    }
    assert "critical_subject_members" not in metadata


def test_metadata_endpoints_are_the_ones_served(harness: Harness) -> None:
    metadata = harness.client.get("/.well-known/ssf-configuration").json()
    base = issuer(harness)
    stream = create(harness)
    path = metadata["status_endpoint"].removeprefix(base)
    response = harness.client.get(
        path, params={"stream_id": stream["stream_id"]}, headers=harness.auth("pep")
    )
    assert response.status_code == 200
    jwks = harness.client.get(metadata["jwks_uri"].removeprefix(base))
    assert jwks.status_code == 200


# ---------------------------------------------------------------------- create


def test_create_answers_201_with_the_full_configuration(harness: Harness) -> None:
    head = harness.head()
    body = {
        "delivery": {"method": POLL},
        "events_requested": [SESSION_REVOKED, LIFECYCLE_CHANGE],
        "description": "PEP gateway eu-1",
        **SCOPE,
    }
    response = harness.client.post("/ssf/streams", json=body, headers=harness.auth("pep"))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    assert position(response) > head
    config = response.json()
    stream_id = config["stream_id"]
    assert stream_id
    assert config["iss"] == issuer(harness)
    assert config["aud"] == "pep-1"
    assert config["delivery"] == {
        "method": POLL,
        "endpoint_url": f"{issuer(harness)}/ssf/poll/{stream_id}",
    }
    assert config["events_supported"] == list(EVENTS_SUPPORTED)
    assert config["events_requested"] == [SESSION_REVOKED, LIFECYCLE_CHANGE]
    assert set(config["events_delivered"]) == {SESSION_REVOKED, LIFECYCLE_CHANGE}
    assert config["description"] == "PEP gateway eu-1"
    assert config["min_verification_interval"] == 10
    assert config["signing_alg"] == "ES256"
    assert config["resources"] == SCOPE["resources"]


def test_create_without_delivery_is_poll_with_the_transmitter_endpoint_url(
    harness: Harness,
) -> None:
    config = create(harness)
    assert config["delivery"] == {
        "method": POLL,
        "endpoint_url": f"{issuer(harness)}/ssf/poll/{config['stream_id']}",
    }
    assert "events_requested" not in config
    assert "description" not in config
    assert config["events_delivered"] == list(EVENTS_BY_DEFAULT)


def test_create_with_sse_delivery_answers_the_sse_endpoint_url(harness: Harness) -> None:
    config = create(harness, {"delivery": {"method": SSE}})
    assert config["delivery"] == {
        "method": SSE,
        "endpoint_url": f"{issuer(harness)}/ssf/streams/{config['stream_id']}/events",
    }


@pytest.mark.parametrize("after", ["abc", "-1", "\u00b2", "\u0661", "9" * 19])
def test_an_sse_cursor_that_is_not_an_event_id_is_400(harness: Harness, after: str) -> None:
    config = create(harness, {"delivery": {"method": SSE}})
    response = harness.client.get(
        f"/ssf/streams/{config['stream_id']}/events",
        params={"after": after},
        headers=harness.auth("pep"),
    )
    body = assert_problem(response, 400)
    assert body["errors"][0]["pointer"] == "/after"


def test_events_delivered_is_supported_intersected_with_requested(harness: Harness) -> None:
    config = create(harness, {"events_requested": [SESSION_REVOKED, UNKNOWN_EVENT]})
    assert config["events_requested"] == [SESSION_REVOKED, UNKNOWN_EVENT]
    assert config["events_delivered"] == [SESSION_REVOKED]
    assert set(config["events_delivered"]) <= set(config["events_supported"])


def test_create_ignores_transmitter_members_in_the_body(harness: Harness) -> None:
    config = create(
        harness,
        {
            "stream_id": "mine",
            "iss": "https://evil.example.com",
            "aud": "someone-else",
            "events_delivered": [],
            "min_verification_interval": 0,
        },
    )
    assert config["stream_id"] != "mine"
    assert config["iss"] == issuer(harness)
    assert config["aud"] == "pep-1"
    assert config["events_delivered"] == list(EVENTS_BY_DEFAULT)
    assert config["min_verification_interval"] == 10


UNSUPPORTED = [
    {"delivery": {"method": "urn:example:carrier-pigeon"}},
    {"delivery": {"method": PUSH}},  # push needs the receiver's endpoint_url
    {"delivery": {"method": PUSH, "endpoint_url": "http://receiver.example.com/events"}},
    {"delivery": {"method": POLL, "authorization_header": "Bearer x"}},
    {"signing_alg": "HS256"},
    {"signing_alg": "none"},
]


def test_create_with_an_unsupported_configuration_is_400_and_writes_nothing(
    harness: Harness,
) -> None:
    head = harness.head()
    for body in UNSUPPORTED:
        response = harness.client.post(
            "/ssf/streams", json={**SCOPE, **body}, headers=harness.auth("pep")
        )
        assert response.status_code == 400, (body, response.text)
        assert_problem(response, 400)
    assert harness.head() == head
    assert harness.client.get("/ssf/streams", headers=harness.auth("pep")).json() == []


def test_an_rs256_stream_gets_an_rs256_key_in_the_jwks(harness: Harness) -> None:
    config = create(harness, {"signing_alg": "RS256"})
    assert config["signing_alg"] == "RS256"
    jwks = harness.client.get("/.well-known/jwks.json").json()
    assert "RS256" in {key["alg"] for key in jwks["keys"]}


@pytest.mark.postgres_smoke
def test_create_honours_idempotency_keys(harness: Harness) -> None:
    headers = {**harness.auth("pep"), "Idempotency-Key": "stream-1"}
    body = {"description": "a", **SCOPE}
    first = harness.client.post("/ssf/streams", json=body, headers=headers)
    again = harness.client.post("/ssf/streams", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["stream_id"] == again.json()["stream_id"]
    assert len(harness.client.get("/ssf/streams", headers=harness.auth("pep")).json()) == 1


# ---------------------------------------------------------------------- read


def test_read_answers_200_with_the_configuration(harness: Harness) -> None:
    created = create(harness, {"description": "r"})
    response = read(harness, created["stream_id"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == created


def test_read_without_stream_id_is_an_array_of_the_callers_streams(harness: Harness) -> None:
    listed = harness.client.get("/ssf/streams", headers=harness.auth("pep"))
    assert listed.status_code == 200
    assert listed.json() == []
    first = create(harness, {"description": "one"})
    second = create(harness, {"description": "two", "delivery": {"method": SSE}})
    create(harness, who="admin")  # someone else's
    listed = harness.client.get("/ssf/streams", headers=harness.auth("pep"))
    assert listed.headers["cache-control"] == "no-store"
    assert listed.json() == [first, second]


def test_an_unknown_stream_is_404(harness: Harness) -> None:
    for stream_id in ("0123456789abcdef0123456789abcdef", "not/even-an-id", "x" * 500):
        assert_problem(read(harness, stream_id), 404)


def test_another_callers_stream_is_404_on_every_endpoint(harness: Harness) -> None:
    theirs = create(harness)
    other = second_pep(harness)
    head = harness.head()
    for endpoint in PER_STREAM:
        response = send(harness, calls(theirs["stream_id"])[endpoint], other)
        assert_problem(response, 404)
    assert harness.head() == head
    assert read(harness, theirs["stream_id"]).json() == theirs  # unchanged for its owner


def test_another_caller_lists_none_of_ones_streams(harness: Harness) -> None:
    create(harness)
    other = second_pep(harness)
    assert harness.client.get("/ssf/streams", headers=other).json() == []


# ---------------------------------------------------------------------- credentials and roles


@pytest.mark.parametrize(
    "credential",
    [None, "Bearer mlk_bogus.not-a-key", "Bearer not-a-key", "Basic dXNlcjpwYXNz"],
    ids=["missing", "unknown-key", "garbage", "basic"],
)
def test_every_management_endpoint_answers_401_without_a_valid_credential(
    harness: Harness, credential: str | None
) -> None:
    stream_id = create(harness)["stream_id"]
    headers = {} if credential is None else {"Authorization": credential}
    head = harness.head()
    for endpoint in ENDPOINTS:
        response = send(harness, calls(stream_id)[endpoint], headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer "), endpoint
    assert harness.head() == head


@pytest.mark.parametrize("who", ["agent", "operator", "approver", "auditor"])
def test_a_role_other_than_pep_gets_403_and_writes_nothing(harness: Harness, who: str) -> None:
    stream_id = create(harness)["stream_id"]
    head = harness.head()
    for endpoint in ENDPOINTS:
        response = send(harness, calls(stream_id)[endpoint], harness.auth(who))
        assert_problem(response, 403)
    assert harness.head() == head


def test_admin_passes_the_pep_check(harness: Harness) -> None:
    config = create(harness, who="admin")
    assert config["aud"] == "admin-1"
    assert read(harness, config["stream_id"], who="admin").status_code == 200


# ---------------------------------------------------------------------- update and replace


def test_patch_changes_only_the_receiver_members_present(harness: Harness) -> None:
    created = create(harness, {"events_requested": [SESSION_REVOKED], "description": "before"})
    response = harness.client.patch(
        "/ssf/streams",
        json={"stream_id": created["stream_id"], "description": "after"},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert position(response) > 0
    updated = response.json()
    assert updated == {**created, "description": "after"}
    assert read(harness, created["stream_id"]).json() == updated


def test_patch_accepts_transmitter_members_equal_to_their_current_values(
    harness: Harness,
) -> None:
    created = create(harness, {"events_requested": [SESSION_REVOKED, LIFECYCLE_CHANGE]})
    echoed = {
        **created,
        "events_delivered": list(reversed(created["events_delivered"])),
        "aud": [created["aud"]],
        "description": "echo",
    }
    response = harness.client.patch("/ssf/streams", json=echoed, headers=harness.auth("pep"))
    assert response.status_code == 200, response.text
    assert response.json()["description"] == "echo"


def test_patch_with_null_removes_that_receiver_member(harness: Harness) -> None:
    created = create(harness, {"description": "gone soon", "events_requested": [SESSION_REVOKED]})
    response = harness.client.patch(
        "/ssf/streams",
        json={"stream_id": created["stream_id"], "description": None},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 200, response.text
    assert "description" not in response.json()
    assert response.json()["events_requested"] == [SESSION_REVOKED]


def test_put_removes_the_receiver_members_left_out(harness: Harness) -> None:
    created = create(
        harness,
        {
            "delivery": {"method": SSE},
            "events_requested": [SESSION_REVOKED],
            "description": "to be removed",
        },
    )
    response = harness.client.put(
        "/ssf/streams",
        json={"stream_id": created["stream_id"], **SCOPE},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    replaced = response.json()
    assert "description" not in replaced
    assert "events_requested" not in replaced
    assert replaced["events_delivered"] == list(EVENTS_BY_DEFAULT)
    assert replaced["delivery"]["method"] == POLL
    assert read(harness, created["stream_id"]).json() == replaced


def test_put_sets_the_receiver_members_given(harness: Harness) -> None:
    created = create(harness, {"description": "old"})
    response = harness.client.put(
        "/ssf/streams",
        json={
            "stream_id": created["stream_id"],
            "delivery": {"method": SSE},
            "events_requested": [LIFECYCLE_CHANGE],
            "description": "new",
            **SCOPE,
        },
        headers=harness.auth("pep"),
    )
    assert response.status_code == 200, response.text
    replaced = response.json()
    assert replaced["description"] == "new"
    assert replaced["events_delivered"] == [LIFECYCLE_CHANGE]
    assert replaced["delivery"]["endpoint_url"].endswith(
        f"/ssf/streams/{created['stream_id']}/events"
    )


WRONG_TRANSMITTER_MEMBERS = [
    ("events_delivered", []),
    ("events_delivered", [SESSION_REVOKED]),
    ("events_supported", [LIFECYCLE_CHANGE]),
    ("iss", "https://elsewhere.example.com"),
    ("aud", "pep-2"),
    ("min_verification_interval", 0),
    ("delivery", {"method": POLL, "endpoint_url": "https://elsewhere.example.com/poll"}),
]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_transmitter_member_different_from_its_value_is_400_and_writes_nothing(
    harness: Harness, method: str
) -> None:
    created = create(harness, {"description": "kept"})
    head = harness.head()
    for member, value in WRONG_TRANSMITTER_MEMBERS:
        body = {
            "stream_id": created["stream_id"],
            "description": "changed",
            **SCOPE,
            member: value,
        }
        response = harness.client.request(
            method, "/ssf/streams", json=body, headers=harness.auth("pep")
        )
        problem = assert_problem(response, 400)
        assert problem["errors"][0]["pointer"].startswith(f"/{member}"), member
    assert harness.head() == head
    assert read(harness, created["stream_id"]).json() == created


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_update_without_stream_id_is_400(harness: Harness, method: str) -> None:
    create(harness)
    head = harness.head()
    response = harness.client.request(
        method, "/ssf/streams", json={"description": "x"}, headers=harness.auth("pep")
    )
    assert_problem(response, 400)
    assert harness.head() == head


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_update_of_an_unknown_stream_is_404(harness: Harness, method: str) -> None:
    response = harness.client.request(
        method, "/ssf/streams", json={"stream_id": "abc123"}, headers=harness.auth("pep")
    )
    assert_problem(response, 404)


# ---------------------------------------------------------------------- delete


def test_delete_answers_204_and_the_stream_is_404_afterwards(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    response = harness.client.delete(
        "/ssf/streams", params={"stream_id": stream_id}, headers=harness.auth("pep")
    )
    assert response.status_code == 204
    assert response.content == b""
    assert position(response) > 0
    assert_problem(read(harness, stream_id), 404)
    assert harness.client.get("/ssf/streams", headers=harness.auth("pep")).json() == []
    again = harness.client.delete(
        "/ssf/streams", params={"stream_id": stream_id}, headers=harness.auth("pep")
    )
    assert_problem(again, 404)


def test_delete_without_stream_id_is_400(harness: Harness) -> None:
    create(harness)
    head = harness.head()
    assert_problem(harness.client.delete("/ssf/streams", headers=harness.auth("pep")), 400)
    assert harness.head() == head


# ---------------------------------------------------------------------- status


def status_of(h: Harness, stream_id: str) -> Response:
    return h.client.get("/ssf/status", params={"stream_id": stream_id}, headers=h.auth("pep"))


def test_a_new_stream_is_enabled(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    response = status_of(harness, stream_id)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {"stream_id": stream_id, "status": "enabled"}


def test_status_update_echoes_the_new_status_and_reason(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    body = {"stream_id": stream_id, "status": "paused", "reason": "maintenance"}
    response = harness.client.post("/ssf/status", json=body, headers=harness.auth("pep"))
    assert response.status_code == 200, response.text
    assert position(response) > 0
    assert response.json() == body
    assert status_of(harness, stream_id).json() == body
    enabled = harness.client.post(
        "/ssf/status",
        json={"stream_id": stream_id, "status": "enabled"},
        headers=harness.auth("pep"),
    )
    assert enabled.json() == {"stream_id": stream_id, "status": "enabled"}


def test_status_update_with_an_unknown_status_is_400(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    head = harness.head()
    for status in ("on", "ENABLED", "", 1, None, ["paused"]):
        response = harness.client.post(
            "/ssf/status",
            json={"stream_id": stream_id, "status": status},
            headers=harness.auth("pep"),
        )
        assert_problem(response, 400)
    assert harness.head() == head


def test_status_of_an_unknown_stream_is_404(harness: Harness) -> None:
    assert_problem(status_of(harness, "abc123"), 404)
    response = harness.client.post(
        "/ssf/status", json={"stream_id": "abc123", "status": "paused"}, headers=harness.auth("pep")
    )
    assert_problem(response, 404)


def test_status_read_without_stream_id_is_400(harness: Harness) -> None:
    assert_problem(harness.client.get("/ssf/status", headers=harness.auth("pep")), 400)


# ---------------------------------------------------------------------- subjects


def test_add_subject_answers_200_with_an_empty_body(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    response = harness.client.post(
        "/ssf/subjects/add",
        json={"stream_id": stream_id, "subject": EMAIL, "verified": True},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert position(response) > 0


def test_remove_subject_answers_204(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    response = harness.client.post(
        "/ssf/subjects/remove",
        json={"stream_id": stream_id, "subject": EMAIL},
        headers=harness.auth("pep"),
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert position(response) > 0


MALFORMED_SUBJECTS = [
    None,
    "alice@example.com",
    ["email", "alice@example.com"],
    {"email": "alice@example.com"},  # no format
    {"format": 5, "email": "alice@example.com"},
    {"format": "email"},  # names nothing
    {"format": "email", "email": 5},
    {"format": "complex", "user": {"email": "x"}},  # member without a format
]


@pytest.mark.parametrize("path", ["/ssf/subjects/add", "/ssf/subjects/remove"])
def test_a_malformed_subject_is_400_and_writes_nothing(harness: Harness, path: str) -> None:
    stream_id = create(harness)["stream_id"]
    head = harness.head()
    for subject in MALFORMED_SUBJECTS:
        body: dict[str, Any] = {"stream_id": stream_id}
        if subject is not None:
            body["subject"] = subject
        response = harness.client.post(path, json=body, headers=harness.auth("pep"))
        assert_problem(response, 400)
    assert harness.head() == head


def test_add_subject_with_a_non_boolean_verified_is_400(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    head = harness.head()
    response = harness.client.post(
        "/ssf/subjects/add",
        json={"stream_id": stream_id, "subject": EMAIL, "verified": "yes"},
        headers=harness.auth("pep"),
    )
    assert_problem(response, 400)
    assert harness.head() == head


# ---------------------------------------------------------------------- verification


def verify(h: Harness, stream_id: str, state: str = "VGhpcyBpcyBh") -> Response:
    return h.client.post(
        "/ssf/verify", json={"stream_id": stream_id, "state": state}, headers=h.auth("pep")
    )


def test_verify_answers_204_and_an_immediate_second_request_429(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    first = verify(harness, stream_id)
    assert first.status_code == 204, first.text
    assert first.content == b""
    assert position(first) > 0
    head = harness.head()
    second = verify(harness, stream_id)
    assert_problem(second, 429)
    assert int(second.headers["retry-after"]) > 0
    assert harness.head() == head


def test_verify_is_accepted_again_after_the_minimum_interval(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    interval = read(harness, stream_id).json()["min_verification_interval"]
    assert verify(harness, stream_id).status_code == 204
    harness.clock.advance(seconds=interval)
    assert verify(harness, stream_id).status_code == 204


def test_verify_without_state_is_accepted(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    response = harness.client.post(
        "/ssf/verify", json={"stream_id": stream_id}, headers=harness.auth("pep")
    )
    assert response.status_code == 204, response.text


# ---------------------------------------------------------------------- bad input

BODY_ENDPOINTS = [
    "create",
    "update",
    "replace",
    "status-update",
    "subject-add",
    "subject-remove",
    "verify",
]
RAW_BODIES = {
    "invalid-json": b'{"stream_id": ',
    "empty": b"",
    "array": b"[]",
    "string": b'"stream"',
    "number": b"42",
    "null": b"null",
    "nan": b'{"stream_id": NaN}',
}


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
def test_a_body_that_is_not_a_json_object_is_400_and_writes_nothing(
    harness: Harness, endpoint: str
) -> None:
    stream_id = create(harness)["stream_id"]
    method, path, _, _ = calls(stream_id)[endpoint]
    head = harness.head()
    for name, raw in RAW_BODIES.items():
        response = harness.client.request(
            method,
            path,
            content=raw,
            headers={**harness.auth("pep"), "Content-Type": "application/json"},
        )
        assert response.status_code == 400, (name, response.text)
        assert_problem(response, 400)
    assert harness.head() == head


WRONG_TYPES: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("create", lambda _: {"delivery": POLL}),
    ("create", lambda _: {"events_requested": SESSION_REVOKED}),
    ("create", lambda _: {"events_requested": [5]}),
    ("create", lambda _: {"description": 5}),
    ("create", lambda _: {"signing_alg": 256}),
    ("update", lambda s: {"stream_id": 5, "description": "x"}),
    ("update", lambda s: {"stream_id": s, "description": ["x"]}),
    ("replace", lambda s: {"stream_id": s, "delivery": {"method": 8936}}),
    ("status-update", lambda s: {"stream_id": s, "status": "paused", "reason": 5}),
    ("status-update", lambda s: {"stream_id": [s], "status": "paused"}),
    ("subject-add", lambda s: {"stream_id": None, "subject": EMAIL}),
    ("subject-remove", lambda s: {"stream_id": {"id": s}, "subject": EMAIL}),
    ("verify", lambda s: {"stream_id": s, "state": 5}),
    ("verify", lambda s: {"stream_id": 5}),
    ("verify", lambda s: {"state": "missing stream id"}),
]


def test_a_member_of_the_wrong_type_is_400_and_writes_nothing(harness: Harness) -> None:
    stream_id = create(harness)["stream_id"]
    head = harness.head()
    for endpoint, body in WRONG_TYPES:
        method, path, _, _ = calls(stream_id)[endpoint]
        response = harness.client.request(
            method, path, json=body(stream_id), headers=harness.auth("pep")
        )
        assert response.status_code == 400, (endpoint, body(stream_id), response.text)
        assert_problem(response, 400)
    assert harness.head() == head


# ---------------------------------------------------------------------- read-your-writes


@pytest.mark.postgres_smoke
def test_every_management_write_answers_ledger_position_and_is_readable_at_once(
    harness: Harness,
) -> None:
    services = harness.client.app.state.services  # type: ignore[attr-defined]
    stream_id = create(harness)["stream_id"]
    names = ["update", "status-update", "subject-add", "subject-remove", "verify", "replace"]
    writes = [calls(stream_id)[name] for name in [*names, "delete"]]
    for call in writes:
        response = send(harness, call, harness.auth("pep"))
        assert response.status_code in {200, 204}, (call, response.text)
        written_at = position(response)
        assert written_at <= harness.head()
        assert services.follower.position >= written_at  # read models include it already
