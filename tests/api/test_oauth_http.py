"""JWT access tokens from a configured issuer (SPEC 4): verified through the issuer's JWKS,
scopes mapped to roles, every failure a 401 with a ``WWW-Authenticate`` challenge, a token
without a role scope a 403, and the acting principal recorded in the events it causes.
The SSF scopes: ``ssf.read`` reads streams, ``ssf.manage`` also changes them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from api.app import create_app
from ledger.settings import Settings
from tests.api.conftest import ROLES, Api, assert_problem, issue_keys, with_kek
from tests.conftest import MutableClock

ISSUER = "https://idp.example.com"
AUDIENCE = "https://ledger.example.com"


@dataclass
class Issuer:
    key: ECKey

    def token(self, *, scope: str, **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "user-7",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "scope": scope,
            "client_id": "agent-1",
            **claims,
        }
        header = {"alg": "ES256", "kid": self.key.kid}
        return jwt.encode(header, payload, self.key)


@dataclass
class OAuthApi:
    api: Api
    issuer: Issuer

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def with_scope(self, scope: str, **claims: Any) -> dict[str, str]:
        return self.bearer(self.issuer.token(scope=scope, **claims))


@pytest.fixture
def oauth(store_settings: Settings, clock: MutableClock, tmp_path: Path) -> Iterator[OAuthApi]:
    key = ECKey.generate_key("P-256", parameters={"kid": "idp-1", "use": "sig"}, private=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}), encoding="utf-8")
    settings = with_kek(store_settings).model_copy(
        update={
            "oauth_issuer": ISSUER,
            "oauth_jwks_uri": jwks.as_uri(),
            "oauth_audience": AUDIENCE,
        }
    )
    with TestClient(create_app(settings, clock=clock)) as client:
        api = Api(client=client, keys=issue_keys(client), clock=clock, settings=settings)
        yield OAuthApi(api=api, issuer=Issuer(key))


def test_a_token_with_a_role_scope_is_accepted(oauth: OAuthApi) -> None:
    response = oauth.api.client.get(
        "/v1/missions", headers=oauth.with_scope("mission_ledger.operator")
    )
    assert response.status_code == 200, response.text


def test_an_expired_token_is_401_with_a_challenge(oauth: OAuthApi) -> None:
    past = int(time.time()) - 3600
    headers = oauth.with_scope("mission_ledger.operator", iat=past - 300, exp=past)
    response = oauth.api.client.get("/v1/missions", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_from_another_issuer_is_401(oauth: OAuthApi) -> None:
    headers = oauth.with_scope("mission_ledger.operator", iss="https://evil.example.com")
    assert_problem(oauth.api.client.get("/v1/missions", headers=headers), 401, "unauthorized")


def test_a_token_for_another_audience_is_401(oauth: OAuthApi) -> None:
    headers = oauth.with_scope("mission_ledger.operator", aud="https://other.example.com")
    assert_problem(oauth.api.client.get("/v1/missions", headers=headers), 401, "unauthorized")


def test_a_token_signed_by_a_key_outside_the_jwks_is_401(oauth: OAuthApi) -> None:
    stranger = Issuer(ECKey.generate_key("P-256", parameters={"kid": "idp-1"}, private=True))
    headers = oauth.bearer(stranger.token(scope="mission_ledger.operator"))
    assert_problem(oauth.api.client.get("/v1/missions", headers=headers), 401, "unauthorized")


def test_a_tampered_token_is_401(oauth: OAuthApi) -> None:
    token = oauth.issuer.token(scope="mission_ledger.operator")
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    response = oauth.api.client.get("/v1/missions", headers=oauth.bearer(tampered))
    assert_problem(response, 401, "unauthorized")


def test_a_token_without_a_role_scope_is_403(oauth: OAuthApi) -> None:
    response = oauth.api.client.get("/v1/missions", headers=oauth.with_scope("openid profile"))
    assert_problem(response, 403, "forbidden")


@pytest.mark.postgres_smoke
def test_a_write_records_the_token_subject_and_issuer_as_the_actor(oauth: OAuthApi) -> None:
    mission = oauth.api.mission()
    head = oauth.api.head()
    response = oauth.api.client.post(
        f"/v1/missions/{mission['id']}/lifecycle",
        json={"operation": "suspend", "reason": "checked by the on-call operator"},
        headers=oauth.with_scope("mission_ledger.operator"),
    )
    assert response.status_code == 200, response.text
    assert oauth.api.head() > head
    actor = oauth.api.events(mission["id"])[-1]["data"]["actor"]
    assert (actor["type"], actor["name"], actor["iss"]) == ("oauth", "user-7", ISSUER)


def test_the_ssf_read_scope_lists_streams(oauth: OAuthApi) -> None:
    response = oauth.api.client.get("/ssf/streams", headers=oauth.with_scope("ssf.read"))
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_the_ssf_read_scope_cannot_create_a_stream(oauth: OAuthApi) -> None:
    head = oauth.api.head()
    response = oauth.api.client.post("/ssf/streams", json={}, headers=oauth.with_scope("ssf.read"))
    assert_problem(response, 403, "forbidden")
    assert oauth.api.head() == head


def test_the_ssf_manage_scope_creates_a_stream(oauth: OAuthApi) -> None:
    response = oauth.api.client.post(
        "/ssf/streams", json={}, headers=oauth.with_scope("ssf.manage")
    )
    assert response.status_code == 201, response.text
    assert response.json()["aud"] == "user-7"


def test_api_keys_keep_working_beside_oauth(oauth: OAuthApi) -> None:
    response = oauth.api.client.get("/v1/missions", headers=oauth.api.auth("operator"))
    assert response.status_code == 200
    assert set(oauth.api.keys) == set(ROLES)
