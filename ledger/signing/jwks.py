"""Verify compact JWS against a given JWK Set, offline: no key store, no clock, no network.

Evidence is checked this way (checkpoint files, export bundles): the keys are the ones
that signed it, retired or not, and nothing is fetched. A key verifies only the ``alg``
its JWK names; ``none`` and HMAC are refused like everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import extract_compact, validate_compact

from ledger.signing.algorithms import (
    SUPPORTED_ALGS,
    jose_verification_key,
    jwk_thumbprint,
    jws_registry,
)


class JwsRejected(Exception):
    """A JWS that does not verify against the key set (the message says why)."""


class JwksVerifier:
    """The public keys of one JWK Set, by ``kid``."""

    def __init__(self, jwks: object) -> None:
        if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
            msg = 'not a JWK Set (a JSON object with a "keys" array)'
            raise ValueError(msg)
        self._keys: dict[str, tuple[str, Key]] = {}
        for jwk in jwks["keys"]:
            if not isinstance(jwk, Mapping):
                msg = "a member of the JWK Set is not an object"
                raise ValueError(msg)
            kid, alg = jwk.get("kid"), jwk.get("alg")
            if not isinstance(kid, str) or not isinstance(alg, str) or alg not in SUPPORTED_ALGS:
                msg = f"key {kid!r} has no kid or an unsupported alg ({alg!r})"
                raise ValueError(msg)
            if jwk_thumbprint(jwk) != kid:
                msg = f"key {kid!r}: its kid is not the RFC 7638 thumbprint of the key"
                raise ValueError(msg)
            try:
                key = jose_verification_key({k: str(v) for k, v in jwk.items()})
            except (JoseError, ValueError, TypeError) as error:
                msg = f"key {kid!r} cannot be imported ({error})"
                raise ValueError(msg) from None
            self._keys[kid] = (alg, key)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, token: str, *, typ: str | None = None) -> tuple[dict[str, Any], bytes]:
        """The protected header and payload of ``token`` if a key of the set verifies it
        (and its ``typ`` is ``typ``, when given); else ``JwsRejected``."""
        try:
            compact = extract_compact(token.strip().encode("ascii"))
            header = dict(compact.headers())
        except (JoseError, ValueError, TypeError, UnicodeEncodeError) as error:
            msg = f"not a well-formed compact JWS ({error})"
            raise JwsRejected(msg) from None
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or kid not in self._keys:
            msg = f"signed by key {kid!r}, which is not in the key set"
            raise JwsRejected(msg)
        key_alg, key = self._keys[kid]
        if alg != key_alg:
            msg = f"key {kid} is a {key_alg} key, but the header says {alg!r}"
            raise JwsRejected(msg)
        if typ is not None and header.get("typ") != typ:
            msg = f"typ is {header.get('typ')!r}, expected {typ!r}"
            raise JwsRejected(msg)
        try:
            valid = validate_compact(compact, key, registry=jws_registry([key_alg]))
        except JoseError as error:
            msg = f"cannot be verified ({error})"
            raise JwsRejected(msg) from None
        if not valid:
            msg = f"the signature does not verify with key {kid}"
            raise JwsRejected(msg)
        return header, compact.payload
