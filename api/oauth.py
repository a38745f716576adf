"""JWT access tokens from a configured OAuth issuer, verified against its JWKS.

Tokens must be signed with an asymmetric algorithm (never ``none``, never HMAC),
carry the configured ``iss`` and ``aud`` (any audience only when the operator said so:
``Settings.oauth_allow_any_audience``), and be within ``nbf``/``exp``. Scopes
(``scope`` string or ``scp`` array) map to roles through ``Settings.oauth_role_scopes``.
A token names its key with ``kid``; one without verifies only against an issuer that
publishes exactly one usable signing key (never a guess among several). The JWKS is
cached and fetched again, at most every 30 seconds, when a token names an unknown
``kid`` (or, without one, when the cached set has no single usable key).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import Key, KeySet
from joserfc.jws import extract_compact

from api.issuer_keys import IssuerKeys
from ledger.domain.errors import NotAuthenticated
from ledger.domain.roles import Role
from ledger.settings import Settings

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_SIGNING_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_SIGNING_CURVES = frozenset({"P-256", "P-384", "P-521", "Ed25519", "Ed448"})


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    subject: str
    client_id: str | None
    roles: frozenset[Role]
    scopes: frozenset[str]
    #: The ``acr`` claim (how the user authenticated), for ``controls.acr`` at approval.
    acr: str | None = None


class OAuthVerifier:
    def __init__(self, settings: Settings) -> None:
        problem = settings.oauth_problem()
        if problem is not None or not settings.oauth_issuer or not settings.oauth_jwks_uri:
            raise ValueError(problem or "OAuth needs both oauth_issuer and oauth_jwks_uri")
        self._issuer = settings.oauth_issuer
        self._jwks_uri = settings.oauth_jwks_uri
        self._audience = settings.oauth_audience
        self._role_scopes = role_scopes(settings)
        self._client_id_claim = settings.oauth_client_id_claim
        self._keys = IssuerKeys(jwks_uri=settings.oauth_jwks_uri, failure=_unreachable)

    async def verify(self, token: str) -> VerifiedToken:
        try:
            kid = _kid_of(token)
            try:
                decoded = await self._decode(token, kid, refresh=False)
            except JoseError as error:
                if "kid" not in str(error).lower() and error.error != "invalid_key_id":
                    raise
                decoded = await self._decode(token, kid, refresh=True)
        except (JoseError, ValueError) as error:
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
        roles = roles_of(scopes, self._role_scopes)
        client_id = claims.get(self._client_id_claim) or claims.get("azp")
        return VerifiedToken(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            client_id=None if client_id is None else str(client_id),
            roles=roles,
            scopes=frozenset(scopes),
            acr=claims["acr"] if isinstance(claims.get("acr"), str) else None,
        )

    async def _decode(self, token: str, kid: str | None, *, refresh: bool) -> jwt.Token:
        keys = await self._keyset(force=refresh)
        key: Key | KeySet = keys if kid is not None else _only_signing_key(keys)
        return jwt.decode(token, key, algorithms=list(ALGORITHMS))

    async def _keyset(self, *, force: bool) -> KeySet:
        return await self._keys.keys(refresh=force)


def role_scopes(settings: Settings) -> dict[str, Role]:
    """Scope (or role claim value) -> role, from ``Settings.oauth_role_scopes``."""
    return {scope: Role(role) for scope, role in settings.oauth_role_scopes.items()}


def roles_of(values: Iterable[str], mapping: Mapping[str, Role]) -> frozenset[Role]:
    """The roles that scopes (or role claim values) grant; unknown values grant none."""
    return frozenset(mapping[value] for value in values if value in mapping)


def _kid_of(token: str) -> str | None:
    kid = extract_compact(token.encode()).headers().get("kid")
    if kid is not None and not isinstance(kid, str):
        msg = "the kid header must be a string"
        raise ValueError(msg)
    return kid


def _signs(key: Key) -> bool:
    """Whether ``key`` can verify a token: an asymmetric signing key for an accepted
    algorithm, not one published for encryption."""
    return (
        key.key_type in _SIGNING_KEY_TYPES
        and key.get("use") in (None, "sig")
        and ("verify" in (key.get("key_ops") or ["verify"]))
        and key.get("alg") in (None, *ALGORITHMS)
        and key.get("crv") in (None, *_SIGNING_CURVES)
    )


def _only_signing_key(keys: KeySet) -> Key:
    """The key a token without ``kid`` must have been signed with: the issuer's only
    usable signing key. With several, choosing one would be a guess."""
    usable = [key for key in keys.keys if _signs(key)]
    if len(usable) != 1:
        msg = f"the token names no key (kid) and the issuer publishes {len(usable)} signing keys"
        raise InvalidKeyIdError(msg)
    return usable[0]


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
