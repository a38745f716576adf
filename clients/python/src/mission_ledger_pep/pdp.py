"""AuthZEN clients that fail closed: ``PdpClient`` (sync) and ``AsyncPdpClient``.

Every transport error, timeout, 5xx or malformed answer is a deny with reason
``pdp_unavailable``; nothing but a well-formed ``{"decision": true}`` allows. Both keep one
pooled connection set (``httpx.Client`` / ``httpx.AsyncClient``); close them when done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import httpx

from mission_ledger_pep import protocol
from mission_ledger_pep.decision import Decision

Json = dict[str, Any]


class _Base:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _headers(self, min_position: int | None = None) -> dict[str, str]:
        return protocol.headers(self.api_key, min_position)


class PdpClient(_Base):
    """Blocking client; thread-safe (one ``httpx.Client`` pool)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 2.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PdpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(self, path_or_url: str, body: Mapping[str, Any], **kw: Any) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        return self._http.post(url, json=body, **kw)

    def evaluate(self, request: Mapping[str, Any], *, min_position: int | None = None) -> Decision:
        """One AuthZEN evaluation; ``min_position`` is sent as ``Ledger-Min-Position``."""
        try:
            response = self._post(protocol.EVALUATION, request, headers=self._headers(min_position))
        except httpx.HTTPError as error:
            return Decision.unavailable(f"{type(error).__name__}: {error}")
        return protocol.decision_of(response, request)

    def evaluations(
        self, request: Mapping[str, Any], *, min_position: int | None = None
    ) -> list[Decision]:
        """A batch (``evaluations`` plus top-level defaults); one Decision per answered item."""
        count = len(request.get("evaluations") or [])
        try:
            response = self._post(
                protocol.EVALUATIONS, request, headers=self._headers(min_position)
            )
        except httpx.HTTPError as error:
            return [Decision.unavailable(f"{type(error).__name__}: {error}")] * max(count, 1)
        return protocol.decisions_of(response, count, _semantic(request))

    def _search(self, kind: str, request: Mapping[str, Any]) -> Json:
        try:
            response = self._post(protocol.SEARCH + kind, request, headers=self._headers())
        except httpx.HTTPError as error:
            return {"results": [], "error": str(error)}
        return protocol.search_of(response)

    def search_subject(self, request: Mapping[str, Any]) -> Json:
        return self._search("subject", request)

    def search_resource(self, request: Mapping[str, Any]) -> Json:
        return self._search("resource", request)

    def search_action(self, request: Mapping[str, Any]) -> Json:
        return self._search("action", request)

    # ARAP: requestable denials (needs a server with SPEC 7.1).
    def request_access(
        self,
        decision: Decision,
        *,
        justification: str | None = None,
        requested_until: str | None = None,
        request: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Create an access request for a requestable denial: ``{task, result?}``."""
        call = protocol.access_request_call(
            self.base_url,
            decision,
            justification=justification,
            requested_until=requested_until,
            request=request,
        )
        headers = self._headers()
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return protocol.task_of(self._post(call.url, call.body, headers=headers))

    def task_status(self, task: Mapping[str, Any]) -> Json:
        return protocol.task_of(self._http.get(task["status_endpoint"], headers=self._headers()))

    def wait_for_task(
        self,
        answer: Mapping[str, Any],
        *,
        initial: float = 2.0,
        cap: float = 60.0,
        max_wait: float | None = None,
    ) -> Json:
        """Poll until the task is terminal (or ``max_wait`` seconds passed): backoff per
        standards.md 2.5, honouring ``Retry-After``. Returns the last ``{task, result?}``."""
        backoff = protocol.Backoff(initial, cap)
        current = dict(answer)
        started = time.monotonic()
        retry_after: str | None = None
        while not protocol.is_terminal(current):
            delay = backoff.next_delay(retry_after)
            if max_wait is not None and time.monotonic() - started + delay > max_wait:
                return current
            self._sleep(delay)
            response = self._http.get(current["task"]["status_endpoint"], headers=self._headers())
            retry_after = response.headers.get("Retry-After")
            if response.status_code in (429, 503):
                continue
            current = protocol.task_of(response)
        return current

    def reevaluate(self, request: Mapping[str, Any], task_answer: Mapping[str, Any]) -> Decision:
        """Evaluate again with the approved task's ``approval`` at ``context.approval``; a task
        that is not approved in ``reevaluate`` mode denies without asking."""
        approval = protocol.approval_of(task_answer)
        if approval is None:
            return Decision(
                allowed=False,
                reason="not_approved",
                context={"reason": "not_approved"},
                request=request,
            )
        return self.evaluate(protocol.with_approval(request, approval))

    def report_usage(
        self, evaluation_id: str, outcome: str, *, amount: str | None = None
    ) -> httpx.Response:
        """``POST /v1/usage`` (needs a server with SPEC 7.3 metering)."""
        body = protocol.usage_body(evaluation_id, outcome, amount)
        return self._post(protocol.USAGE, body, headers=self._headers())

    def report_usages(self, reports: Sequence[Mapping[str, Any]]) -> httpx.Response:
        """Many usage reports in one ``POST /v1/usage`` (``{"reports": [...]}``); the answer
        has one entry per report, in order (see ``UsageReporter`` to batch in the
        background)."""
        return self._post(protocol.USAGE, {"reports": list(reports)}, headers=self._headers())


class AsyncPdpClient(_Base):
    """The same API, awaitable; one ``httpx.AsyncClient`` pool."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPdpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _post(self, path_or_url: str, body: Mapping[str, Any], **kw: Any) -> httpx.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        return await self._http.post(url, json=body, **kw)

    async def evaluate(
        self, request: Mapping[str, Any], *, min_position: int | None = None
    ) -> Decision:
        try:
            response = await self._post(
                protocol.EVALUATION, request, headers=self._headers(min_position)
            )
        except httpx.HTTPError as error:
            return Decision.unavailable(f"{type(error).__name__}: {error}")
        return protocol.decision_of(response, request)

    async def evaluations(
        self, request: Mapping[str, Any], *, min_position: int | None = None
    ) -> list[Decision]:
        count = len(request.get("evaluations") or [])
        try:
            response = await self._post(
                protocol.EVALUATIONS, request, headers=self._headers(min_position)
            )
        except httpx.HTTPError as error:
            return [Decision.unavailable(f"{type(error).__name__}: {error}")] * max(count, 1)
        return protocol.decisions_of(response, count, _semantic(request))

    async def _search(self, kind: str, request: Mapping[str, Any]) -> Json:
        try:
            response = await self._post(protocol.SEARCH + kind, request, headers=self._headers())
        except httpx.HTTPError as error:
            return {"results": [], "error": str(error)}
        return protocol.search_of(response)

    async def search_subject(self, request: Mapping[str, Any]) -> Json:
        return await self._search("subject", request)

    async def search_resource(self, request: Mapping[str, Any]) -> Json:
        return await self._search("resource", request)

    async def search_action(self, request: Mapping[str, Any]) -> Json:
        return await self._search("action", request)

    async def request_access(
        self,
        decision: Decision,
        *,
        justification: str | None = None,
        requested_until: str | None = None,
        request: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        call = protocol.access_request_call(
            self.base_url,
            decision,
            justification=justification,
            requested_until=requested_until,
            request=request,
        )
        headers = self._headers()
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return protocol.task_of(await self._post(call.url, call.body, headers=headers))

    async def wait_for_task(
        self,
        answer: Mapping[str, Any],
        *,
        initial: float = 2.0,
        cap: float = 60.0,
        max_wait: float | None = None,
    ) -> Json:
        backoff = protocol.Backoff(initial, cap)
        current = dict(answer)
        started = time.monotonic()
        retry_after: str | None = None
        while not protocol.is_terminal(current):
            delay = backoff.next_delay(retry_after)
            if max_wait is not None and time.monotonic() - started + delay > max_wait:
                return current
            await self._sleep(delay)
            url = current["task"]["status_endpoint"]
            response = await self._http.get(url, headers=self._headers())
            retry_after = response.headers.get("Retry-After")
            if response.status_code in (429, 503):
                continue
            current = protocol.task_of(response)
        return current

    async def reevaluate(
        self, request: Mapping[str, Any], task_answer: Mapping[str, Any]
    ) -> Decision:
        approval = protocol.approval_of(task_answer)
        if approval is None:
            return Decision(
                allowed=False,
                reason="not_approved",
                context={"reason": "not_approved"},
                request=request,
            )
        return await self.evaluate(protocol.with_approval(request, approval))

    async def report_usage(
        self, evaluation_id: str, outcome: str, *, amount: str | None = None
    ) -> httpx.Response:
        body = protocol.usage_body(evaluation_id, outcome, amount)
        return await self._post(protocol.USAGE, body, headers=self._headers())

    async def report_usages(self, reports: Sequence[Mapping[str, Any]]) -> httpx.Response:
        """Many usage reports in one ``POST /v1/usage`` (``{"reports": [...]}``)."""
        return await self._post(protocol.USAGE, {"reports": list(reports)}, headers=self._headers())


def _semantic(request: Mapping[str, Any]) -> object:
    """The batch's ``options.evaluations_semantic`` (``execute_all`` when absent)."""
    options = request.get("options")
    return options.get("evaluations_semantic") if isinstance(options, Mapping) else None
