"""``UsageReporter``: usage reports (SPEC 7.3) gathered and sent in batches in the background.

A metered permit needs its outcome reported (``POST /v1/usage``). Sending each report as it
happens costs a request per metered call; the reporter queues them and a background thread
sends whatever has gathered as one ``{"reports": [...]}`` request every ``interval`` seconds
(or as soon as ``max_batch`` are waiting), so a metered call costs about one request (its
decision) plus a fraction of one. Each report's answer goes to ``on_result`` (the server
answers each one on its own: 200 with the outcome, or a problem such as 404 or 409
``reservation_expired``); a report whose batch could not be delivered (transport error, 5xx)
is kept and sent again with the next batch, at most ``max_attempts`` times. Reporting the
same ``evaluation_id`` twice is harmless: the server answers the first outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx

from mission_ledger_pep import protocol
from mission_ledger_pep.pdp import PdpClient

Json = dict[str, Any]
ResultHook = Callable[[Json], None]


class UsageReporter:
    """Batches ``report`` calls into ``POST /v1/usage {"reports": [...]}`` requests."""

    def __init__(
        self,
        client: PdpClient,
        *,
        interval: float = 0.05,
        max_batch: int = 500,
        max_attempts: int = 5,
        on_result: ResultHook | None = None,
    ) -> None:
        if not 1 <= max_batch <= 1000:
            msg = "max_batch must be between 1 and 1000 (the server's limit)"
            raise ValueError(msg)
        self._client = client
        self._interval = interval
        self._max_batch = max_batch
        self._max_attempts = max_attempts
        self._on_result = on_result
        self._cond = threading.Condition()
        self._waiting: list[tuple[Json, int]] = []
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Batches sent, reports answered, reports given up after ``max_attempts``.
        self.batches = 0
        self.answered = 0
        self.dropped = 0

    def start(self) -> UsageReporter:
        self._thread = threading.Thread(target=self._run, name="usage-reporter", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> UsageReporter:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def report(self, evaluation_id: str, outcome: str, *, amount: str | None = None) -> None:
        """Queue the outcome of the permit ``evaluation_id`` (``executed``/``aborted``)."""
        body = protocol.usage_body(evaluation_id, outcome, amount)
        with self._cond:
            if self._stopping:
                msg = "the reporter is closed"
                raise RuntimeError(msg)
            self._waiting.append((body, 0))
            if len(self._waiting) >= self._max_batch:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every report queued so far is answered (or given up); False on
        timeout."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._waiting and not self._in_flight, timeout=timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or len(self._waiting) >= self._max_batch,
                    timeout=self._interval,
                )
                if self._stopping and not self._waiting:
                    return
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                self._in_flight = len(batch)
            if batch:
                self._send(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _send(self, batch: list[tuple[Json, int]]) -> None:
        answers = self._post([body for body, _ in batch])
        self.batches += 1
        if answers is None:  # not delivered: keep for the next batch, up to max_attempts
            again = [(body, tries + 1) for body, tries in batch if tries + 1 < self._max_attempts]
            self.dropped += len(batch) - len(again)
            with self._cond:
                self._waiting[:0] = again
            return
        self.answered += len(answers)
        if self._on_result is not None:
            for answer in answers:
                self._on_result(answer)

    def _post(self, bodies: list[Json]) -> list[Json] | None:
        try:
            response = self._client.report_usages(bodies)
        except httpx.HTTPError:
            return None
        if response.status_code >= 500:
            return None
        if response.status_code != 200:  # the whole batch was refused (e.g. 401, 400)
            problem = {"status": response.status_code, "detail": response.text}
            return [{"evaluation_id": b["evaluation_id"], **problem} for b in bodies]
        try:
            answers = response.json()["reports"]
        except (ValueError, KeyError, TypeError):
            return None
        return [dict(a) for a in answers] if isinstance(answers, list) else None
