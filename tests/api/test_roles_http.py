"""Credentials and roles (SPEC 3 "every endpoint except discovery documents, JWKS and health
checks requires a bearer credential", SPEC 4, SPEC 6.3): public documents answer without a
credential; every other endpoint answers 401 with ``WWW-Authenticate`` without one or with a
bogus one; a valid key without the role gets 403 and writes nothing; ``admin`` passes every
role check."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import BaseRoute, Route

from api.app import create_app
from ledger.domain.actors import Actor
from ledger.settings import Settings
from tests.api.conftest import Api, assert_problem

CLI = Actor(type="cli", name="test")
PUBLIC = {
    "/.well-known/mission-authority-server",
    "/.well-known/authzen-configuration",
    "/.well-known/ssf-configuration",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
}


def _routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """The endpoints under ``routes``, looking inside included routers (no prefixes used)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        elif isinstance(route, Route):
            yield route


def _operations() -> list[tuple[str, str]]:
    """Every (method, path) the app routes, path parameters filled with a dummy id (taken
    from the router itself, so routes outside the OpenAPI schema are covered too). The
    console's pages (``/console/``) are for people signed in with a session cookie, not a
    bearer credential: tests/api/test_console_http.py walks them the same way."""
    app = create_app(Settings(data_dir=Path("unused")))
    return sorted(
        (method, re.sub(r"\{[^}]+\}", "x", route.path))
        for route in _routes(app.routes)
        for method in route.methods or ()
        if method != "HEAD" and not route.path.startswith("/console/")
    )


PROTECTED = [(m, p) for m, p in _operations() if p not in PUBLIC]


def _send(api: Api, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {"json": {}} if method in {"POST", "PUT", "PATCH"} else {}
    return api.client.request(method, path, headers=headers, **body)


# ---------------------------------------------------------------------- public documents


def test_discovery_document_needs_no_credential(shared_api: Api) -> None:
    response = shared_api.client.get("/.well-known/mission-authority-server")
    assert response.status_code == 200
    metadata = response.json()
    issuer = metadata["issuer"]
    assert issuer == shared_api.settings.public_issuer
    assert metadata["mission_submission_endpoint"] == f"{issuer}/v1/proposals"
    assert metadata["mission_status_endpoint"] == f"{issuer}/mission-status"
    assert metadata["mission_lifecycle_endpoint"].startswith(f"{issuer}/v1/missions/")
    assert metadata["mission_event_stream_endpoint"].startswith(issuer)
    assert metadata["mission_max_stale_seconds"] == shared_api.settings.mission_max_stale_seconds
    assert metadata["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert "ES256" in metadata["mission_status_signing_alg_values_supported"]


def test_healthz_needs_no_credential(shared_api: Api) -> None:
    response = shared_api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_needs_no_credential_and_reports_the_head_position(shared_api: Api) -> None:
    response = shared_api.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["head_position"] == shared_api.head()
    assert body["read_model_position"] <= body["head_position"]


# ---------------------------------------------------------------------- 401


def test_the_endpoint_inventory_covers_the_governance_surface() -> None:
    paths = {p for _, p in PROTECTED}
    assert {"/v1/proposals", "/v1/missions", "/v1/missions/x/lifecycle"} <= paths
    assert {"/access/v1/evaluation", "/openapi.json"} <= paths


def test_only_discovery_jwks_and_health_are_public() -> None:
    public = {p for _, p in _operations()} - {p for _, p in PROTECTED}
    assert public == PUBLIC


def test_the_openapi_description_is_served_to_any_credential(shared_api: Api) -> None:
    response = shared_api.client.get("/openapi.json", headers=shared_api.auth("agent"))
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "post" in paths["/access/v1/evaluation"]
    assert "post" in paths["/v1/proposals"]


def test_no_browser_documentation_ui_is_served(shared_api: Api) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = shared_api.client.get(path, headers=shared_api.auth("admin"))
        assert response.status_code == 404, path


@pytest.mark.parametrize(
    "credential",
    [None, "Bearer mlk_bogus.not-a-key", "Bearer not-a-key-at-all", "Basic dXNlcjpwYXNz"],
    ids=["missing", "unknown-api-key", "garbage-token", "basic-scheme"],
)
def test_every_protected_endpoint_answers_401_with_a_bearer_challenge(
    shared_api: Api, credential: str | None
) -> None:
    headers = {} if credential is None else {"Authorization": credential}
    head = shared_api.head()
    for method, path in PROTECTED:
        response = _send(shared_api, method, path, headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer "), (method, path)
        assert_problem(response, 401, "unauthorized")
    assert shared_api.head() == head


@pytest.mark.postgres_smoke
def test_a_revoked_api_key_answers_401(api: Api) -> None:
    assert api.client.get("/v1/missions", headers=api.auth("auditor")).status_code == 200
    api.services.ledger.revoke_api_key(name="auditor-1", actor=CLI, reason="test")
    assert api.services.follower.wait(api.head(), 2.0)
    response = api.client.get("/v1/missions", headers=api.auth("auditor"))
    assert_problem(response, 401, "unauthorized")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# ---------------------------------------------------------------------- 403


def _mission_and_proposal(api: Api) -> tuple[str, str]:
    mission = api.mission()
    proposal = api.submit()
    return mission["id"], proposal["submission_id"]


FORBIDDEN = [
    # who, method, path template, body
    ("pep", "GET", "/v1/missions", None),
    ("agent", "GET", "/v1/missions", None),
    ("approver", "GET", "/v1/missions", None),
    ("pep", "GET", "/v1/missions/{mission}", None),
    ("pep", "GET", "/v1/proposals", None),
    ("operator", "GET", "/v1/proposals/{proposal}", None),
    ("agent", "POST", "/v1/proposals/{proposal}/approve", {}),
    ("operator", "POST", "/v1/proposals/{proposal}/approve", {}),
    ("agent", "POST", "/v1/proposals/{proposal}/deny", {"reason": "no"}),
    ("approver", "POST", "/v1/proposals/{proposal}/cancel", {"reason": "no"}),
    (
        "operator",
        "POST",
        "/v1/missions/{mission}/lifecycle",
        {"operation": "resume", "reason": "r"},
    ),
    ("agent", "POST", "/v1/missions/{mission}/lifecycle", {"operation": "revoke", "reason": "r"}),
    (
        "auditor",
        "POST",
        "/v1/missions/{mission}/lifecycle",
        {"operation": "suspend", "reason": "r"},
    ),
    (
        "approver",
        "POST",
        "/v1/missions/{mission}/lifecycle",
        {"operation": "complete", "reason": "r"},
    ),
    (
        "agent",
        "POST",
        "/v1/missions/{mission}/containment",
        {"contained": [{"resource": "https://erp.example.com"}], "reason": "r"},
    ),
    ("agent", "GET", "/v1/missions/{mission}/events", None),
    ("pep", "GET", "/v1/missions/{mission}/events", None),
    ("operator", "POST", "/v1/missions/{mission}/expansion", {"intent": {}}),
]


@pytest.mark.parametrize(
    ("who", "method", "template", "body"),
    FORBIDDEN,
    ids=[f"{w}-{m}-{t.rsplit('/', 1)[-1].strip('{}')}" for w, m, t, _ in FORBIDDEN],
)
def test_a_valid_key_without_the_role_gets_403_and_writes_nothing(
    shared_api: Api, who: str, method: str, template: str, body: dict[str, Any] | None
) -> None:
    mission_id, proposal_id = _mission_and_proposal(shared_api)
    if "resume" in str(body):
        assert shared_api.lifecycle(mission_id, "suspend").status_code == 200
    path = template.format(mission=mission_id, proposal=proposal_id)
    head = shared_api.head()
    kwargs = {} if body is None else {"json": body}
    response = shared_api.client.request(method, path, headers=shared_api.auth(who), **kwargs)
    assert_problem(response, 403, "forbidden")
    assert shared_api.head() == head


def test_proposals_are_submitted_only_by_agents(shared_api: Api) -> None:
    head = shared_api.head()
    response = shared_api.client.post(
        "/v1/proposals", json=shared_api.proposal_body(), headers=shared_api.auth("approver")
    )
    assert_problem(response, 403, "forbidden")
    assert shared_api.head() == head


def test_admin_passes_every_role_check(api: Api) -> None:
    submitted = api.client.post(
        "/v1/proposals", json=api.proposal_body(), headers=api.auth("admin")
    )
    assert submitted.status_code == 202, submitted.text
    approved = api.client.post(
        f"/v1/proposals/{submitted.json()['submission_id']}/approve",
        json={},
        headers=api.auth("admin"),
    )
    assert approved.status_code == 201, approved.text
    mission_id = approved.json()["id"]
    assert api.lifecycle(mission_id, "suspend", who="admin").status_code == 200
    assert api.lifecycle(mission_id, "resume", who="admin").status_code == 200
    listed = api.client.get("/v1/missions", headers=api.auth("admin"))
    assert [m["id"] for m in listed.json()["data"]] == [mission_id]
    events = api.client.get(f"/v1/missions/{mission_id}/events", headers=api.auth("admin"))
    assert events.status_code == 200


def test_writes_are_recorded_with_the_actor(api: Api) -> None:
    mission = api.mission()
    assert api.lifecycle(mission["id"], "suspend").status_code == 200
    events = api.events(mission["id"])
    suspended = events[-1]
    assert suspended["type"] == "Suspended"
    assert suspended["data"]["actor"]["name"] == "operator-1"
    assert mission["approver"]["name"] == "approver-1"
