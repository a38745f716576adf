"""Mandate tokens verify with two independent JOSE libraries (PyJWT and jwcrypto) using only
the running service's JWKS URL, before and after a signing-key rotation."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jwt as jwcrypto_jwt

from tests.e2e.conftest import launch
from tests.e2e.server import ServerProcess, cli, create_key

pytestmark = pytest.mark.slow


def _jkt(seed: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")


def _mandate(server: ServerProcess, keys: dict[str, str], seed: str) -> dict[str, Any]:
    body = {
        "intent": {
            "goal": "verify tokens",
            "resources": ["https://erp.example.com"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": [
            {
                "type": "mission_resource_access",
                "resource": "https://erp.example.com",
                "actions": ["invoices.read"],
            }
        ],
        "subject": {"iss": "https://idp.example.com", "sub": "alice"},
        "client_id": "agent-v",
    }
    agent = {"Authorization": f"Bearer {keys['agent']}"}
    proposal = httpx.post(server.url + "/v1/proposals", json=body, headers=agent).json()
    mission = httpx.post(
        f"{server.url}/v1/proposals/{proposal['submission_id']}/approve",
        json={},
        headers={"Authorization": f"Bearer {keys['approver']}"},
    ).json()
    issued = httpx.post(
        f"{server.url}/v1/missions/{mission['id']}/mandates",
        json={"actor": {"client_id": "agent-v", "instance_id": "i-1"}, "cnf": {"jkt": _jkt(seed)}},
        headers=agent,
    )
    assert issued.status_code == 201, issued.text
    return dict(issued.json())


def _verify_with_pyjwt(token: str, jwks_uri: str, issuer: str) -> dict[str, Any]:
    client = pyjwt.PyJWKClient(jwks_uri, cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "execution-mandate+jwt"
    return dict(
        pyjwt.decode(
            token, key.key, algorithms=["ES256"], issuer=issuer, options={"verify_aud": False}
        )
    )


def _verify_with_jwcrypto(token: str, jwks_uri: str) -> dict[str, Any]:
    keyset = jwcrypto_jwk.JWKSet.from_json(httpx.get(jwks_uri).text)
    verified = jwcrypto_jwt.JWT(jwt=token, key=keyset, algs=["ES256"], expected_type="JWS")
    return dict(json.loads(verified.claims))


def _check(token: str, server: ServerProcess) -> str:
    jwks_uri = server.url + "/.well-known/jwks.json"
    claims = _verify_with_pyjwt(token, jwks_uri, server.url)
    assert _verify_with_jwcrypto(token, jwks_uri) == claims
    assert claims["jti"].startswith("mdt_")
    return str(pyjwt.get_unverified_header(token)["kid"])


def test_tokens_verify_through_the_jwks_before_and_after_rotation(
    server_env: dict[str, str], servers: list[ServerProcess], tmp_path: Path
) -> None:
    keys = {
        "agent": create_key(server_env, "agent", "agent-v"),
        "approver": create_key(server_env, "approver", "approver-v"),
    }
    server = launch(servers, server_env, tmp_path)
    before = _mandate(server, keys, "before")
    old_kid = _check(before["token"], server)

    rotated = cli(server_env, "keys", "rotate-signing", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["kid"]
    assert new_kid != old_kid

    # Restart (same issuer URL) so the new key is certainly loaded; running servers also
    # refresh their keys by themselves.
    server.stop()
    server = ServerProcess(server_env, tmp_path / "after.log", port=server.port).start()
    servers.append(server)
    after = _mandate(server, keys, "after")
    assert _check(after["token"], server) == new_kid
    # The token signed before the rotation still verifies: its key stays published.
    assert _check(before["token"], server) == old_kid
    published = {k["kid"] for k in httpx.get(server.url + "/.well-known/jwks.json").json()["keys"]}
    assert {old_kid, new_kid} <= published
