"""Access requests in the console (SPEC 7.1, 7.5): listed in the approver inbox with the
proposals, oldest first; a decision page with what was denied in plain language next to the
Mission's current authority and the agent's justification fenced as untrusted; approve (with
``approved_until`` and ``max_uses``) and deny through the API's own commands and rules. And a
metered Mission's page shows its ``usage`` as ``GET /v1/missions/{id}`` does."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

from tests.api.pdp.access_flow import Flow, request_body
from tests.api.pdp.conftest import Harness
from tests.api.pdp.test_metering_http import BUDGET, metered_token, pay, permitted, usage
from tests.api.test_console_http import CSRF, Person
from tests.builders import proposal_body

NONCE = re.compile(r'name="nonce" value="([^"]*)"')


def pending_task(flow: Flow, who: str = "pep", justification: str | None = None) -> str:
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    if justification is not None:
        body["context"]["business_justification"] = justification
    response = flow.submit(body, who)
    assert response.status_code == 202, response.text
    return str(response.json()["task"]["id"])


def decision_form(person: Person, task_id: str) -> dict[str, str]:
    page = person.get(f"/console/access-requests/{task_id}")
    assert page.status_code == 200, page.text
    csrf, nonce = CSRF.search(page.text), NONCE.search(page.text)
    assert csrf is not None
    assert nonce is not None
    return {"csrf": csrf.group(1), "nonce": nonce.group(1)}


def task_status(harness: Harness, task_id: str) -> dict[str, object]:
    response = harness.client.get(
        f"/v1/access-requests/{task_id}", headers=harness.auth("approver")
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_inbox_lists_access_requests_with_proposals_oldest_first(harness: Harness) -> None:
    flow = Flow.gated(harness)
    first = pending_task(flow)
    body = proposal_body(harness.clock.now())
    proposal = harness.client.post("/v1/proposals", json=body, headers=harness.auth("agent"))
    assert proposal.status_code == 202, proposal.text
    last = pending_task(flow)
    page = Person(harness, "approver").get("/console/inbox").text
    task_link = f"/console/access-requests/{first}"
    proposal_link = f"/console/proposals/{proposal.json()['submission_id']}"
    assert (
        page.index(task_link)
        < page.index(proposal_link)
        < page.index(f"/console/access-requests/{last}")
    )
    assert "Access request from agent-1" in page
    assert "tried to invoices.pay on https://erp.example.com/invoices/7" in page


def test_the_inbox_pages_through_proposals_and_access_requests_together(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness)
    tasks = [pending_task(flow) for _ in range(30)]
    approver = Person(harness, "approver")
    first = approver.get("/console/inbox").text
    # The gated Mission's own proposal was approved: the inbox holds only the 30 tasks.
    assert first.count('class="card"') == 25
    cursor = re.search(r'href="/console/inbox\?cursor=([^"]+)"', first)
    assert cursor is not None
    second = approver.get("/console/inbox", cursor=html.unescape(cursor.group(1))).text
    assert second.count('class="card"') == 5
    shown = re.findall(r'href="/console/access-requests/(tsk_[^"]+)"', first + second)
    assert list(dict.fromkeys(shown)) == tasks


def test_the_decision_page_shows_the_denial_the_authority_and_fenced_justification(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow, justification="<script>alert(1)</script> **approve now**")
    page = Person(harness, "approver").get(f"/console/access-requests/{task_id}")
    assert page.status_code == 200, page.text
    text = page.text
    assert "Agent agent-1, acting for alice under Mission" in text
    assert "tried to invoices.pay on https://erp.example.com/invoices/7" in text
    assert "The Mission&#39;s authority now" in text or "The Mission's authority now" in text
    assert f"/console/missions/{flow.mission_id}" in text
    assert "Untrusted — written by the agent" in text
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **approve now**" in text
    assert "data-countdown" in text


def test_approving_from_the_console_grants_the_chosen_window_and_uses(harness: Harness) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow)
    approver = Person(harness, "approver")
    form = decision_form(approver, task_id)
    until = (harness.clock.now() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    response = approver.post(
        f"/console/access-requests/{task_id}/approve",
        {**form, "approved_until": until, "max_uses": "3", "reason": "month end"},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith(
        f"/console/access-requests/{task_id}?done=approved"
    )
    view = task_status(harness, task_id)
    assert view["status"] == "approved"
    approval = view["approval"]
    assert isinstance(approval, dict)
    assert approval["max_uses"] == 3
    assert approval["approved_until"] == until + ":00Z"
    decision = view["decision"]
    assert isinstance(decision, dict)
    assert decision["reason"] == "month end"
    assert decision["by"]["name"] == "approver-1"


def test_submitting_the_same_approval_form_twice_writes_once(harness: Harness) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow)
    approver = Person(harness, "approver")
    form = decision_form(approver, task_id)
    first = approver.post(f"/console/access-requests/{task_id}/approve", form)
    assert first.status_code == 303, first.text
    head = harness.head()
    again = approver.post(f"/console/access-requests/{task_id}/approve", form)
    assert again.status_code == 303, again.text
    assert harness.head() == head


@pytest.mark.parametrize("uses", ["two", "-1", "\u00b2", "\u0661", "1" * 5_000])
def test_an_approval_form_whose_uses_are_not_a_whole_number_is_refused(
    harness: Harness, uses: str
) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow)
    approver = Person(harness, "approver")
    form = decision_form(approver, task_id)
    head = harness.head()
    refused = approver.post(
        f"/console/access-requests/{task_id}/approve", {**form, "max_uses": uses}
    )
    assert refused.status_code == 400, refused.text
    assert harness.head() == head


def test_denying_from_the_console_takes_a_reason(harness: Harness) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow)
    approver = Person(harness, "approver")
    form = decision_form(approver, task_id)
    head = harness.head()
    refused = approver.post(f"/console/access-requests/{task_id}/deny", form)
    assert refused.status_code == 400
    assert harness.head() == head
    denied = approver.post(f"/console/access-requests/{task_id}/deny", {**form, "reason": "no"})
    assert denied.status_code == 303, denied.text
    view = task_status(harness, task_id)
    assert view["status"] == "denied"
    assert view["decision"]["reason"] == "no"  # type: ignore[index]


def test_the_requesting_principal_is_refused_with_the_rule_named(harness: Harness) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow, who="admin")
    admin = Person(harness, "admin")
    form = decision_form(admin, task_id)
    head = harness.head()
    response = admin.post(f"/console/access-requests/{task_id}/approve", form)
    assert response.status_code == 403
    assert "approver_is_requester" in response.text
    assert harness.head() == head
    assert task_status(harness, task_id)["status"] == "pending"


def test_an_operator_reads_an_access_request_but_cannot_decide_it(harness: Harness) -> None:
    flow = Flow.gated(harness)
    task_id = pending_task(flow)
    operator = Person(harness, "operator")
    page = operator.get(f"/console/access-requests/{task_id}")
    assert page.status_code == 200
    assert "/approve" not in page.text
    csrf = CSRF.search(page.text)
    assert csrf is not None
    head = harness.head()
    response = operator.post(f"/console/access-requests/{task_id}/approve", {"csrf": csrf.group(1)})
    assert response.status_code == 403
    assert harness.head() == head


def test_an_unknown_access_request_is_the_same_404_as_any(harness: Harness) -> None:
    approver = Person(harness, "approver")
    assert approver.get("/console/access-requests/tsk_nothing").status_code == 404
    assert approver.get("/console/access-requests/nonsense").status_code == 404


def test_the_mission_page_shows_a_metered_missions_usage(harness: Harness) -> None:
    mission, token = metered_token(harness, {**BUDGET, "max_calls": 5})
    permitted(harness, pay(token, "60.00"))
    shown = usage(harness, mission)
    page = Person(harness, "operator").get(f"/console/missions/{mission}").text
    facts = page[page.index('id="usage-facts"') :]
    for label, value in (
        ("Spent", f"{shown['spent']} USD"),
        ("Reserved", f"{shown['reserved']} USD"),
        ("Remaining", f"{shown['remaining']} USD"),
        ("Calls", "1 of 5 (4 left)"),
    ):
        assert f"<dt>{label}</dt><dd>{value}</dd>" in facts


def test_an_unmetered_mission_page_has_no_usage(harness: Harness) -> None:
    flow = Flow.gated(harness)
    page = Person(harness, "operator").get(f"/console/missions/{flow.mission_id}").text
    assert 'id="usage-facts"' not in page
