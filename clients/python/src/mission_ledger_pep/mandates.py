"""``MandateGuard``: local checks of an Execution Mandate before any round trip.

``check(token, jkt)`` raises ``MandateRefused`` unless the token verifies through the JWKS
(``typ: execution-mandate+jwt``, an allowed ``alg``, a published ``kid``), names the
configured ``iss``, has not expired (``exp``, with ``leeway``), is bound to the key the
caller proved (``cnf.jkt``), and neither it nor its Mission is known to have ended: the
revocation set is fed by ``revoke`` (a ``SignalSubscriber`` with ``guard=`` calls it for
every verified ``session-revoked``) and ``mission_changed``. Passing the guard is never a
permit: the PDP is still asked for every action.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from mission_ledger_pep.jwks import JwksCache
from mission_ledger_pep.tokens import TokenRejected, verified_claims

MANDATE_TYP = "execution-mandate+jwt"


class MandateRefused(Exception):
    """The Mandate may not be used; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class MandateGuard:
    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        leeway: float = 0.0,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.jwks = JwksCache(jwks_url, http=http)
        self._leeway = leeway
        self._clock = clock
        self._revoked: set[str] = set()
        self._ended_missions: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.jwks.close()

    def revoke(self, mandate_id: str) -> None:
        with self._lock:
            self._revoked.add(mandate_id)

    def is_revoked(self, mandate_id: str) -> bool:
        return mandate_id in self._revoked

    def mission_changed(self, mission_id: str, state: str) -> None:
        """A Mission's new state: anything but ``active`` refuses its Mandates locally."""
        with self._lock:
            if state == "active":
                self._ended_missions.discard(mission_id)
            else:
                self._ended_missions.add(mission_id)

    def check(self, token: str, jkt: str | None) -> dict[str, Any]:
        """Raise ``MandateRefused`` unless the Mandate may be used; return its claims."""
        try:
            claims = verified_claims(token, self.jwks, typ=MANDATE_TYP)
        except TokenRejected as rejected:
            raise MandateRefused("credential_invalid", str(rejected)) from None
        if claims.get("iss") != self.issuer:
            raise MandateRefused("credential_invalid", f"iss {claims.get('iss')!r}")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + self._leeway <= self._clock():
            raise MandateRefused("mandate_expired")
        bound = (claims.get("cnf") or {}).get("jkt")
        if not isinstance(bound, str) or jkt is None or not hmac.compare_digest(bound, jkt):
            raise MandateRefused("key_mismatch")
        if str(claims.get("jti")) in self._revoked:
            raise MandateRefused("mandate_revoked")
        mission = claims.get("mission") or {}
        if isinstance(mission, dict) and str(mission.get("id")) in self._ended_missions:
            raise MandateRefused("mission_inactive")
        return claims
