"""Verification of a proposal's ``subject_token`` (SPEC 7.3 "Subject and approver").

A ``subject_token`` is an OIDC ID token (header ``typ`` absent or ``JWT``) or an ID-JAG
(``typ: oauth-id-jag+jwt``) issued by one of ``Settings.subject_issuers``. It verifies when:

* it is a compact JWS signed with an asymmetric algorithm (never ``none``, never HMAC) by a
  key, named by ``kid``, of its issuer's JWKS (found through the issuer's
  ``/.well-known/openid-configuration``; cached, fetched again for an unknown ``kid``);
* ``iss`` is a trusted issuer and ``sub`` is present;
* ``exp`` and ``iat`` are present, and ``exp``, ``iat``, ``nbf`` hold at the ledger's clock
  with 30 seconds of leeway;
* ``aud`` names this ledger: its public issuer URL (what an ID-JAG is addressed to) or one
  of ``Settings.subject_audiences`` (e.g. the ledger's client id at the identity provider,
  which is what an ID token is addressed to).

Anything else is 400 ``subject_unverified``. Only the verified ``{iss, sub}`` reach the
domain (``ledger.domain.subjects.SubjectAssertion``).
"""

from __future__ import annotations

import json

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from api.issuer_keys import IssuerKeys
from api.oauth import ALGORITHMS
from ledger.clock import Clock
from ledger.domain.errors import SubjectUnverified
from ledger.domain.instants import epoch_seconds
from ledger.domain.subjects import SubjectAssertion
from ledger.settings import Settings

LEEWAY_SECONDS = 30
ID_JAG_TYPE = "oauth-id-jag+jwt"
ACCEPTED_TYPES = frozenset({"jwt", ID_JAG_TYPE})
POINTER = "/subject_token"


class SubjectTokenVerifier:
    """Verifies subject tokens from the configured trusted issuers."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._clock = clock
        self._audiences = [settings.public_issuer, *settings.subject_audiences]
        self._issuers = {
            issuer: IssuerKeys(issuer=issuer, failure=_unverified)
            for issuer in settings.subject_issuers
        }

    async def verify(self, token: str) -> SubjectAssertion:
        issuer = _claimed_issuer(token)
        keys = self._issuers.get(issuer)
        if keys is None:
            raise _unverified(f"{issuer!r} is not a trusted subject issuer")
        try:
            decoded = await keys.decode(token, list(ALGORITHMS))
            registry = jwt.JWTClaimsRegistry(
                now=epoch_seconds(self._clock.now()),
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": issuer},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                aud={"essential": True, "values": self._audiences},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as error:
            raise _unverified(f"rejected: {error}") from None
        return SubjectAssertion(iss=issuer, sub=str(decoded.claims["sub"]))


def _claimed_issuer(token: str) -> str:
    """The issuer the token claims, read (and its header checked) before verification."""
    try:
        compact = extract_compact(token.encode("ascii"))
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError) as error:
        raise _unverified(f"not a compact JWS: {error}") from None
    header = dict(compact.protected)
    if header.get("alg") not in ALGORITHMS:
        raise _unverified(f"alg {header.get('alg')!r} is not an accepted signing algorithm")
    if not isinstance(header.get("kid"), str):
        raise _unverified("the header must name the signing key (kid)")
    typ = str(header.get("typ", "JWT")).lower().removeprefix("application/")
    if typ not in ACCEPTED_TYPES:
        raise _unverified(f"typ {header.get('typ')!r} is neither an ID token nor an ID-JAG")
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str):
        raise _unverified("iss is missing")
    return issuer


def _unverified(detail: str) -> SubjectUnverified:
    return SubjectUnverified.at(POINTER, detail)
