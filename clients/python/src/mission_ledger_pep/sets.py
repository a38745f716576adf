"""Security Event Token checks (RFC 8417 as profiled by SSF; standards.md section 5)."""

from __future__ import annotations

from typing import Any

from mission_ledger_pep.jwks import JwksCache
from mission_ledger_pep.tokens import TokenRejected, verified_claims

SET_TYP = "secevent+jwt"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
TOKEN_CLAIMS_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"  # noqa: S105 - an event type URI
LIFECYCLE_CHANGE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"


def verify_set(token: str, jwks: JwksCache, *, issuer: str, audience: str) -> dict[str, Any]:
    """The claims of a SET that verifies and is addressed to us; else ``TokenRejected``."""
    claims = verified_claims(token, jwks, typ=SET_TYP)
    if claims.get("iss") != issuer:
        raise TokenRejected("wrong_iss", f"iss {claims.get('iss')!r}")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenRejected("wrong_aud", f"aud {aud!r}")
    for member in ("iat", "jti", "events", "sub_id"):
        if member not in claims:
            raise TokenRejected("malformed", f"no {member}")
    if "sub" in claims or "exp" in claims:
        raise TokenRejected("malformed", "SSF SETs carry neither sub nor exp")
    events = claims["events"]
    if not isinstance(events, dict) or len(events) != 1:
        raise TokenRejected("malformed", "a SET carries exactly one event")
    return claims


def event_type(claims: dict[str, Any]) -> str:
    return str(next(iter(claims["events"])))


def mandate_id_of(claims: dict[str, Any]) -> str | None:
    """The Mandate a CAEP session event is about (``sub_id.session.id``)."""
    session = claims.get("sub_id", {}).get("session")
    if isinstance(session, dict) and isinstance(session.get("id"), str):
        return str(session["id"])
    return None
