"""OpenID Connect sign-in for the console: authorization code with PKCE (S256).

The authorization request carries a fresh ``state`` (checked at the callback, against the
sign-in attempt of this browser), ``nonce`` (checked in the ID token) and PKCE challenge.
The code is exchanged at the provider's token endpoint (``client_secret_basic`` when a
secret is configured, otherwise as a public client). The ID token is verified with joserfc
against the provider's JWKS (``api.issuer_keys``: discovery, cache, refetch on an unknown
``kid``): an asymmetric signature, ``iss`` the configured issuer, ``aud`` containing the
client id (and ``azp`` the client id when it names several audiences), ``exp``/``iat`` with
30 s of leeway, ``sub``, and the ``nonce``. Roles come from a claim
(``console_oidc_roles_claim``) mapped through ``oauth_role_scopes``, as the scopes of API
access tokens are.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError

from api.issuer_keys import FETCH_TIMEOUT, IssuerKeys
from api.oauth import ALGORITHMS, role_scopes, roles_of
from ledger.domain.errors import NotAuthenticated
from ledger.domain.instants import epoch_seconds
from ledger.domain.roles import Role
from ledger.settings import Settings

CALLBACK_PATH = "/console/auth/callback"
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class Person:
    """Who signed in, from a verified ID token."""

    issuer: str
    subject: str
    name: str
    roles: frozenset[Role]
    acr: str | None


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _failed(detail: str) -> NotAuthenticated:
    return NotAuthenticated(f"sign-in failed: {detail}")


class OidcClient:
    def __init__(self, settings: Settings) -> None:
        if not settings.console_oidc_issuer or not settings.console_oidc_client_id:
            msg = "the console's OpenID sign-in needs console_oidc_issuer and client id"
            raise ValueError(msg)
        self.issuer = settings.console_oidc_issuer
        self.client_id = settings.console_oidc_client_id
        secret = settings.console_oidc_client_secret
        self._secret = None if secret is None else secret.get_secret_value()
        self._scopes = ["openid", *(s for s in settings.console_oidc_scopes if s != "openid")]
        self._roles_claim = settings.console_oidc_roles_claim
        self._role_scopes = role_scopes(settings)
        self.redirect_uri = settings.public_issuer + CALLBACK_PATH
        self._keys = IssuerKeys(issuer=self.issuer, failure=_failed)

    async def authorization_url(self, *, state: str, nonce: str, verifier: str) -> str:
        metadata = await self._keys.metadata()
        endpoint = metadata.get("authorization_endpoint")
        if not isinstance(endpoint, str):
            raise _failed("the provider's metadata has no authorization_endpoint")
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": " ".join(self._scopes),
                "state": state,
                "nonce": nonce,
                "code_challenge": pkce_challenge(verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    async def sign_in(self, *, code: str, verifier: str, nonce: str, now: datetime) -> Person:
        """Exchange ``code`` and verify the ID token it brings."""
        id_token = await self._exchange(code, verifier)
        try:
            decoded = await self._keys.decode(id_token, list(ALGORITHMS))
            claims = decoded.claims
            jwt.JWTClaimsRegistry(
                now=epoch_seconds(now),
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(claims)
        except (JoseError, ValueError) as error:
            raise _failed(f"the ID token was rejected ({error})") from None
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise _failed("the ID token names several audiences and another azp")
        return Person(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            name=str(claims.get("name") or claims.get("email") or claims["sub"]),
            roles=roles_of(self._role_values(claims), self._role_scopes),
            acr=claims["acr"] if isinstance(claims.get("acr"), str) else None,
        )

    def _role_values(self, claims: dict[str, Any]) -> list[str]:
        value = claims.get(self._roles_claim)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        return []

    async def _exchange(self, code: str, verifier: str) -> str:
        metadata = await self._keys.metadata()
        endpoint = metadata.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise _failed("the provider's metadata has no token_endpoint")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"Accept": "application/json"}
        if self._secret is None:
            form["client_id"] = self.client_id
        else:
            # RFC 6749 2.3.1: each part form-urlencoded, then HTTP Basic.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT) as client:
                response = await client.post(endpoint, data=form, headers=headers)
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise _failed(f"the token endpoint did not answer ({error})") from None
        if response.status_code != 200 or not isinstance(body, dict):
            refusal = body.get("error") if isinstance(body, dict) else None
            raise _failed(
                f"the token endpoint refused the code ({refusal or response.status_code})"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise _failed("the token endpoint returned no ID token")
        return id_token
