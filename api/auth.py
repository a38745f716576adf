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

from api.services import Services, get_services
from ledger.domain.actors import Actor
from ledger.domain.errors import Forbidden, NotAuthenticated, NotFound
from ledger.domain.roles import Role
from ledger.domain.subjects import PrincipalIdentity


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: str  # "api_key" | "oauth"
    name: str
    roles: frozenset[Role]
    client_id: str | None
    issuer: str | None = None
    #: False for an OAuth caller whose ``pep`` role comes only from the ``ssf.read`` scope:
    #: it may read streams and receive SETs, not create or change streams.
    manages_streams: bool = True
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

    def require_stream_management(self) -> None:
        """403 unless the caller may create and change SSF streams (``pep`` role, and for
        OAuth callers a scope other than ``ssf.read`` granting it, such as ``ssf.manage``)."""
        self.require(Role.PEP)
        if not self.manages_streams:
            raise Forbidden("the ssf.read scope reads streams; changing them needs ssf.manage")

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


async def authenticate(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Principal:
    return await authenticate_request(request, services)


async def authenticate_request(request: Request, services: Services) -> Principal:
    """The caller of ``request`` (also used directly by hot paths that skip injection)."""
    token = _bearer(request)
    if token.startswith("mlk_"):
        entry = services.keys.verify(token)
        if entry is None and not services.keys.knows(token):
            # Perhaps created a moment ago by the CLI in another process: catch up once.
            await asyncio.to_thread(services.follower.wait, services.follower.head(), 0.5)
            entry = services.keys.verify(token)
        if entry is None:
            raise NotAuthenticated(
                "unknown or revoked API key", extensions={"error": "invalid_token"}
            )
        role = Role(entry.role)
        return Principal(
            kind="api_key",
            name=entry.name,
            roles=frozenset({role}),
            client_id=entry.name if role is Role.AGENT else None,
        )
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
        manages_streams=verified.manages_streams,
        acr=verified.acr,
    )


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def hidden(what: str, identifier: str) -> NotFound:
    """The 404 for both unknown ids and ids outside the caller's view (no oracle)."""
    return NotFound(f"no {what} with id {identifier!r}")
