"""Small helpers shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Response
from starlette.concurrency import run_in_threadpool

from api.consistency import answer_write
from api.services import Services, get_services
from ledger.application import Written
from ledger.domain.instants import parse_instant

ServicesDep = Annotated[Services, Depends(get_services)]

T = TypeVar("T")


async def finish_write(
    services: Services, response: Response, written: Written[Any], *, status_code: int
) -> None:
    """Status code (the original one on a replay), ``Ledger-Position``, read-your-writes."""
    response.status_code = (
        written.status_code if written.replayed and written.status_code else (status_code)
    )
    position = written.position
    if position is None:
        value = written.value
        position = await run_in_threadpool(
            services.ledger.event_log.position_of, value.id, value.version
        )
    await answer_write(services, response, position)


def optional_instant(value: str | None, pointer: str) -> Any:
    return None if value is None else parse_instant(value, pointer)
