"""``GET /.well-known/jwks.json``: the public signing keys (no credential needed).

Every pending, active and retired-but-retained key, each with ``kid``, ``use: sig``
and ``alg`` and no private member (SPEC section 3, standards section 9). Verifiers
may cache the set for ``Cache-Control`` (five minutes); rotation publishes a key
before it signs.

Freshness: besides the server's periodic ``Keyring.refresh()``, this route reloads
the keyring itself when its last reload is older than ``REFRESH_AFTER`` (one
reload at a time, in a worker thread), so a key rotated by the CLI on another
process shows up within that bound even if nothing else refreshes. A failed reload
is logged and the keys already loaded are served: the public JWKS stays available
while the store is briefly unreachable.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.json_body import JsonBodyRoute
from ledger.signing.keyring import Keyring

router = APIRouter(tags=["discovery"], route_class=JsonBodyRoute)
log = logging.getLogger("mission_ledger.api")

JWK_SET_MEDIA_TYPE = "application/jwk-set+json"
CACHE_CONTROL = "public, max-age=300"
REFRESH_AFTER = timedelta(seconds=30)


@router.get("/.well-known/jwks.json", response_class=JSONResponse)
async def jwks(request: Request) -> JSONResponse:
    services = request.app.state.services
    keyring = services.keyring
    assert isinstance(keyring, Keyring)
    now = services.clock.now()
    assert isinstance(now, datetime)
    if keyring.is_stale(now, max_age=REFRESH_AFTER):
        try:
            await run_in_threadpool(keyring.refresh_if_stale, now, max_age=REFRESH_AFTER)
        except Exception:
            log.exception("reloading the signing keys failed; serving the keys already loaded")
    return JSONResponse(
        keyring.jwks(now),
        media_type=JWK_SET_MEDIA_TYPE,
        headers={"Cache-Control": CACHE_CONTROL},
    )
