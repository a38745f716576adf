"""The role check comes before the body (hardening C.10): a credential without the role an
operation needs gets 403 whatever it sends, never a 400 judging a body it may not send.

Every ``/v1`` write route is taken from the app's router (FastAPI's routes and plain
Starlette ones such as ``POST /v1/usage``), so a new route is covered (and fails here until
it is given a row in ``CALLERS``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import Route

from api.app import create_app
from ledger.settings import Settings
from tests.api.conftest import Api, assert_problem
from tests.api.test_roles_http import _routes

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
ROLES = ("agent", "approver", "operator", "auditor", "pep")

#: (method, path) -> the roles that pass its role check (``admin`` passes every one).
CALLERS: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/proposals"): {"agent"},
    ("POST", "/v1/proposals/{proposal_id}/approve"): {"approver"},
    ("POST", "/v1/proposals/{proposal_id}/deny"): {"approver"},
    ("POST", "/v1/proposals/{proposal_id}/cancel"): {"agent"},
    ("POST", "/v1/missions/{mission_id}/lifecycle"): {"operator"},
    ("POST", "/v1/missions/{mission_id}/containment"): {"operator"},
    ("POST", "/v1/missions/{mission_id}/expansion"): {"agent"},
    ("POST", "/v1/missions/{mission_id}/completion-events"): {"operator", "agent"},
    ("POST", "/v1/missions/{mission_id}/mandates"): {"agent"},
    ("POST", "/v1/mandates/{mandate_id}/delegations"): {"agent"},
    ("POST", "/v1/mandates/{mandate_id}/narrow"): {"operator", "agent"},
    ("POST", "/v1/mandates/{mandate_id}/revoke"): {"operator"},
    ("POST", "/v1/agents/{client_id}/instances/{instance_id}/revoke"): {"operator"},
    ("POST", "/v1/mandates/introspect"): {"pep"},
    ("POST", "/v1/access-requests/{task_id}/approve"): {"approver"},
    ("POST", "/v1/access-requests/{task_id}/deny"): {"approver"},
    ("POST", "/v1/usage"): {"pep"},
}

MALFORMED = {
    "not-json": b'{"reason": ',
    "not-an-object": b"[1, 2]",
    "wrong-types": b'{"reason": 7, "intent": 7, "operation": 7, "token": 7, "actor": 7}',
}


def _v1_writes() -> list[tuple[str, str]]:
    app = create_app(Settings(data_dir=Path("unused")))
    return sorted(
        (method, route.path)
        for route in _routes(app.routes)
        if isinstance(route, Route) and route.path.startswith("/v1/")
        for method in route.methods or ()
        if method in WRITES
    )


V1_WRITES = _v1_writes()


def test_every_v1_write_route_says_who_may_call_it() -> None:
    assert len(V1_WRITES) >= 13
    assert set(V1_WRITES) == set(CALLERS)


@pytest.mark.parametrize("malformed", list(MALFORMED), ids=list(MALFORMED))
def test_a_credential_without_the_role_gets_403_before_its_body_is_read(
    shared_api: Api, malformed: str
) -> None:
    api = shared_api
    head = api.head()
    refused = []
    for method, template in V1_WRITES:
        path = re.sub(r"\{[^}]+\}", "x", template)
        for who in sorted(set(ROLES) - CALLERS[(method, template)]):
            response = api.client.request(
                method,
                path,
                content=MALFORMED[malformed],
                headers=api.auth(who, **{"Content-Type": "application/json"}),
            )
            assert response.status_code == 403, (who, method, template, response.text)
            assert_problem(response, 403, "forbidden")
            refused.append((who, template))
    assert len(refused) >= 13 * 3
    assert api.head() == head


def test_a_caller_with_the_role_still_gets_400_for_a_malformed_body(shared_api: Api) -> None:
    api = shared_api
    for method, template in V1_WRITES:
        who = sorted(CALLERS[(method, template)])[0]
        path = re.sub(r"\{[^}]+\}", "x", template)
        response = api.client.request(
            method,
            path,
            content=MALFORMED["not-json"],
            headers=api.auth(who, **{"Content-Type": "application/json"}),
        )
        assert response.status_code == 400, (who, method, template, response.text)


def test_no_credential_gets_401_before_its_body_is_read(shared_api: Api) -> None:
    api = shared_api
    for method, template in V1_WRITES:
        path = re.sub(r"\{[^}]+\}", "x", template)
        response = api.client.request(
            method,
            path,
            content=MALFORMED["not-json"],
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 401, (method, template, response.text)
