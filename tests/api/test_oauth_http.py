"""JWT access tokens from a configured issuer (SPEC 4): verified through the issuer's JWKS,
scopes mapped to roles, every failure a 401 with a ``WWW-Authenticate`` challenge, a token
without a role scope a 403, and the acting principal recorded in the events it causes.
The SSF scopes: ``ssf.read`` reads streams (and nothing else: it is not the ``pep`` role),
``ssf.manage`` also changes them. A server with an issuer but no audience does not start
unless told to accept any audience; a token without ``kid`` verifies only against the
issuer's one usable signing key."""

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
from joserfc.jwk import ECKey, RSAKey
from pydantic import ValidationError

from api.app import create_app
from ledger.settings import Settings
from tests.api.conftest import ROLES, Api, assert_problem, issue_keys, with_kek
from tests.conftest import MutableClock

ISSUER = "https://idp.example.com"
AUDIENCE = "https://ledger.example.com"


@dataclass
class Issuer:
    key: ECKey

    def token(self, *, scope: str, kid: bool = True, **claims: Any) -> str:
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
        header = {"alg": "ES256", "kid": self.key.kid} if kid else {"alg": "ES256"}
        return jwt.encode(header, payload, self.key)


@dataclass
class OAuthApi:
    api: Api
    issuer: Issuer

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def with_scope(self, scope: str, **claims: Any) -> dict[str, str]:
        return self.bearer(self.issuer.token(scope=scope, **claims))


def signing_key(kid: str = "idp-1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "use": "sig"}, private=True)


def oauth_settings(settings: Settings, jwks: Path, keys: list[Any], **update: Any) -> Settings:
    """``settings`` trusting an issuer that publishes ``keys`` (public parts) at ``jwks``."""
    jwks.write_text(
        json.dumps({"keys": [key.as_dict(private=False) for key in keys]}), encoding="utf-8"
    )
    return with_kek(settings).model_copy(
        update={
            "oauth_issuer": ISSUER,
            "oauth_jwks_uri": jwks.as_uri(),
            "oauth_audience": AUDIENCE,
            **update,
        }
    )


@pytest.fixture
def oauth(store_settings: Settings, clock: MutableClock, tmp_path: Path) -> Iterator[OAuthApi]:
    key = signing_key()
    settings = oauth_settings(store_settings, tmp_path / "jwks.json", [key])
    with TestClient(create_app(settings, clock=clock)) as client:
        api = Api(client=client, keys=issue_keys(client), clock=clock, settings=settings)
        yield OAuthApi(api=api, issuer=Issuer(key))


@pytest.fixture
def embedded(tmp_path: Path) -> Settings:
    """An embedded store: for the rules of token verification, which no backend touches."""
    return Settings(data_dir=tmp_path / "data")


def started(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


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


#: A PEP's stream names the resources it guards (SPEC 7.3 signal scoping).
SCOPED = {"resources": ["https://erp.example.com"]}


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
        "/ssf/streams", json=SCOPED, headers=oauth.with_scope("ssf.manage")
    )
    assert response.status_code == 201, response.text
    assert response.json()["aud"] == "user-7"


def test_api_keys_keep_working_beside_oauth(oauth: OAuthApi) -> None:
    response = oauth.api.client.get("/v1/missions", headers=oauth.api.auth("operator"))
    assert response.status_code == 200
    assert set(oauth.api.keys) == set(ROLES)


# ---------------------------------------------------------------------- ssf.read is not pep


@pytest.mark.parametrize(
    "path",
    [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/subject",
        "/access/v1/search/resource",
        "/access/v1/search/action",
        "/v1/mandates/introspect",
        "/mission-status",
    ],
)
def test_the_ssf_read_scope_gets_no_decisions_search_or_introspection(
    oauth: OAuthApi, path: str
) -> None:
    body = {"token": "x"} if path.endswith("introspect") else {}  # a body model checked first
    response = oauth.api.client.post(path, json=body, headers=oauth.with_scope("ssf.read"))
    assert response.status_code == 403, response.text


def test_the_ssf_read_scope_reads_and_polls_a_stream_its_subject_created(
    oauth: OAuthApi,
) -> None:
    created = oauth.api.client.post(
        "/ssf/streams", json=SCOPED, headers=oauth.with_scope("ssf.manage")
    )
    stream_id = created.json()["stream_id"]
    reader = oauth.with_scope("ssf.read")
    client = oauth.api.client
    config = client.get("/ssf/streams", params={"stream_id": stream_id}, headers=reader)
    assert config.status_code == 200, config.text
    status = client.get("/ssf/status", params={"stream_id": stream_id}, headers=reader)
    assert status.json()["status"] == "enabled"
    polled = client.post(f"/ssf/poll/{stream_id}", json={"returnImmediately": True}, headers=reader)
    assert polled.status_code == 200, polled.text


def test_the_ssf_read_scope_cannot_change_a_stream_status(oauth: OAuthApi) -> None:
    created = oauth.api.client.post(
        "/ssf/streams", json=SCOPED, headers=oauth.with_scope("ssf.manage")
    )
    head = oauth.api.head()
    response = oauth.api.client.post(
        "/ssf/status",
        json={"stream_id": created.json()["stream_id"], "status": "paused"},
        headers=oauth.with_scope("ssf.read"),
    )
    assert_problem(response, 403, "forbidden")
    assert oauth.api.head() == head


# ---------------------------------------------------------------------- the audience


def test_an_issuer_without_an_audience_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="oauth_audience"):
        Settings(
            data_dir=tmp_path / "data",
            oauth_issuer=ISSUER,
            oauth_jwks_uri=(tmp_path / "jwks.json").as_uri(),
        )


def test_a_server_with_an_issuer_and_no_audience_does_not_start(
    embedded: Settings, tmp_path: Path
) -> None:
    settings = oauth_settings(
        embedded, tmp_path / "jwks.json", [signing_key()], oauth_audience=None
    )
    with pytest.raises(ValueError, match="oauth_audience"), started(settings):
        pass


def test_any_audience_is_accepted_only_when_explicitly_allowed(
    embedded: Settings, tmp_path: Path
) -> None:
    key = signing_key()
    settings = oauth_settings(
        embedded,
        tmp_path / "jwks.json",
        [key],
        oauth_audience=None,
        oauth_allow_any_audience=True,
    )
    token = Issuer(key).token(scope="mission_ledger.operator", aud="https://other.example.com")
    with started(settings) as client:
        response = client.get("/v1/missions", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


def test_the_allow_any_audience_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MISSION_LEDGER_OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("MISSION_LEDGER_OAUTH_JWKS_URI", (tmp_path / "jwks.json").as_uri())
    monkeypatch.setenv("MISSION_LEDGER_OAUTH_ALLOW_ANY_AUDIENCE", "true")
    assert Settings(data_dir=tmp_path / "data").oauth_allow_any_audience is True


# ---------------------------------------------------------------------- tokens without kid


def evaluate_without_kid(settings: Settings, key: ECKey) -> int:
    token = Issuer(key).token(scope="mission_ledger.operator", kid=False)
    with started(settings) as client:
        response = client.get("/v1/missions", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return response.status_code


def test_a_token_without_kid_verifies_against_the_issuers_only_key(
    embedded: Settings, tmp_path: Path
) -> None:
    key = signing_key()
    settings = oauth_settings(embedded, tmp_path / "jwks.json", [key])
    assert evaluate_without_kid(settings, key) == 200


def test_a_token_without_kid_ignores_keys_published_for_encryption(
    embedded: Settings, tmp_path: Path
) -> None:
    key = signing_key()
    encryption = RSAKey.generate_key(2048, parameters={"kid": "enc-1", "use": "enc"})
    settings = oauth_settings(embedded, tmp_path / "jwks.json", [key, encryption])
    assert evaluate_without_kid(settings, key) == 200


def test_a_token_without_kid_is_401_when_the_issuer_has_several_signing_keys(
    embedded: Settings, tmp_path: Path
) -> None:
    """Even when signed by the first of them: choosing a key would be a guess."""
    alike = {"use": "sig", "alg": "ES256"}  # and no kid: nothing tells them apart
    first = ECKey.generate_key("P-256", parameters=alike, private=True)
    second = ECKey.generate_key("P-256", parameters=alike, private=True)
    settings = oauth_settings(embedded, tmp_path / "jwks.json", [first, second])
    assert evaluate_without_kid(settings, first) == 401
