"""JWT access tokens from a configured OAuth issuer, verified against its JWKS.

Tokens must be signed with an asymmetric algorithm (never ``none``, never HMAC),
carry the configured ``iss`` (and ``aud`` when one is configured), and be within
``nbf``/``exp``. Scopes (``scope`` string or ``scp`` array) map to roles through
``Settings.oauth_role_scopes``. The JWKS is cached and fetched again, at most
every 30 seconds, when a token names an unknown ``kid``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from api.issuer_keys import IssuerKeys
from ledger.domain.errors import NotAuthenticated
from ledger.domain.roles import Role
from ledger.settings import Settings

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
#: Grants ``pep`` for reading streams and receiving SETs only (SSF management endpoints).
READ_ONLY_SSF_SCOPE = "ssf.read"


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    subject: str
    client_id: str | None
    roles: frozenset[Role]
    scopes: frozenset[str]
    #: The ``acr`` claim (how the user authenticated), for ``controls.acr`` at approval.
    acr: str | None = None
    #: Whether a scope other than the read-only ``ssf.read`` grants ``pep`` (or ``admin``).
    manages_streams: bool = True


class OAuthVerifier:
    def __init__(self, settings: Settings) -> None:
        if not settings.oauth_issuer or not settings.oauth_jwks_uri:
            msg = "OAuth needs both oauth_issuer and oauth_jwks_uri"
            raise ValueError(msg)
        self._issuer = settings.oauth_issuer
        self._jwks_uri = settings.oauth_jwks_uri
        self._audience = settings.oauth_audience
        self._role_scopes = {
            scope: Role(role) for scope, role in settings.oauth_role_scopes.items()
        }
        self._client_id_claim = settings.oauth_client_id_claim
        self._keys = IssuerKeys(jwks_uri=settings.oauth_jwks_uri, failure=_unreachable)

    async def verify(self, token: str) -> VerifiedToken:
        keys = await self._keyset(force=False)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
        except JoseError as error:
            if "kid" in str(error).lower() or error.error == "invalid_key_id":
                keys = await self._keyset(force=True)
                try:
                    decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
                except (JoseError, ValueError) as again:
                    raise _invalid(f"token rejected: {again}") from None
            else:
                raise _invalid(f"token rejected: {error}") from None
        except ValueError as error:
            raise _invalid(f"token rejected: {error}") from None
        claims = decoded.claims
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self._issuer},
            "exp": {"essential": True},
            "sub": {"essential": True},
        }
        if self._audience:
            options["aud"] = {"essential": True, "value": self._audience}
        try:
            jwt.JWTClaimsRegistry(now=int(time.time()), leeway=30, **options).validate(claims)
        except JoseError as error:
            raise _invalid(f"token claims rejected: {error}") from None
        scopes = _scopes(claims)
        roles = frozenset(self._role_scopes[s] for s in scopes if s in self._role_scopes)
        client_id = claims.get(self._client_id_claim) or claims.get("azp")
        managing = {
            s
            for s in scopes
            if s != READ_ONLY_SSF_SCOPE and self._role_scopes.get(s) in {Role.PEP, Role.ADMIN}
        }
        return VerifiedToken(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            client_id=None if client_id is None else str(client_id),
            roles=roles,
            scopes=frozenset(scopes),
            manages_streams=bool(managing),
            acr=claims["acr"] if isinstance(claims.get("acr"), str) else None,
        )

    async def _keyset(self, *, force: bool) -> KeySet:
        return await self._keys.keys(refresh=force)


def _scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [str(s) for s in scp]
    return []


def _unreachable(detail: str) -> NotAuthenticated:
    return _invalid(f"cannot fetch the token issuer's keys: {detail}")


def _invalid(detail: str) -> NotAuthenticated:
    return NotAuthenticated(detail, extensions={"error": "invalid_token"})
