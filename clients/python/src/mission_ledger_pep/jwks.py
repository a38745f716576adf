"""A JWKS cache that fetches once, refreshes on an unknown ``kid`` (rate-limited) and
then rejects, so a rotated key is picked up on first sight of its ``kid``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

#: Never JWK members of a public key: a JWKS carrying them is refused.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


class UnknownKey(Exception):
    """No published key has this ``kid`` (after a refresh)."""


class JwksCache:
    def __init__(
        self,
        jwks_url: str,
        *,
        http: httpx.Client | None = None,
        min_refresh_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        self._owns_http = http is None
        self._http: httpx.Client | None = http
        self._interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, Key] = {}
        self._last_fetch: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def close(self) -> None:
        """Close the connection pool (only if this cache created it)."""
        if self._owns_http and self._http is not None:
            self._http.close()
            self._http = None  # a later fetch opens a new one

    def _fetch(self) -> None:
        self._last_fetch = self._clock()
        self.fetches += 1
        if self._http is None:
            self._http = httpx.Client(timeout=5.0)
        response = self._http.get(self.jwks_url, headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.json()
        keys: dict[str, Key] = {}
        for jwk in body.get("keys", []):
            if not isinstance(jwk, dict) or PRIVATE_MEMBERS & jwk.keys() or "kid" not in jwk:
                continue
            try:
                key = KeySet.import_key_set({"keys": [jwk]}).keys[0]
            except (JoseError, ValueError, TypeError):
                continue
            keys[str(jwk["kid"])] = key
        self._keys = keys

    def key(self, kid: str) -> Key:
        """The key published under ``kid``; unknown → one (rate-limited) refetch → raise."""
        with self._lock:
            found = self._keys.get(kid)
            if found is not None:
                return found
            due = self._last_fetch is None or self._clock() - self._last_fetch >= self._interval
            if due:
                try:
                    self._fetch()
                except (httpx.HTTPError, ValueError) as error:
                    msg = f"the JWKS could not be fetched: {error}"
                    raise UnknownKey(msg) from None
            found = self._keys.get(kid)
        if found is None:
            msg = f"kid {kid!r} is not in the JWKS"
            raise UnknownKey(msg)
        return found
