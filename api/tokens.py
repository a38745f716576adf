"""Verifying the tokens this service signed (Mandates), with a small verification cache.

Signature checks cost tens of microseconds; PEPs present the same Mandate token on
every call, so verified tokens are remembered (bounded LRU). A cached token is only
a proof of *signature*: its Mandate's state is always read fresh from the index.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

from ledger.clock import Clock
from ledger.domain.mandate_claims import MANDATE_TYP
from ledger.signing.keyring import Keyring, SignatureInvalid

ALGORITHMS = ("ES256", "EdDSA")


class TokenVerifier:
    def __init__(self, keyring: Keyring, clock: Clock, *, cache_size: int = 50_000) -> None:
        self._keyring = keyring
        self._clock = clock
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def verify(self, token: str, *, typ: str, now: datetime) -> dict[str, Any] | None:
        """The claims of a token of type ``typ`` whose signature verifies, else None."""
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                self._cache.move_to_end(token)
        if cached is not None:
            return cached if cached.get("__typ") == typ else None
        try:
            header, payload = self._keyring.verify_compact(token, algorithms=ALGORITHMS, now=now)
        except (SignatureInvalid, ValueError):
            return None
        if header.get("typ") != typ:
            return None
        try:
            claims = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(claims, dict):
            return None
        claims = {**claims, "__typ": typ}
        with self._lock:
            self._cache[token] = claims
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return claims

    def mandate_jti(self, token: str) -> str | None:
        """For the decision point: the ``jti`` of a Mandate token that verifies."""
        claims = self.verify(token, typ=MANDATE_TYP, now=self._clock.now())
        if claims is None:
            return None
        jti = claims.get("jti")
        return jti if isinstance(jti, str) else None
