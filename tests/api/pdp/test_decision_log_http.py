"""The decision log over HTTP (SPEC 7.4): every AuthZEN decision — single evaluation, each
batch item, each search call, stale answers — is recorded under the ``evaluation_id`` the
PEP received, with the evidence it was made on; ``GET /v1/audit/decisions`` (auditor,
admin) lists the records with filters and cursor paging. The app runs in
``DECISION_LOG_MODE=sync`` here, so a record is in the store once its answer is received;
one test runs the default (async) mode and shows the queue written at shutdown. Every test
runs with each writer: a process of its own (the default) and a thread of the app's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.domain.canonical import raw_digest
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from projections.decision_log import DecisionFilter, DecisionLog
from tests.api.conftest import assert_problem
from tests.api.pdp.conftest import Harness, _started, server_settings
from tests.api.pdp.test_authzen_decisions import ERP, entry, request
from tests.conftest import MutableClock

MEMBERS = {
    "evaluation_id",
    "evaluated_at",
    "principal",
    "subject",
    "action",
    "resource",
    "request_digest",
    "mandate_id",
    "mission_id",
    "mission_version",
    "index_position",
    "decision",
    "reason",
    "approval_id",
}


def _settings(store_settings: Settings, **overrides: Any) -> Settings:
    return server_settings(store_settings, read_your_writes_timeout_seconds=0.05, **overrides)


@pytest.fixture(params=["process", "thread"])
def h(
    store_settings: Settings, clock: MutableClock, request: pytest.FixtureRequest
) -> Iterator[Harness]:
    """Each test with either decision log writer (a process of its own, the default; a
    thread of the app's process)."""
    settings = _settings(
        store_settings, decision_log_mode="sync", decision_log_writer=request.param
    )
    yield from _started(settings, clock)


def _decisions(h: Harness, who: str = "auditor", **params: Any) -> dict[str, Any]:
    response = h.client.get("/v1/audit/decisions", params=params, headers=h.auth(who))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _all(h: Harness, limit: int = 1000, **params: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _decisions(h, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        records += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return records


def _token(h: Harness) -> tuple[str, str]:
    mission = h.mission([entry(["invoices.pay", "invoices.read"])])
    return mission, str(h.mandate(mission)["token"])


def _mandate_id(h: Harness, mission: str) -> str:
    [mandate] = _all(h, mission=mission, decision="permit")
    return str(mandate["mandate_id"])


def test_a_permit_is_recorded_with_the_members_of_spec_7_4(h: Harness) -> None:
    mission, token = _token(h)
    body = request(token)
    position = h.head()
    answer = h.evaluate(body)
    [record] = _all(h)
    assert set(record) == MEMBERS
    assert record["evaluation_id"] == answer["context"]["evaluation_id"]
    assert record["evaluated_at"] == "2026-11-28T12:00:00Z"
    assert record["principal"] == {"type": "api_key", "name": "pep-1", "role": "pep"}
    assert (record["subject"], record["action"], record["resource"]) == (
        body["subject"],
        body["action"],
        body["resource"],
    )
    assert record["request_digest"] == raw_digest(body)
    assert record["mandate_id"] == answer["context"]["mandate"]["id"]
    assert (record["mission_id"], record["mission_version"]) == (mission, 1)
    assert record["index_position"] == position
    assert (record["decision"], record["reason"], record["approval_id"]) == (True, None, None)


def test_a_metered_permit_is_recorded_with_its_mandate(h: Harness) -> None:
    mission = h.mission(
        [entry(["invoices.pay"])], controls={"max_budget": {"amount": "100.00", "currency": "USD"}}
    )
    token = str(h.mandate(mission)["token"])
    answer = h.evaluate(request(token, action_properties={"amount": "5.00", "currency": "USD"}))
    assert "reservation_expires_at" in answer["context"]  # metered
    [record] = _all(h, mission=mission)
    assert record["evaluation_id"] == answer["context"]["evaluation_id"]
    assert record["mandate_id"] == answer["context"]["mandate"]["id"]
    assert record["decision"] is True


def test_a_denial_is_recorded_with_its_reason_and_mandate(h: Harness) -> None:
    mission, token = _token(h)
    answer = h.evaluate(request(token, action="journal-entries.write"))
    [record] = _all(h)
    assert record["evaluation_id"] == answer["context"]["evaluation_id"]
    assert (record["decision"], record["reason"]) == (False, "out_of_authority")
    assert record["mission_id"] == mission
    assert record["mandate_id"] is not None


def test_each_batch_item_is_recorded_under_its_own_evaluation_id(h: Harness) -> None:
    _, token = _token(h)
    body = {
        **request(token),
        "evaluations": [{}, {"action": {"name": "journal-entries.write"}}, "not an object"],
    }
    response = h.client.post("/access/v1/evaluations", json=body, headers=h.auth("pep"))
    assert response.status_code == 200, response.text
    answered = response.json()["evaluations"]
    records = {r["evaluation_id"]: r for r in _all(h)}
    assert list(records) == [a["context"]["evaluation_id"] for a in answered]
    first, second, third = records.values()
    assert first["request_digest"] == raw_digest(
        {k: body[k] for k in ("subject", "action", "resource", "context")}
    )
    assert second["action"] == {"name": "journal-entries.write"}
    assert (third["reason"], third["subject"], third["request_digest"]) == (
        "invalid_request",
        None,
        raw_digest("not an object"),
    )


def test_items_a_batch_semantic_skips_are_not_decisions_and_not_recorded(h: Harness) -> None:
    _, token = _token(h)
    body = {
        **request(token),
        "evaluations": [{"action": {"name": "journal-entries.write"}}, {}],
        "options": {"evaluations_semantic": "deny_on_first_deny"},
    }
    response = h.client.post("/access/v1/evaluations", json=body, headers=h.auth("pep"))
    assert len(response.json()["evaluations"]) == 1
    assert len(_all(h)) == 1


def test_a_search_call_is_recorded_under_the_evaluation_id_it_answers(h: Harness) -> None:
    _token(h)
    body = {
        "subject": {"type": "agent", "id": "agent-1"},
        "action": {"name": "invoices.read"},
        "resource": {"type": "api"},
    }
    response = h.client.post("/access/v1/search/resource", json=body, headers=h.auth("pep"))
    assert response.status_code == 200, response.text
    [record] = _all(h)
    assert record["evaluation_id"] == response.json()["context"]["evaluation_id"]
    assert (record["decision"], record["subject"]) == (True, body["subject"])
    assert record["request_digest"] == raw_digest(body)


def test_a_search_that_finds_nothing_is_recorded_as_false(h: Harness) -> None:
    body = {
        "subject": {"type": "agent", "id": "agent-1"},
        "resource": {"type": "api", "id": ERP},
    }
    response = h.client.post("/access/v1/search/action", json=body, headers=h.auth("pep"))
    assert response.json()["results"] == []
    [record] = _all(h)
    assert record["decision"] is False


def test_a_stale_answer_is_recorded_with_its_reason(h: Harness) -> None:
    _, token = _token(h)
    answer = h.evaluate(request(token), **{"Ledger-Min-Position": str(h.head() + 1000)})
    [record] = _all(h)
    assert record["evaluation_id"] == answer["context"]["evaluation_id"]
    assert (record["decision"], record["reason"]) == (False, "stale_state")


def test_a_request_refused_before_any_decision_is_not_recorded(h: Harness) -> None:
    response = h.client.post("/access/v1/evaluation", json={"subject": "x"}, headers=h.auth("pep"))
    assert response.status_code == 400
    assert _all(h) == []


# ---------------------------------------------------------------------- filters and paging


def test_filters_select_by_mission_mandate_agent_outcome_and_time(h: Harness) -> None:
    mission_a, token_a = _token(h)
    h.evaluate(request(token_a))
    h.clock.advance(seconds=10)
    mission_b, token_b = _token(h)
    h.evaluate(request(token_b, action="journal-entries.write"))
    h.evaluate(request(token_b, client_id="agent-2"))
    ids = [r["evaluation_id"] for r in _all(h)]
    assert [r["evaluation_id"] for r in _all(h, mission=mission_a)] == ids[:1]
    mandate_a = _mandate_id(h, mission_a)
    assert [r["evaluation_id"] for r in _all(h, mandate=mandate_a)] == ids[:1]
    assert [r["evaluation_id"] for r in _all(h, agent="agent-2")] == ids[2:]
    assert [r["evaluation_id"] for r in _all(h, decision="deny")] == ids[1:]
    assert [r["evaluation_id"] for r in _all(h, decision="permit")] == ids[:1]
    assert [r["evaluation_id"] for r in _all(h, **{"from": "2026-11-28T12:00:05Z"})] == ids[1:]
    assert [r["evaluation_id"] for r in _all(h, to="2026-11-28T12:00:05Z")] == ids[:1]
    assert _all(h, mission=mission_b, decision="permit") == []


def test_paging_neither_skips_nor_repeats(h: Harness) -> None:
    _, token = _token(h)
    for n in range(5):
        h.clock.advance(seconds=n % 2)
        h.evaluate(request(token))
    paged = _all(h, limit=2)
    assert len(paged) == 5
    assert paged == _all(h, limit=1000)
    assert _decisions(h, limit=5)["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"cursor": "bm90IGEgY3Vyc29y"}, "/cursor"),
        ({"from": "yesterday"}, "/from"),
        ({"from": "2026-11-28T12:00:00Z", "to": "2026-11-27T12:00:00Z"}, "/to"),
    ],
)
def test_malformed_parameters_are_400_naming_the_parameter(
    h: Harness, params: dict[str, str], pointer: str
) -> None:
    response = h.client.get("/v1/audit/decisions", params=params, headers=h.auth("auditor"))
    body = assert_problem(response, 400, "invalid_request")
    assert pointer in body["detail"]


@pytest.mark.parametrize("params", [{"decision": "maybe"}, {"limit": "0"}, {"agent": "a\x00b"}])
def test_out_of_range_parameters_are_400(h: Harness, params: dict[str, str]) -> None:
    response = h.client.get("/v1/audit/decisions", params=params, headers=h.auth("auditor"))
    assert response.status_code == 400


# ---------------------------------------------------------------------- who may read it


def test_reading_the_decision_log_needs_a_credential(h: Harness) -> None:
    response = h.client.get("/v1/audit/decisions")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("who", ["pep", "operator", "agent", "approver"])
def test_only_auditors_and_admins_read_the_decision_log(h: Harness, who: str) -> None:
    response = h.client.get("/v1/audit/decisions", headers=h.auth(who))
    assert_problem(response, 403, "forbidden")


def test_an_admin_reads_the_decision_log(h: Harness) -> None:
    assert _decisions(h, who="admin")["data"] == []


# ---------------------------------------------------------------------- async mode


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_decisions_answered_before_shutdown_are_written_at_shutdown(
    store_settings: Settings, clock: MutableClock, writer: str
) -> None:
    settings = _settings(
        store_settings,
        decision_log_mode="async",
        decision_log_flush_ms=10_000,
        decision_log_writer=writer,
    )
    answered = []
    for h in _started(settings, clock):
        _, token = _token(h)
        answered = [h.evaluate(request(token))["context"]["evaluation_id"] for _ in range(3)]
    ledger = open_ledger(settings, clock=clock)
    try:
        records, _ = DecisionLog(ledger.database).page(DecisionFilter(), cursor=None, limit=10)
    finally:
        ledger.close()
    assert [r.evaluation_id for r in records] == answered
