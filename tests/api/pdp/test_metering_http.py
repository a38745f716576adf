"""Metering through HTTP (SPEC 7.3): a metered permit reserves, ``POST /v1/usage`` commits or
releases, an unreported reservation expires, a decision that would exceed a bound denies
``budget_exceeded``, and the Mission shows its ``usage``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from ledger.domain.instants import format_instant
from tests.api.conftest import assert_problem
from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_authzen_decisions import entry, request
from tests.api.pdp.test_key_binding import Holder
from tests.api.pdp.test_key_binding import _dpop as dpop_context
from tests.api.pdp.test_key_binding import _resigned as resigned

BUDGET = {"max_budget": {"amount": "100.00", "currency": "USD"}}


def metered_token(h: Harness, controls: dict[str, Any], **constraints: Any) -> tuple[str, str]:
    """(Mission id, Mandate token) of a Mission with ``controls``."""
    mission = h.mission(
        [entry(["invoices.pay", "invoices.read"], **constraints)], controls=controls
    )
    return mission, str(h.mandate(mission)["token"])


def pay(token: str, amount: str | None = None, currency: str = "USD", **extra: Any) -> Any:
    properties = {} if amount is None else {"amount": amount, "currency": currency}
    return request(token, action_properties=properties, **extra)


def report(h: Harness, body: dict[str, Any], who: str = "pep") -> Any:
    return h.client.post("/v1/usage", json=body, headers=h.auth(who))


def usage(h: Harness, mission: str) -> dict[str, Any]:
    response = h.client.get(f"/v1/missions/{mission}", headers=h.auth("operator"))
    assert response.status_code == 200, response.text
    return dict(response.json()["usage"])


def permitted(h: Harness, body: dict[str, Any]) -> str:
    answer = h.evaluate(body)
    assert answer["decision"] is True, answer
    return str(answer["context"]["evaluation_id"])


# ---------------------------------------------------------------------- decisions


def test_max_budget_permits_within_and_denies_beyond(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    assert harness.evaluate(pay(token, "60.00"))["decision"] is True
    refused = harness.evaluate(pay(token, "40.01"))
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "budget_exceeded"
    assert refused["context"]["constraint"] == "max_budget"


def test_max_calls_permits_within_and_denies_beyond(harness: Harness) -> None:
    _, token = metered_token(harness, {"max_calls": 2}, call_class="payments")
    assert harness.evaluate(pay(token))["decision"] is True
    assert harness.evaluate(pay(token))["decision"] is True
    refused = harness.evaluate(pay(token))
    assert refused["decision"] is False
    assert (refused["context"]["reason"], refused["context"]["constraint"]) == (
        "budget_exceeded",
        "max_calls",
    )


def test_a_call_class_limit_denies_only_calls_of_its_class(harness: Harness) -> None:
    controls = {"max_calls": [{"call_class": "write", "max": 1}]}
    mission = harness.mission(
        [
            entry(["invoices.pay"], call_class="write"),
            entry(["invoices.read"], call_class="read"),
        ],
        controls=controls,
    )
    token = str(harness.mandate(mission)["token"])
    assert harness.evaluate(request(token))["decision"] is True
    assert harness.evaluate(request(token))["context"]["reason"] == "budget_exceeded"
    assert harness.evaluate(request(token, action="invoices.read"))["decision"] is True
    assert usage(harness, mission)["call_classes"] == [
        {"call_class": "write", "max": 1, "calls": 1, "remaining": 0}
    ]


def test_a_metered_permit_carries_its_reservation_expiry(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    context = harness.evaluate(pay(token, "10"))["context"]
    assert context["reservation_expires_at"] == "2026-11-28T12:05:00Z"  # T0 + 300 s
    assert context["valid_until"] <= context["reservation_expires_at"]


def _meters(h: Harness) -> Any:
    return h.client.app.state.services.meters  # type: ignore[attr-defined]


def test_a_permit_its_budget_lease_covers_is_drawn_in_memory(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    meters = _meters(harness)
    # Reserved durably: its group takes a lease (an eighth of the budget, decision 0019).
    permitted(harness, pay(token, "1"))
    durable, drawn = meters.reserved_durably, meters.drawn
    context = harness.evaluate(pay(token, "1"))["context"]
    assert (meters.reserved_durably, meters.drawn) == (durable, drawn + 1)
    assert context["reservation_expires_at"] == "2026-11-28T12:05:00Z"  # as a durable one's


def test_a_metered_permit_with_a_dpop_proof_is_drawn_once_its_signature_verifies(
    harness: Harness,
) -> None:
    holder = Holder()
    mission = harness.mission([entry(["invoices.pay"])], controls=BUDGET)
    token = harness.mandate(mission, key=holder.jkt)["token"]
    meters = _meters(harness)
    iat = harness.clock.now().timestamp()

    def with_proof(proof: str) -> dict[str, Any]:
        body = pay(token, "1")
        body["context"]["proof"] = dpop_context(proof)
        return body

    permitted(harness, with_proof(holder.dpop(iat=iat)))  # the lease is taken
    drawn = meters.drawn
    permitted(harness, with_proof(holder.dpop(iat=iat)))
    assert meters.drawn == drawn + 1
    forged = resigned(holder.dpop(iat=iat), Holder().dpop(iat=iat))
    assert harness.evaluate(with_proof(forged))["context"]["reason"] == "key_mismatch"
    assert meters.drawn == drawn + 1  # nothing reserved for a proof that does not verify


def test_an_unmetered_permit_reserves_nothing(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    context = harness.evaluate(request(token))["context"]  # no amount, no call class
    assert "reservation_expires_at" not in context
    assert usage(harness, mission)["reserved"] == "0.00"


def test_a_metered_amount_in_another_currency_is_a_parameter_violation(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    refused = harness.evaluate(pay(token, "5.00", currency="EUR"))
    assert (refused["context"]["reason"], refused["context"]["constraint"]) == (
        "parameter_violation",
        "max_budget",
    )
    assert usage(harness, mission)["reserved"] == "0.00"


@pytest.mark.parametrize("amount", ["1" * 5_000, "1." + "0" * 19, "5\n"])
def test_a_malformed_metered_amount_is_a_parameter_violation(harness: Harness, amount: str) -> None:
    mission, token = metered_token(harness, BUDGET)
    refused = harness.evaluate(pay(token, amount))
    assert (refused["context"]["reason"], refused["context"]["constraint"]) == (
        "parameter_violation",
        "max_budget",
    )
    assert usage(harness, mission)["reserved"] == "0.00"


def test_a_metered_amount_without_a_currency_is_a_parameter_violation(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    refused = harness.evaluate(request(token, action_properties={"amount": "5"}))
    assert refused["context"]["reason"] == "parameter_violation"


def test_a_batch_reserves_each_metered_permit(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    body = {"evaluations": [pay(token, "30"), pay(token, "30"), pay(token, "50")]}
    answer = harness.client.post("/access/v1/evaluations", json=body, headers=harness.auth("pep"))
    decisions = [e["decision"] for e in answer.json()["evaluations"]]
    assert decisions == [True, True, False]
    assert usage(harness, mission)["reserved"] == "60.00"


# ---------------------------------------------------------------------- usage reports


def test_an_executed_report_commits_the_reserved_amount(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "25.50"))
    answer = report(harness, {"evaluation_id": evaluation_id, "outcome": "executed"})
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"mission": None} == {
        "evaluation_id": evaluation_id,
        "mission": None,
        "outcome": "executed",
        "amount": "25.50",
        "replayed": False,
    }
    assert usage(harness, mission) == {
        "currency": "USD",
        "budget": "100.00",
        "spent": "25.50",
        "reserved": "0.00",
        "remaining": "74.50",
        "calls": 1,
    }


def test_an_executed_report_may_commit_less_than_reserved(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "90"))
    report(harness, {"evaluation_id": evaluation_id, "outcome": "executed", "amount": "12.25"})
    assert usage(harness, mission)["remaining"] == "87.75"
    assert harness.evaluate(pay(token, "87.75"))["decision"] is True


def test_an_aborted_report_releases_the_reservation(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "100"))
    answer = report(harness, {"evaluation_id": evaluation_id, "outcome": "aborted"})
    assert answer.json()["outcome"] == "aborted"
    assert usage(harness, mission) | {"calls": None} == {
        "currency": "USD",
        "budget": "100.00",
        "spent": "0.00",
        "reserved": "0.00",
        "remaining": "100.00",
        "calls": None,
    }


def test_a_second_report_answers_the_first_outcome_and_writes_nothing(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    report(harness, {"evaluation_id": evaluation_id, "outcome": "executed", "amount": "4"})
    head = harness.head()
    again = report(harness, {"evaluation_id": evaluation_id, "outcome": "aborted"})
    assert again.status_code == 200
    assert (again.json()["outcome"], again.json()["amount"]) == ("executed", "4")
    assert again.json()["replayed"] is True
    assert harness.head() == head
    assert usage(harness, mission)["spent"] == "4.00"


def test_a_report_above_the_reserved_amount_is_refused(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    reserved = usage(harness, mission)["reserved"]  # with this replica's lease
    head = harness.head()
    body = {"evaluation_id": evaluation_id, "outcome": "executed", "amount": "10.01"}
    problem = assert_problem(report(harness, body), 400, "invalid_request")
    assert "/amount" in problem["detail"]
    assert harness.head() == head
    assert usage(harness, mission)["reserved"] == reserved


@pytest.mark.parametrize(
    "amount", ["-1", "1e3", "1,00", "0.1234567890123456789", "1\n", "1.5\n", " 1"]
)
def test_a_malformed_amount_is_refused(harness: Harness, amount: str) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    head = harness.head()
    body = {"evaluation_id": evaluation_id, "outcome": "executed", "amount": amount}
    assert_problem(report(harness, body), 400, "invalid_request")
    assert harness.head() == head


def test_an_aborted_report_with_an_amount_is_refused(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    body = {"evaluation_id": evaluation_id, "outcome": "aborted", "amount": "1"}
    assert_problem(report(harness, body), 400, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {"outcome": "executed"},
        {"evaluation_id": "x", "outcome": "done"},
        {"evaluation_id": "x", "outcome": "executed", "amount": 5},
        {"evaluation_id": "x", "outcome": "executed", "extra": 1},
    ],
    ids=["no-evaluation-id", "unknown-outcome", "numeric-amount", "unknown-member"],
)
def test_a_malformed_report_is_refused(harness: Harness, body: dict[str, Any]) -> None:
    assert_problem(report(harness, body), 400, "invalid_request")


@pytest.mark.parametrize(
    ("content", "content_type", "says"),
    [
        (b"", "application/json", "/: is required"),
        (b"null", "application/json", "/: is required"),
        (b'{"evaluation_id": ', "application/json", "not valid JSON"),
        (b'{"evaluation_id": "x", "outcome": "executed"}', "text/plain", "/: Input should be"),
        (b'{"evaluation_id": "x", "outcome": "executed"}', None, "/: Input should be"),
        (b'{"reports": []}', "application/json", "/reports: "),
    ],
    ids=["empty", "json-null", "not-json", "not-a-json-media-type", "no-media-type", "no-reports"],
)
def test_a_report_body_that_is_no_report_is_refused_and_writes_nothing(
    harness: Harness, content: bytes, content_type: str | None, says: str
) -> None:
    """The route reads its body by hand (a plain route, for speed) as FastAPI reads a
    declared body (a body without a media type is not JSON): 400, naming what is wrong."""
    head = harness.head()
    media = {} if content_type is None else {"Content-Type": content_type}
    response = harness.client.post(
        "/v1/usage", content=content, headers=harness.auth("pep") | media
    )
    assert says in assert_problem(response, 400, "invalid_request")["detail"]
    assert harness.head() == head


def test_a_batch_answer_names_the_pointer_of_the_report_at_fault(harness: Harness) -> None:
    body = {"reports": [{"evaluation_id": "x", "outcome": "executed"}, {"outcome": "aborted"}]}
    problem = assert_problem(report(harness, body), 400, "invalid_request")
    assert "/reports/1/evaluation_id" in [e["pointer"] for e in problem["errors"]]


def test_an_unknown_evaluation_is_not_found(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    unknown = evaluation_id.replace("ev_", "ev_0", 1)
    for name in (unknown, "ev_1.msn_nope", "not-an-evaluation"):
        body = {"evaluation_id": name, "outcome": "executed"}
        assert_problem(report(harness, body), 404, "not_found")


def test_an_unmetered_permit_has_no_reservation_to_report(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, request(token))
    body = {"evaluation_id": evaluation_id, "outcome": "executed"}
    assert_problem(report(harness, body), 404, "not_found")


def test_a_denied_decision_has_no_reservation_to_report(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    refused = harness.evaluate(pay(token, "100.01"))
    body = {"evaluation_id": refused["context"]["evaluation_id"], "outcome": "executed"}
    assert_problem(report(harness, body), 404, "not_found")


@pytest.mark.parametrize("who", ["agent", "operator", "auditor", "approver"])
def test_only_a_pep_reports_usage(harness: Harness, who: str) -> None:
    assert_problem(report(harness, {"evaluation_id": "x", "outcome": "x"}, who), 403, "forbidden")


def test_a_report_needs_a_credential(harness: Harness) -> None:
    answer = harness.client.post("/v1/usage", json={"evaluation_id": "x", "outcome": "executed"})
    assert_problem(answer, 401, "unauthorized")


# ---------------------------------------------------------------------- expiry


def _expire_due(h: Harness) -> int:
    """One scheduler tick (the app's own ticks every second as well: its clock stands still)."""
    return int(h.client.app.state.scheduler.tick())  # type: ignore[attr-defined]


def test_an_unreported_reservation_is_released_at_its_expiry(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    permitted(harness, pay(token, "100"))
    assert harness.evaluate(pay(token, "1"))["decision"] is False
    harness.clock.advance(seconds=299)
    assert _expire_due(harness) == 0
    harness.clock.advance(seconds=1)
    assert _expire_due(harness) == 1
    assert _expire_due(harness) == 0
    assert usage(harness, mission)["reserved"] == "0.00"
    assert harness.evaluate(pay(token, "100"))["decision"] is True


def test_a_report_after_expiry_is_refused_and_counts_nothing(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    harness.clock.advance(seconds=300)
    body = {"evaluation_id": evaluation_id, "outcome": "executed"}
    assert_problem(report(harness, body), 409, "reservation_expired")
    _expire_due(harness)
    assert_problem(report(harness, body), 409, "reservation_expired")
    assert usage(harness, mission)["spent"] == "0.00"


# ---------------------------------------------------------------------- the Mission


def test_a_mission_with_max_calls_shows_calls_only(harness: Harness) -> None:
    mission, token = metered_token(harness, {"max_calls": 5}, call_class="payments")
    permitted(harness, pay(token))
    assert usage(harness, mission) == {"calls": 1, "max_calls": 5, "calls_remaining": 4}


def test_a_mission_without_metered_controls_has_no_usage(harness: Harness) -> None:
    mission = harness.mission([entry()])
    response = harness.client.get(f"/v1/missions/{mission}", headers=harness.auth("operator"))
    assert "usage" not in response.json()


def test_an_auditor_sums_the_committed_usage_events_to_the_spent_amount(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    for amount, outcome in (("10.10", "executed"), ("20", "aborted"), ("30.05", "executed")):
        evaluation_id = permitted(harness, pay(token, amount))
        report(harness, {"evaluation_id": evaluation_id, "outcome": outcome})
    response = harness.client.get(
        f"/v1/missions/{mission}/usage/events", headers=harness.auth("auditor")
    )
    assert response.status_code == 200, response.text
    # Reservations are Reserved events, or members of a LeaseDrawn event when this replica
    # answered them from its budget lease (decision 0019); reports are members of
    # UsageReported events; leases come and go between them.
    events = response.json()["data"]
    kinds = [
        kind
        for e in events
        for kind in (
            ["Reserved"] * len(e["data"]["reservations"])
            if e["type"] == "LeaseDrawn"
            else [r["outcome"] for r in e["data"]["reports"]]
            if e["type"] == "UsageReported"
            else [e["type"]]
        )
        if not kind.startswith("Lease")
    ]
    assert kinds == [
        "Opened",
        "Reserved",
        "executed",
        "Reserved",
        "aborted",
        "Reserved",
        "executed",
    ]
    committed = [
        Decimal(r["amount"])
        for e in events
        if e["type"] == "UsageReported"
        for r in e["data"]["reports"]
        if r["outcome"] == "executed"
    ]
    assert sum(committed) == Decimal(usage(harness, mission)["spent"]) == Decimal("40.15")


def test_usage_events_are_not_for_peps(harness: Harness) -> None:
    mission, _ = metered_token(harness, BUDGET)
    response = harness.client.get(
        f"/v1/missions/{mission}/usage/events", headers=harness.auth("pep")
    )
    assert_problem(response, 403, "forbidden")


# ---------------------------------------------------------------------- the store failing


def _store_fails(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object, **__: object) -> None:
        raise OperationalError("the store is gone")

    services = h.client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services.ledger, "save", fail)


def test_a_metered_permit_whose_reservation_cannot_be_recorded_fails_closed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = metered_token(harness, BUDGET)
    _store_fails(harness, monkeypatch)
    refused = harness.evaluate(pay(token, "1.00"))
    assert refused["decision"] is False
    assert (refused["context"]["reason"], refused["context"]["next_action"]) == (
        "stale_state",
        "retry",
    )


def test_a_usage_report_the_store_cannot_record_is_unavailable(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "1.00"))
    _store_fails(harness, monkeypatch)
    body = {"evaluation_id": evaluation_id, "outcome": "executed"}
    assert_problem(report(harness, body), 503, "unavailable")


def test_the_mission_as_of_an_instant_shows_its_usage_then(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    for amount in ("10", "20"):
        evaluation_id = permitted(harness, pay(token, amount))
        report(harness, {"evaluation_id": evaluation_id, "outcome": "executed"})
        if amount == "10":
            then = format_instant(harness.clock.now())
            harness.clock.advance(seconds=10)
    past = harness.client.get(
        f"/v1/missions/{mission}", params={"as_of": then}, headers=harness.auth("operator")
    )
    assert past.status_code == 200, past.text
    assert (past.json()["usage"]["spent"], past.json()["usage"]["calls"]) == ("10.00", 1)
    assert usage(harness, mission)["spent"] == "30.00"


# ---------------------------------------------------------------------- batched reports


def test_many_reports_in_one_request_are_each_answered_in_order(harness: Harness) -> None:
    mission, token = metered_token(harness, BUDGET)
    first = permitted(harness, pay(token, "10"))
    second = permitted(harness, pay(token, "20"))
    unknown = first.replace("ev_", "ev_0", 1)
    body = {
        "reports": [
            {"evaluation_id": first, "outcome": "executed", "amount": "7.50"},
            {"evaluation_id": second, "outcome": "aborted"},
            {"evaluation_id": unknown, "outcome": "executed"},
            {"evaluation_id": first, "outcome": "aborted"},
        ]
    }
    response = report(harness, body)
    assert response.status_code == 200, response.text
    answers = response.json()["reports"]
    assert [(a["status"], a.get("outcome"), a.get("replayed")) for a in answers] == [
        (200, "executed", False),
        (200, "aborted", False),
        (404, None, None),
        (200, "executed", True),
    ]
    assert answers[2]["evaluation_id"] == unknown
    assert answers[2]["code"] == "not_found"
    assert usage(harness, mission)["spent"] == "7.50"


def test_a_malformed_report_in_a_batch_refuses_the_whole_batch(harness: Harness) -> None:
    _, token = metered_token(harness, BUDGET)
    evaluation_id = permitted(harness, pay(token, "10"))
    head = harness.head()
    body = {
        "reports": [
            {"evaluation_id": evaluation_id, "outcome": "executed"},
            {"evaluation_id": evaluation_id, "outcome": "spent"},
        ]
    }
    assert_problem(report(harness, body), 400, "invalid_request")
    assert harness.head() == head
