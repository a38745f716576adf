"""Usage reports: the outcome of a metered permit commits or releases its reservation.

One report (``{evaluation_id, outcome, amount?}``) or many (``{"reports": [...]}``, each
answered on its own): the Meter writer saves those arriving together in one transaction.
A permit answered from another replica's budget lease is recorded by that replica a few
milliseconds after it was answered (decision 0019), so a report that finds no reservation
is tried again for a moment before it is answered 404.

Reports are half of every metered decision, so this is a plain Starlette route like the
AuthZEN evaluation: FastAPI's dependency solving, routing and response model cost the event
loop ≈ 200 µs a request, about two decisions (``bench/README.md``, "2026-12-06, evening").
The role is checked before the body is read; the body is read as FastAPI would
(``api.json_body.body_value``) and judged as one report or many by its shape, so that a
refusal points at the member at fault (``/reports/3/outcome``); ``api/openapi.py``
describes the route.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter

from api import policy
from api.auth import authenticate_request
from api.errors import problem_body
from api.json_body import body_value, validated
from api.routes.common import well_formed_id
from api.schemas import UsageIn, UsageReportsIn
from api.services import Services
from api.views import usage_report_view
from ledger.application.metering import Outcome, Report, Reported
from ledger.domain.actors import Actor
from ledger.domain.errors import LedgerError, NotFound
from ledger.domain.metering import mission_of_evaluation

router = APIRouter(tags=["usage"])

#: Pauses before a report that found no reservation is tried again (seconds).
UNKNOWN_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8)

#: The body: one report, or many (an object with ``reports``).
ONE: TypeAdapter[UsageIn] = TypeAdapter(UsageIn)
MANY: TypeAdapter[UsageReportsIn] = TypeAdapter(UsageReportsIn)


async def report_usage(request: Request) -> Response:
    """``executed`` commits the permit's reservation (for ``amount`` when it is lower than
    the reserved amount), ``aborted`` releases it. Reporting the same ``evaluation_id`` again
    answers with the first outcome and changes nothing. Many reports: 200 with one answer
    per report, in order (``status`` 200 and the report's outcome, or a problem)."""
    services: Services = request.app.state.services
    principal = await authenticate_request(request, services)
    policy.REPORT_USAGE.check(principal)
    value = await body_value(request)
    many = isinstance(value, dict) and "reports" in value
    body = validated(value, MANY) if many else validated(value, ONE)
    actor = principal.actor()
    if isinstance(body, UsageIn):
        outcome = (await _reported(services, [body], actor))[0]
        if isinstance(outcome, LedgerError):
            raise outcome
        return _json(outcome)
    outcomes = await _reported(services, body.reports, actor)
    return _json(
        {
            "reports": [
                {"status": 200, **outcome}
                if not isinstance(outcome, LedgerError)
                else {"evaluation_id": report.evaluation_id, **problem_body(outcome)}
                for report, outcome in zip(body.reports, outcomes, strict=True)
            ]
        }
    )


router.add_route("/v1/usage", report_usage, methods=["POST"], include_in_schema=False)


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


async def _reported(
    services: Services, reports: list[UsageIn], actor: Actor
) -> list[dict[str, Any] | LedgerError]:
    """Each report's answer view or refusal; reports for no known reservation are tried
    again after each pause of ``UNKNOWN_RETRIES``."""
    answers: list[dict[str, Any] | LedgerError | None] = [None] * len(reports)
    todo: list[tuple[int, Report]] = []
    for index, report in enumerate(reports):
        mission_id = mission_of_evaluation(report.evaluation_id)
        if mission_id is None or not well_formed_id(mission_id, "msn"):
            answers[index] = NotFound(f"no reservation for evaluation {report.evaluation_id!r}")
        else:
            todo.append((index, _operation(report, mission_id, actor)))
    for pause in (0.0, *UNKNOWN_RETRIES):
        if not todo:
            break
        if pause:
            await asyncio.sleep(pause)
        # One future for all of them: the event loop wakes once when their groups are saved.
        outcomes = await asyncio.wrap_future(
            services.meters.submit_many([operation for _, operation in todo])
        )
        for (index, operation), outcome in zip(todo, outcomes, strict=True):
            answers[index] = _answer(operation, outcome)
        todo = [(i, operation) for i, operation in todo if isinstance(answers[i], NotFound)]
    answered = [answer for answer in answers if answer is not None]
    assert len(answered) == len(reports)  # the first attempt answers every one
    return answered


def _operation(report: UsageIn, mission_id: str, actor: Actor) -> Report:
    return Report(
        mission_id=mission_id,
        evaluation_id=report.evaluation_id,
        outcome=report.outcome,
        amount=report.amount,
        actor=actor,
    )


def _answer(operation: Report, outcome: Outcome) -> dict[str, Any] | LedgerError:
    if isinstance(outcome, LedgerError):
        return outcome
    assert isinstance(outcome, Reported)
    return usage_report_view(operation.evaluation_id, operation.mission_id, outcome)
