"""Mission Status: a signed, audience-scoped, no-store statement with identical 404s."""

from __future__ import annotations

import json
from typing import Any

import jwt as pyjwt
import pytest

from tests.api.pdp.conftest import Harness

ERP = "https://erp.example.com"
AUTHORITY = [
    {"type": "mission_resource_access", "resource": ERP, "actions": ["invoices.read"]},
    {"type": "mission_resource_access", "resource": "https://crm.example.com", "actions": ["x"]},
]


def status(h: Harness, form: dict[str, str], who: str = "pep") -> Any:
    return h.client.post(
        "/mission-status",
        content="&".join(f"{k}={v}" for k, v in form.items()),
        headers={**h.auth(who), "Content-Type": "application/x-www-form-urlencoded"},
    )


def claims_of(h: Harness, token: str) -> dict[str, Any]:
    jwks = h.client.get("/.well-known/jwks.json").json()
    header = pyjwt.get_unverified_header(token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert header["typ"] == "mission-status-response+jwt"
    return dict(
        pyjwt.decode(
            token,
            pyjwt.PyJWK.from_json(json.dumps(key)).key,
            algorithms=["ES256"],
            # The harness clock is frozen in the past: check the signature, not the time.
            options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
        )
    )


def test_status_is_a_signed_no_store_statement(harness: Harness) -> None:
    mission = harness.mission(AUTHORITY)
    response = status(harness, {"mission_id": mission, "nonce": "n-1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/mission-status-response+jwt")
    assert response.headers["cache-control"] == "no-store"
    claims = claims_of(harness, response.text)
    assert claims["nonce"] == "n-1"
    assert claims["mission"]["id"] == mission
    assert claims["mission"]["state"] == "active"
    assert claims["mission"]["version"] == 1
    assert claims["mission"]["fresh_until"] <= claims["mission"]["expires_at"]
    assert "authorization_details" not in claims


def test_audience_scopes_the_authority(harness: Harness) -> None:
    mission = harness.mission(AUTHORITY)
    claims = claims_of(harness, status(harness, {"mission_id": mission, "audience": ERP}).text)
    assert claims["aud"] == ERP
    assert [e["resource"] for e in claims["authorization_details"]] == [ERP]


def test_an_audience_that_is_not_a_url_gets_no_authority(harness: Harness) -> None:
    mission = harness.mission(AUTHORITY)
    response = status(harness, {"mission_id": mission, "audience": "https://[erp.example.com"})
    assert response.status_code == 200, response.text
    assert claims_of(harness, response.text)["authorization_details"] == []


@pytest.mark.postgres_smoke
def test_status_follows_the_lifecycle(harness: Harness) -> None:
    mission = harness.mission(AUTHORITY)
    harness.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "suspend", "reason": "x"},
        headers=harness.auth("operator"),
    )
    claims = claims_of(harness, status(harness, {"mission_id": mission}).text)
    assert claims["mission"]["state"] == "suspended"
    assert claims["mission"]["version"] == 2


def test_unknown_and_unauthorised_ids_get_identical_404s(harness: Harness) -> None:
    mission = harness.mission(AUTHORITY)
    unauthorised = status(harness, {"mission_id": mission}, who="agent2")
    unknown = status(harness, {"mission_id": "msn_" + "x" * 32}, who="agent2")
    assert unauthorised.status_code == unknown.status_code == 404
    strip = lambda body: {k: v for k, v in body.items() if k != "detail"}  # noqa: E731
    assert strip(unauthorised.json()) == strip(unknown.json())


def test_missing_mission_id_is_400(harness: Harness) -> None:
    assert status(harness, {"nonce": "x"}).status_code == 400


def test_status_needs_a_credential(harness: Harness) -> None:
    response = harness.client.post("/mission-status", content="mission_id=msn_x")
    assert response.status_code == 401
