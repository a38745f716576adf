"""``UsageReporter``: usage reports gathered and sent in batches from a background thread,
against httpx.MockTransport (the real service is exercised in tests/e2e)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mission_ledger_pep import PdpClient, UsageReporter


def _answering(seen: list[list[dict[str, Any]]], fail_first: int = 0) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body["reports"])
        if len(seen) <= fail_first:
            return httpx.Response(503)
        answers = [{"status": 200, "outcome": r["outcome"], **r} for r in body["reports"]]
        return httpx.Response(200, json={"reports": answers})

    return httpx.MockTransport(handle)


def test_reports_queued_together_go_out_in_one_request() -> None:
    seen: list[list[dict[str, Any]]] = []
    results: list[dict[str, Any]] = []
    client = PdpClient("https://ledger.test", "k", transport=_answering(seen))
    reporter = UsageReporter(client, interval=0.05, on_result=results.append)
    for n in range(10):
        reporter.report(f"ev{n}", "executed", amount="1.00")
    with reporter:
        assert reporter.flush(timeout=5)
    assert [len(batch) for batch in seen] == [10]
    assert [r["evaluation_id"] for r in results] == [f"ev{n}" for n in range(10)]


def test_a_batch_not_delivered_is_sent_again_with_the_next() -> None:
    seen: list[list[dict[str, Any]]] = []
    results: list[dict[str, Any]] = []
    client = PdpClient("https://ledger.test", "k", transport=_answering(seen, fail_first=1))
    with UsageReporter(client, interval=0.01, on_result=results.append) as reporter:
        reporter.report("ev1", "aborted")
        assert reporter.flush(timeout=5)
    assert [[r["evaluation_id"] for r in batch] for batch in seen] == [["ev1"], ["ev1"]]
    assert [r["status"] for r in results] == [200]
