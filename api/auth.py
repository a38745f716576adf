"""Who is calling: API keys and OAuth access tokens, mapped to roles.

``authenticate`` is the FastAPI dependency every protected route uses; role and
visibility rules are the small functions below, so route handlers only say which
role they need.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.services import Services, get_services
from ledger.domain.actors import Actor
from ledger.domain.errors import Forbidden, NotAuthenticated, NotFound
from ledger.domain.roles import STREAM_READERS, Role
from ledger.domain.subjects import PrincipalIdentity
from projections.key_directory import KeyEntry


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: str  # "api_key" | "oauth"
    name: str
    roles: frozenset[Role]
    client_id: str | None
    issuer: str | None = None
    #: The OAuth token's ``acr`` claim (an API key has none).
    acr: str | None = None

    def has(self, *roles: Role) -> bool:
        return Role.ADMIN in self.roles or any(role in self.roles for role in roles)

    def require(self, *roles: Role) -> None:
        """403 unless the caller holds one of ``roles`` (``admin`` passes every check)."""
        if not self.has(*roles):
            wanted = " or ".join(r.value for r in roles)
            raise Forbidden(f"this operation needs the {wanted} role")

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    def actor(self) -> Actor:
        role = next(iter(sorted(self.roles))).value if len(self.roles) == 1 else None
        return Actor(
            type=self.kind,
            name=self.name,
            role=role if role is not None else ",".join(sorted(r.value for r in self.roles)),
            iss=self.issuer,
            client_id=self.client_id if self.kind == "oauth" else None,
        )

    def identity(self, ledger_issuer: str) -> PrincipalIdentity:
        """``{iss, sub}`` of the principal: a JWT's, or ``{ledger issuer, key name}``."""
        return PrincipalIdentity(iss=self.issuer or ledger_issuer, sub=self.name, acr=self.acr)

    @property
    def scope(self) -> str:
        """Scope of idempotency keys and nonces: one credential's principal."""
        return f"{self.kind}:{self.issuer or ''}:{self.name}"

    def require_stream_reading(self) -> None:
        """403 unless the caller may read SSF streams and receive their SETs (``pep``, or
        ``receiver``: the ``ssf.read`` scope)."""
        self.require(*STREAM_READERS)

    def require_stream_management(self) -> None:
        """403 unless the caller may create and change SSF streams (``pep``: for OAuth
        callers the ``ssf.manage`` scope; ``ssf.read`` only reads)."""
        if not self.has(Role.PEP) and Role.RECEIVER in self.roles:
            raise Forbidden("the receiver role (ssf.read) reads streams; changing them needs pep")
        self.require(Role.PEP)

    def owns_client(self, client_id: str) -> bool:
        """True for the agent whose ``client_id`` this is (admins own everything)."""
        return self.is_admin or (self.client_id is not None and self.client_id == client_id)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise NotAuthenticated("this endpoint needs a bearer credential")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated(
            "use the Authorization: Bearer <credential> scheme",
            extensions={"error": "invalid_request"},
        )
    return token.strip()


#: Declares the bearer credential in the OpenAPI document (checking it is ours, below).
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (mlk_...) or an access token of the configured OAuth issuer.",
)

_PRINCIPAL = "mission_ledger.principal"


async def authenticate(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    return await principal_of(request, services)


async def principal_of(request: Request, services: Services) -> Principal:
    """The caller, verified once per request (a route's gate may have asked already)."""
    known = request.scope.get(_PRINCIPAL)
    if isinstance(known, Principal):
        return known
    principal = await authenticate_request(request, services)
    request.scope[_PRINCIPAL] = principal
    return principal


async def authenticate_request(request: Request, services: Services) -> Principal:
    """The caller of ``request`` (also used directly by hot paths that skip injection)."""
    token = _bearer(request)
    if token.startswith("mlk_"):
        return (await api_key_principal(token, services))[0]
    if services.oauth is None:
        raise NotAuthenticated(
            "unrecognised credential (API keys start with mlk_)",
            extensions={"error": "invalid_token"},
        )
    verified = await services.oauth.verify(token)
    if not verified.roles:
        raise Forbidden("the token carries no scope that maps to a Mission Ledger role")
    return Principal(
        kind="oauth",
        name=verified.subject,
        roles=verified.roles,
        client_id=verified.client_id,
        issuer=verified.issuer,
        acr=verified.acr,
    )


async def api_key_principal(token: str, services: Services) -> tuple[Principal, KeyEntry]:
    """The principal of an API key (``mlk_...``), and the key's directory entry."""
    entry = services.keys.verify(token)
    if entry is None and token.startswith("mlk_") and not services.keys.knows(token):
        # Perhaps created a moment ago by the CLI in another process: catch up once.
        await asyncio.to_thread(services.follower.wait, services.follower.head(), 0.5)
        entry = services.keys.verify(token)
    if entry is None:
        raise NotAuthenticated("unknown or revoked API key", extensions={"error": "invalid_token"})
    role = Role(entry.role)
    principal = Principal(
        kind="api_key",
        name=entry.name,
        roles=frozenset({role}),
        client_id=entry.name if role is Role.AGENT else None,
    )
    return principal, entry


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def hidden(what: str, identifier: str) -> NotFound:
    """The 404 for both unknown ids and ids outside the caller's view (no oracle)."""
    return NotFound(f"no {what} with id {identifier!r}")
