"""The ``Idempotency-Key`` header: scoped to the credential, compared by request digest."""

from __future__ import annotations

import hashlib

import rfc8785
from fastapi import Request

from api.auth import Principal
from api.json_body import max_depth_of, parse_json
from ledger.application import IdempotencyRequest
from ledger.domain.errors import InvalidRequest

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


async def idempotency_for(
    request: Request, principal: Principal, status_code: int
) -> IdempotencyRequest | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest.at(
            "/headers/Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} printable characters"
        )
    body = await request.body()
    try:
        canonical = rfc8785.dumps(parse_json(body, max_depth_of(request))) if body else b""
    except (ValueError, rfc8785.CanonicalizationError):
        canonical = body
    digest = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + canonical
    ).hexdigest()
    return IdempotencyRequest(
        scope=principal.scope, key=key, request_hash=digest, status_code=status_code
    )
