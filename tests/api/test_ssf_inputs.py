"""No input to the SSF stream endpoints makes the service fail: any member of a stream's
configuration (create, update, replace), of a status change, a subject, a verification
request or a poll, and any stream id (query, path, body), set to an awkward value, is
accepted or refused with a clear 4xx, never a server error, on both stores."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.streams import POLL
from tests.api.conftest import Api
from tests.awkward_values import FUZZ, assert_answered, awkward_text, changed, json_values

AWKWARD = st.one_of(
    awkward_text("\u0000", POLL + "\n", "https://pep.example.com/ssf\n", "ES256\n", max_size=30),
    json_values(awkward_text()),
)
CAEP = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
CONFIG: dict[str, Any] = {
    "delivery": {"method": POLL},
    "events_requested": [CAEP],
    "description": "property test",
    "resources": ["https://erp.example.com"],
}
#: Where a value goes in a stream configuration.
CONFIG_PATHS: list[tuple[str | int, ...]] = [
    ("delivery",),
    ("delivery", "method"),
    ("delivery", "endpoint_url"),
    ("delivery", "authorization_header"),
    ("events_requested",),
    ("events_requested", 0),
    ("description",),
    ("signing_alg",),
    ("resources",),
    ("resources", 0),
]


@pytest.fixture(scope="module")
def stream_id(store_api: Api) -> str:
    response = store_api.client.post("/ssf/streams", json=CONFIG, headers=store_api.auth("pep"))
    assert response.status_code == 201, response.text
    return str(response.json()["stream_id"])


@pytest.mark.parametrize("path", CONFIG_PATHS, ids=lambda path: "/".join(map(str, path)))
@settings(FUZZ, max_examples=20)
@given(value=AWKWARD)
def test_no_stream_configuration_gives_a_server_error(
    store_api: Api, stream_id: str, path: tuple[str | int, ...], value: Any
) -> None:
    body = changed(CONFIG, path, value)
    pep = store_api.auth("pep")
    assert_answered(
        store_api.client.post("/ssf/streams", json=body, headers=pep), "create", path, value
    )
    update = {"stream_id": stream_id, **body}
    assert_answered(
        store_api.client.patch("/ssf/streams", json=update, headers=pep), "update", path
    )
    assert_answered(store_api.client.put("/ssf/streams", json=update, headers=pep), "replace", path)


@pytest.mark.parametrize("member", ["stream_id", "status", "reason"])
@settings(FUZZ, max_examples=20)
@given(value=AWKWARD)
def test_no_status_change_gives_a_server_error(
    store_api: Api, stream_id: str, member: str, value: Any
) -> None:
    body = {"stream_id": stream_id, "status": "enabled", "reason": "property test"}
    body[member] = value
    response = store_api.client.post("/ssf/status", json=body, headers=store_api.auth("pep"))
    assert_answered(response, member, value)


@pytest.mark.parametrize(
    ("endpoint", "member"),
    [
        ("/ssf/subjects/add", "stream_id"),
        ("/ssf/subjects/add", "subject"),
        ("/ssf/subjects/add", "verified"),
        ("/ssf/subjects/remove", "stream_id"),
        ("/ssf/subjects/remove", "subject"),
        ("/ssf/verify", "stream_id"),
        ("/ssf/verify", "state"),
    ],
)
@settings(FUZZ, max_examples=20)
@given(value=AWKWARD)
def test_no_subject_or_verification_input_gives_a_server_error(
    store_api: Api, stream_id: str, endpoint: str, member: str, value: Any
) -> None:
    body: dict[str, Any] = {
        "stream_id": stream_id,
        "subject": {"format": "opaque", "id": "mis_1"},
        "state": "property test",
    }
    body[member] = value
    response = store_api.client.post(endpoint, json=body, headers=store_api.auth("pep"))
    assert_answered(response, endpoint, member, value)


@pytest.mark.parametrize("member", ["maxEvents", "returnImmediately", "ack", "setErrs"])
@settings(FUZZ, max_examples=20)
@given(value=AWKWARD)
def test_no_poll_request_gives_a_server_error(
    store_api: Api, stream_id: str, member: str, value: Any
) -> None:
    body = {"maxEvents": 0, "returnImmediately": True, member: value}
    response = store_api.client.post(
        f"/ssf/poll/{stream_id}", json=body, headers=store_api.auth("pep")
    )
    assert_answered(response, member, value)


@settings(FUZZ, max_examples=30)
@given(value=AWKWARD.filter(lambda v: isinstance(v, str) and v not in {"", ".", ".."}))
def test_no_stream_id_gives_a_server_error(store_api: Api, stream_id: str, value: str) -> None:
    pep = store_api.auth("pep")
    for method, url in [
        ("GET", "/ssf/streams"),
        ("GET", "/ssf/status"),
        ("DELETE", "/ssf/streams"),
    ]:
        response = store_api.client.request(method, url, params={"stream_id": value}, headers=pep)
        assert_answered(response, method, url, value)
    poll = store_api.client.post(
        f"/ssf/poll/{quote(value, safe='')}", json={"maxEvents": 0}, headers=pep
    )
    assert_answered(poll, "poll", value)
    assert (
        store_api.client.get(
            "/ssf/status", params={"stream_id": stream_id}, headers=pep
        ).status_code
        == 200
    )
