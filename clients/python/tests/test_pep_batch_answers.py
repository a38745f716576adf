"""A batch answer is read whole or not at all: with ``execute_all`` (the default) it has one
decision per request item, and under a short-circuit ``evaluations_semantic`` it stops
exactly at the first deny (``deny_on_first_deny``) or permit (``permit_on_first_permit``),
else it runs to the end. Any other answer (cut short, or running past where it had to stop)
denies every item: a PEP that checks ``all(d.allowed for d in decisions)`` never reads a
truncated answer as a complete one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from mission_ledger_pep import PdpClient

ITEM = {
    "subject": {"type": "agent", "id": "a1"},
    "action": {"name": "invoices.read"},
    "resource": {"type": "api", "id": "https://erp.example.com/invoices/7"},
}


def _client(answered: list[bool]) -> PdpClient:
    body = {"evaluations": [{"decision": allowed} for allowed in answered]}
    content = json.dumps(body).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=content))
    return PdpClient("http://pdp.test", transport=transport)


def _batch(count: int, semantic: str | None) -> dict[str, Any]:
    batch: dict[str, Any] = {**ITEM, "evaluations": [{} for _ in range(count)]}
    if semantic is not None:
        batch["options"] = {"evaluations_semantic": semantic}
    return batch


def _read(answered: list[bool], count: int, semantic: str | None) -> list[str]:
    decisions = _client(answered).evaluations(_batch(count, semantic))
    return [
        "unavailable" if d.reason == "pdp_unavailable" else ("permit" if d.allowed else "deny")
        for d in decisions
    ]


@pytest.mark.parametrize(
    ("semantic", "answered", "count"),
    [
        (None, [True, True, True], 3),
        ("execute_all", [True, False, True], 3),
        ("deny_on_first_deny", [True, False], 3),
        ("deny_on_first_deny", [True, True, True], 3),
        ("permit_on_first_permit", [False, True], 3),
        ("permit_on_first_permit", [False, False, False], 3),
    ],
)
def test_a_whole_answer_is_read_as_it_is(
    semantic: str | None, answered: list[bool], count: int
) -> None:
    assert _read(answered, count, semantic) == [("permit" if a else "deny") for a in answered]


@pytest.mark.parametrize(
    ("semantic", "answered", "count"),
    [
        (None, [True, True], 3),  # cut short
        ("execute_all", [True], 3),
        ("deny_on_first_deny", [True, True], 3),  # stopped without a deny
        ("deny_on_first_deny", [False, True], 3),  # ran past the first deny
        ("permit_on_first_permit", [False, False], 3),  # stopped without a permit
        ("permit_on_first_permit", [True, False], 3),  # ran past the first permit
        ("deny_on_first_deny", [], 3),
    ],
)
def test_an_answer_that_is_not_whole_denies_every_item(
    semantic: str | None, answered: list[bool], count: int
) -> None:
    assert _read(answered, count, semantic) == ["unavailable"] * count
