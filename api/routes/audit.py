"""The audit surface (SPEC 7.4): the ordered, hash-chained log of every event, the
decision log (every AuthZEN decision, with the evidence it was made on), and evidence
bundles."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api import policy
from api.evidence import EvidenceExporter, ExportScope
from api.routes.common import ServicesDep, optional_instant
from api.routes.gate import GatedRoute, allowed
from api.services import Services
from api.text_filters import text_filter
from api.views import audit_entry_view, decision_record_view
from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import parse_instant
from projections.decision_log import DecisionFilter

router = APIRouter(tags=["audit"], route_class=GatedRoute)

TAR_MEDIA_TYPE = "application/x-tar"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
#: Ids and names are matched exactly; printable text only (PostgreSQL cannot compare NUL).
_FILTER = text_filter(4096)


@router.get("/v1/audit/log", dependencies=[allowed(policy.READ_AUDIT_LOG)])
async def audit_log(
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Events after position ``after`` in position order, each with its actor and chain
    hash; ``next_after`` is the position to ask from next (null at the head). Auditors
    verify the chain offline with ``mission-ledger audit verify`` or from these hashes."""
    page = await run_in_threadpool(services.ledger.audit_log, after, limit)
    next_after = page[-1].position if len(page) == limit else None
    return {"data": [audit_entry_view(e) for e in page], "next_after": next_after}


@router.get(
    "/v1/audit/export",
    dependencies=[allowed(policy.EXPORT_EVIDENCE)],
    response_class=FileResponse,
    responses={200: {"content": {TAR_MEDIA_TYPE: {}}, "description": "An evidence bundle"}},
)
async def audit_export(
    services: ServicesDep,
    mission: Annotated[str | None, text_filter(128)] = None,
    start: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> FileResponse:
    """An evidence bundle (a tar with a signed manifest, ``docs/evidence.md``) of one
    Mission, or of the events recorded from ``from`` up to ``to`` (RFC 3339). Check it
    offline with ``mission-ledger audit verify-bundle FILE``."""
    return await export_response(services, mission, start, end)


async def export_response(
    services: Services, mission: str | None, start: str | None, end: str | None
) -> FileResponse:
    """The bundle of ``mission``, or of ``start`` to ``end`` (RFC 3339), as a download (API
    and console alike)."""
    scope = ExportScope(
        mission_id=mission,
        start=None if start is None else parse_instant(start, "/from"),
        end=None if end is None else parse_instant(end, "/to"),
    )
    path = await run_in_threadpool(_export_to_temporary_file, services, scope)
    name = f"evidence-{mission}.tar" if mission else "evidence.tar"
    return FileResponse(
        path,
        media_type=TAR_MEDIA_TYPE,
        filename=name,
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


def _export_to_temporary_file(services: Services, scope: ExportScope) -> Path:
    handle = tempfile.NamedTemporaryFile(prefix="ml-export-", suffix=".tar", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        with handle:
            exporter(services).export(scope, handle)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def exporter(services: Services) -> EvidenceExporter:
    return EvidenceExporter(
        services.ledger,
        services.keyring,
        issuer=services.settings.public_issuer,
        alg=services.settings.signing_alg,
        decisions=services.decision_records,
    )


@router.get("/v1/audit/decisions", dependencies=[allowed(policy.READ_DECISION_LOG)])
async def decision_log(
    services: ServicesDep,
    mission: Annotated[str | None, _FILTER] = None,
    mandate: Annotated[str | None, _FILTER] = None,
    agent: Annotated[str | None, _FILTER] = None,
    decision: Literal["permit", "deny"] | None = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=8192)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Recorded decisions in the order they were made (``evaluated_at``, then
    ``evaluation_id``), filtered by Mission, Mandate, agent (``subject.id``), outcome and
    time (``from`` inclusive, ``to`` exclusive, RFC 3339); ``next_cursor`` is null after the
    last page. Records reach the log within ``DECISION_LOG_FLUSH_MS`` of their decision."""
    where = decision_filter(mission, mandate, agent, decision, from_, to)
    records, next_cursor = await run_in_threadpool(
        services.decision_log.page, where, cursor=cursor, limit=limit
    )
    return {"data": [decision_record_view(r) for r in records], "next_cursor": next_cursor}


def decision_filter(
    mission: str | None,
    mandate: str | None,
    agent: str | None,
    decision: str | None,
    from_: str | None,
    to: str | None,
) -> DecisionFilter:
    """The decision log's filter from the search's members (API and console alike)."""
    since: datetime | None = optional_instant(from_, "/from")
    until: datetime | None = optional_instant(to, "/to")
    if since is not None and until is not None and until < since:
        raise InvalidRequest.at("/to", "must not be before from")
    if decision not in (None, "permit", "deny"):
        raise InvalidRequest.at("/decision", "must be permit or deny")
    return DecisionFilter(
        mission=mission,
        mandate=mandate,
        agent=agent,
        decision=None if decision is None else decision == "permit",
        since=since,
        until=until,
    )
