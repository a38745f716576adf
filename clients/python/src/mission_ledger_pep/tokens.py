"""Verifying compact JWS tokens through a JWKS: explicit ``typ``, an ``alg`` allowlist
(never ``none``, never symmetric), the key found by ``kid``."""

from __future__ import annotations

import json
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError

from mission_ledger_pep.jwks import JwksCache, UnknownKey

ALGORITHMS = ("ES256", "EdDSA", "Ed25519", "RS256")


class TokenRejected(Exception):
    """The token is not one we may act on; ``code`` names why."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(f"{code}: {detail}")


def verified_claims(token: str, jwks: JwksCache, *, typ: str) -> dict[str, Any]:
    try:
        compact = jws.extract_compact(token.encode("ascii"))
    except (JoseError, ValueError, UnicodeError) as error:
        raise TokenRejected("malformed", str(error)) from None
    header = compact.headers()
    if header.get("typ") != typ:
        raise TokenRejected("wrong_typ", f"typ is {header.get('typ')!r}, expected {typ!r}")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise TokenRejected("wrong_alg", f"alg {alg!r} is not allowed")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise TokenRejected("no_kid", "the header names no kid")
    try:
        key = jwks.key(kid)
    except UnknownKey as error:
        raise TokenRejected("unknown_key", str(error)) from None
    try:
        verified = jws.deserialize_compact(token, key, algorithms=[alg])
    except (JoseError, ValueError) as error:
        raise TokenRejected("bad_signature", str(error)) from None
    try:
        claims = json.loads(verified.payload)
    except ValueError:
        raise TokenRejected("malformed", "the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise TokenRejected("malformed", "the payload is not a JSON object")
    return claims
