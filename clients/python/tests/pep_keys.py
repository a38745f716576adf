"""A local test JWKS and token makers (no server)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from joserfc import jws
from joserfc.jwk import ECKey

ISSUER = "https://ledger.test"
JWKS_URL = ISSUER + "/.well-known/jwks.json"
AUDIENCE = "gateway-1"


def new_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"})


def sign(key: ECKey, typ: str, claims: dict[str, Any]) -> str:
    header = {"alg": "ES256", "kid": key.kid, "typ": typ}
    return jws.serialize_compact(header, json.dumps(claims).encode(), key)


def set_token(
    key: ECKey,
    event: str,
    payload: dict[str, Any],
    sub_id: dict[str, Any],
    *,
    aud: str = AUDIENCE,
    iss: str = ISSUER,
    jti: str = "j1",
) -> str:
    claims = {
        "iss": iss,
        "aud": aud,
        "iat": int(time.time()),
        "jti": jti,
        "sub_id": sub_id,
        "events": {event: payload},
    }
    return sign(key, "secevent+jwt", claims)


REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
LIFECYCLE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"


def revoked_set(key: ECKey, mandate_id: str, **kw: Any) -> str:
    sub_id = {"format": "complex", "session": {"format": "opaque", "id": mandate_id}}
    return set_token(key, REVOKED, {"initiating_entity": "admin"}, sub_id, **kw)


def mandate_token(
    key: ECKey,
    *,
    jti: str = "mdt_1",
    jkt: str = "jkt-1",
    exp: float | None = None,
    iss: str = ISSUER,
    mission: str = "msn_1",
) -> str:
    claims = {
        "iss": iss,
        "jti": jti,
        "exp": int(exp if exp is not None else time.time() + 600),
        "cnf": {"jkt": jkt},
        "mission": {"id": mission, "issuer": iss},
    }
    return sign(key, "execution-mandate+jwt", claims)


class Jwks:
    """A JWKS endpoint over httpx.MockTransport; ``keys`` may change (rotation)."""

    def __init__(self, *keys: ECKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(200, json={"keys": [k.as_dict(private=False) for k in self.keys]})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler))
