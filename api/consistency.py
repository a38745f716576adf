"""Read-your-writes: ``Ledger-Position`` on writes, ``Ledger-Min-Position`` on reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Response

from api.services import Services, get_services
from api.whole_numbers import whole_number
from ledger.domain.errors import InvalidRequest, StaleState

POSITION_HEADER = "Ledger-Position"
MIN_POSITION_HEADER = "Ledger-Min-Position"


def parse_min_position(value: str | None) -> int | None:
    if value is None:
        return None
    position = whole_number(value.strip())
    if position is None:
        raise InvalidRequest.at(
            "/headers/Ledger-Min-Position", "must be a non-negative integer position"
        )
    return position


async def _fresh(services: Services, value: str | None, *, core: bool) -> None:
    position = parse_min_position(value)
    if position is None:
        return
    timeout = services.settings.read_your_writes_timeout_seconds
    if not await services.follower.wait_async(position, timeout, core=core):
        reached = services.follower.core_position if core else services.follower.position
        raise StaleState(
            f"this replica's read models are at position {reached}, "
            f"behind the requested {position}; retry shortly",
            extensions={"position": reached, "requested": position},
        )


async def require_fresh(
    services: Annotated[Services, Depends(get_services)],
    ledger_min_position: Annotated[str | None, Header(alias=MIN_POSITION_HEADER)] = None,
) -> None:
    """Wait (up to the configured bound) until this replica's core read models include the
    requested position; 503 ``stale_state`` if they do not get there in time."""
    await _fresh(services, ledger_min_position, core=True)


async def require_fresh_signals(
    services: Annotated[Services, Depends(get_services)],
    ledger_min_position: Annotated[str | None, Header(alias=MIN_POSITION_HEADER)] = None,
) -> None:
    """``require_fresh`` for SSF reads: the signal log's tables must include it too."""
    await _fresh(services, ledger_min_position, core=False)


Fresh = Depends(require_fresh)
FreshSignals = Depends(require_fresh_signals)


async def answer_write(
    services: Services,
    response: Response,
    position: int | None,
    *,
    signals: bool = False,
    announces: bool = False,
) -> None:
    """Set ``Ledger-Position`` and wait until local read models include the write: the core
    ones (boards, evaluation index), and with ``signals`` (SSF stream writes) the signal log
    and the SSE hub too. SETs are delivered asynchronously, as SSF intends, but a write that
    ``announces`` (a governance change that causes SETs: revoke, suspend, narrow, …) also
    waits, at most ``signal_wait_ms``, until this replica's SSE subscribers have been sent
    its SETs, so a PEP subscribed here typically holds the change before the answer
    (docs/decisions/0014). That wait never fails the write."""
    if position is None:
        return
    response.headers[POSITION_HEADER] = str(position)
    timeout = services.settings.read_your_writes_timeout_seconds
    if not await services.follower.wait_async(position, timeout, core=not signals):
        raise StaleState(
            f"the write was committed at position {position}, but this replica's read "
            "models have not caught up yet; read with Ledger-Min-Position to see it",
            extensions={"position": position},
        )
    if announces:
        await services.sse.wait_sent(position, services.settings.signal_wait_ms / 1000)
