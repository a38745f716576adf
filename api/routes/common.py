"""Small helpers shared by the routers."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api.consistency import answer_write
from api.services import Services, get_services
from ledger.application import Written
from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import parse_instant

ServicesDep = Annotated[Services, Depends(get_services)]

T = TypeVar("T")

_ID_TAIL = re.compile(r"[A-Za-z0-9_-]{1,60}")


def well_formed_id(identifier: str, prefix: str) -> bool:
    """Whether ``identifier`` has the shape of the ids this service issues (``<prefix>_`` and
    URL-safe characters). Anything else is simply unknown, and never reaches the store:
    PostgreSQL refuses even to compare a text containing NUL."""
    head, separator, tail = identifier.partition("_")
    return head == prefix and bool(separator) and _ID_TAIL.fullmatch(tail) is not None


async def finish_write(
    services: Services,
    response: Response,
    written: Written[Any],
    *,
    status_code: int,
    signals: bool = False,
    announces: bool = False,
) -> None:
    """Status code (the original one on a replay), ``Ledger-Position``, read-your-writes
    (``signals``: also of the signal log, for SSF stream writes; ``announces``: a governance
    change that causes SETs, answered once this replica's SSE subscribers were sent them,
    within ``signal_wait_ms``)."""
    response.status_code = (
        written.status_code if written.replayed and written.status_code else (status_code)
    )
    position = written.position
    if position is None:
        value = written.value
        position = await run_in_threadpool(
            services.ledger.event_log.position_of, value.id, value.version
        )
    await answer_write(services, response, position, signals=signals, announces=announces)


def optional_instant(value: str | None, pointer: str) -> Any:
    return None if value is None else parse_instant(value, pointer)


async def refuse_null_body(request: Request, body: object | None) -> None:
    """An optional body may be absent, but one that is present must be a JSON object: FastAPI
    reads a literal ``null`` as "no body", which would let a non-object body through."""
    if body is None and (await request.body()).strip():
        raise InvalidRequest.at("", "the body must be a JSON object")
