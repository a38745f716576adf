"""Public keys of an external token issuer: its JWKS, fetched and cached.

The keys come from a ``jwks_uri`` given directly (``file://`` too, for tests and air-gapped
setups), or found through the issuer's OpenID Provider metadata
(``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be the issuer itself;
a ``jwks_uri`` found there must be ``http(s)``: the issuer's document never makes this
server read one of its own files).
The set is cached and fetched again, at most every 30 seconds, when a token names a ``kid``
it does not hold (``keys(refresh=True)``). A failure to fetch raises what ``failure`` makes
of its description, so each caller answers in its own terms.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ledger.domain.errors import LedgerError

REFRESH_INTERVAL = 30.0
FETCH_TIMEOUT = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


class IssuerKeys:
    """The cached JWKS of one issuer."""

    def __init__(
        self,
        *,
        failure: Callable[[str], LedgerError],
        jwks_uri: str | None = None,
        issuer: str | None = None,
    ) -> None:
        if (jwks_uri is None) == (issuer is None):
            msg = "give either jwks_uri or an issuer to discover it from"
            raise ValueError(msg)
        self._jwks_uri = jwks_uri
        self._issuer = issuer
        self._failure = failure
        self._keys: KeySet | None = None
        self._metadata: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def metadata(self) -> dict[str, Any]:
        """The issuer's OpenID Provider metadata (fetched once; needs ``issuer``)."""
        if self._metadata is None:
            self._metadata = await asyncio.to_thread(self._discover)
        return self._metadata

    async def decode(self, token: str, algorithms: list[str]) -> jwt.Token:
        """``token`` verified with a key of the issuer (its signature only: the caller
        validates the claims); the keys are fetched again once for an unknown ``kid``."""
        try:
            return jwt.decode(token, await self.keys(), algorithms=algorithms)
        except JoseError as error:
            if error.error != "invalid_key_id" and "kid" not in str(error).lower():
                raise
        return jwt.decode(token, await self.keys(refresh=True), algorithms=algorithms)

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The cached set; with ``refresh`` fetched again unless fetched moments ago."""
        async with self._lock:
            stale = time.monotonic() - self._fetched_at > REFRESH_INTERVAL
            if self._keys is None or (refresh and stale):
                self._keys = await asyncio.to_thread(self._fetch_keys)
                self._fetched_at = time.monotonic()
            return self._keys

    def _fetch_keys(self) -> KeySet:
        url = self._locate()
        try:
            if self._jwks_uri is None and urlsplit(url).scheme not in {"https", "http"}:
                raise self._failure("the issuer's metadata names a jwks_uri that is not http(s)")
            return KeySet.import_key_set(self._get(url))
        except (ValueError, TypeError, KeyError) as error:
            raise self._failure(f"the issuer's keys are not a usable JWKS: {error}") from None

    def _discover(self) -> dict[str, Any]:
        if self._issuer is None:
            raise self._failure("no issuer to discover")
        metadata = self._get(self._issuer.rstrip("/") + DISCOVERY_PATH)
        if not isinstance(metadata, dict) or metadata.get("issuer") != self._issuer:
            raise self._failure("the issuer's metadata does not name the issuer itself")
        return metadata

    def _locate(self) -> str:
        if self._jwks_uri is not None:
            return self._jwks_uri
        metadata = self._metadata or self._discover()
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise self._failure("the issuer's metadata has no jwks_uri")
        return jwks_uri

    def _get(self, url: str) -> Any:
        parts = urlsplit(url)
        try:
            if parts.scheme == "file":
                return json.loads(Path(parts.path).read_text(encoding="utf-8"))
            response = httpx.get(url, timeout=FETCH_TIMEOUT)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, OSError, ValueError) as error:
            raise self._failure(f"cannot fetch {url}: {error}") from None
