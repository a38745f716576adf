"""No input to the PEP's other reads makes the service fail: any Mission Status request
member (``mission_id``, ``audience``, ``nonce``, as JSON or as a form), any token sent to
introspection and any egress denial id is answered or refused with a clear 4xx, never a
server error, on both stores. (An ``audience`` that ``urlsplit`` refuses, such as an
unclosed bracket, once was a server error.)"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api
from tests.awkward_values import FUZZ, assert_answered, awkward_text

AWKWARD = awkward_text(
    "\u0000",
    "http://[x",
    "https://[::1",
    "https://erp.example.com]",
    "https://erp.example.com\n",
    "msn_\n",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.e30.",
    max_size=60,
)


@pytest.fixture(scope="module")
def mission_id(store_api: Api) -> str:
    return str(store_api.mission()["id"])


@pytest.mark.parametrize("member", ["mission_id", "audience", "nonce"])
@settings(FUZZ, max_examples=25)
@given(value=AWKWARD)
def test_no_mission_status_request_gives_a_server_error(
    store_api: Api, mission_id: str, member: str, value: str
) -> None:
    body = {"mission_id": mission_id, "audience": "https://erp.example.com", "nonce": "n-1"}
    body[member] = value
    pep = store_api.auth("pep")
    assert_answered(
        store_api.client.post("/mission-status", json=body, headers=pep),
        "json",
        member,
        value,
        problem=False,
    )
    assert_answered(
        store_api.client.post("/mission-status", data=body, headers=pep),
        "form",
        member,
        value,
        problem=False,
    )


@settings(FUZZ, max_examples=40)
@given(value=st.one_of(AWKWARD, st.text(alphabet="abcXYZ019-_.", max_size=200)))
def test_no_introspected_token_gives_a_server_error(store_api: Api, value: str) -> None:
    response = store_api.client.post(
        "/v1/mandates/introspect", json={"token": value}, headers=store_api.auth("pep")
    )
    assert_answered(response, value, problem=False)


@settings(FUZZ, max_examples=40)
@given(value=AWKWARD.filter(lambda text: text not in {"", ".", ".."}))
def test_no_egress_denial_id_gives_a_server_error(store_api: Api, value: str) -> None:
    response = store_api.client.get(
        f"/v1/egress/denials/{quote(value, safe='')}", headers=store_api.auth("pep")
    )
    assert_answered(response, value, problem=False)
