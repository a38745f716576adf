"""The access-request loop over HTTP (SPEC 7.1; standards.md 2 and checks 18-22): requestable
denials, submitting, task status and cancel, approving, denying, re-evaluation."""

from __future__ import annotations

import json
from typing import Any

from joserfc import jws
from joserfc.jwk import KeySet

from ledger.settings import Settings
from tests.api.pdp.access_flow import (
    ERP,
    Flow,
    assert_arap_problem,
    claims_of,
    entry,
    issuer,
    request_body,
)
from tests.api.pdp.conftest import Harness, _started, server_settings
from tests.conftest import MutableClock

# ---------------------------------------------------------------------- requestable denials


def test_an_approval_gate_denial_is_requestable_with_a_signed_binding_token(
    harness: Harness,
) -> None:
    _, decision = Flow.gated(harness).evaluate()
    context = decision["context"]
    assert decision["decision"] is False
    assert context["reason"] == "approval_required"
    access = context["access_request"]
    assert access["template"] == "mission_gate"
    assert access["endpoint"] == issuer(harness) + "/access/v1/requests"
    assert access["expires_at"].endswith("Z")
    claims = claims_of(access["binding_token"])
    assert claims["aud"] == access["endpoint"]
    assert {"iss", "iat", "exp", "jti", "binding_hash", "denial_expires_at"} <= set(claims)
    assert claims["evaluation_id"] == context["evaluation_id"]
    assert claims["binding_context_members"] == ["mandate", "proof"]
    assert claims["mission"]["status"] == "active"


def test_the_binding_token_verifies_against_the_published_jwks(harness: Harness) -> None:
    _, decision = Flow.gated(harness).evaluate()
    jwks = harness.client.get("/.well-known/jwks.json").json()
    verified = jws.deserialize_compact(
        decision["context"]["access_request"]["binding_token"],
        KeySet.import_key_set(jwks),
        algorithms=["ES256", "EdDSA"],
    )
    assert verified.headers()["typ"] == "access-binding+jwt"


def test_an_action_outside_the_mission_is_requestable_as_mission_broadening(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness, max_amount={"amount": "500.00", "currency": "USD"})
    _, decision = flow.evaluate(action="invoices.void")
    assert decision["context"]["reason"] == "out_of_authority"
    assert decision["context"]["access_request"]["template"] == "mission_broadening"


def test_a_non_requestable_denial_has_no_access_request(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, decision = flow.evaluate(client_id="agent-2")
    assert decision["context"]["reason"] == "actor_invalid"
    assert "access_request" not in decision["context"]


def test_an_approval_gate_is_reported_only_when_every_other_constraint_holds(
    harness: Harness,
) -> None:
    flow = Flow.gated(
        harness,
        requires_action_approval=True,
        max_amount={"amount": "50.00", "currency": "USD"},
    )
    _, decision = flow.evaluate(amount="100")
    assert decision["context"]["reason"] == "parameter_violation"
    assert "access_request" not in decision["context"]


def test_pdp_metadata_advertises_the_access_request_endpoint_and_capabilities(
    harness: Harness,
) -> None:
    metadata = harness.client.get("/.well-known/authzen-configuration").json()
    assert metadata["access_request_endpoint"] == issuer(harness) + "/access/v1/requests"
    assert "urn:openid:authzen:capability:access-request" in metadata["capabilities"]
    assert (
        "urn:openid:authzen:capability:access-request:agentic-mission-governance"
        in metadata["capabilities"]
    )


# ---------------------------------------------------------------------- submitting


def test_a_requestable_denial_becomes_a_pending_task(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    response = flow.submit(request_body(denied, decision))
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    assert task["id"].startswith("tsk_")
    assert task["status"] == "pending"
    assert task["status_endpoint"] == f"{issuer(harness)}/access/v1/requests/{task['id']}"
    assert task["links"]["cancel"] == task["status_endpoint"] + "/cancel"
    assert response.headers["Location"] == task["status_endpoint"]
    assert "Ledger-Position" in response.headers


def test_under_an_https_issuer_the_status_endpoint_is_https(
    store_settings: Settings, clock: MutableClock
) -> None:
    """standards.md check 21: an https ``task.status_endpoint`` (the issuer's scheme)."""
    settings = server_settings(store_settings, issuer="https://ledger.example.com")
    for harness in _started(settings, clock):
        _, task = Flow.gated(harness).requested()
        endpoint = task["task"]["status_endpoint"]
        assert endpoint == f"https://ledger.example.com/access/v1/requests/{task['task']['id']}"


def test_a_replayed_binding_token_returns_the_existing_task_with_200(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    first = flow.submit(request_body(denied, decision))
    before = harness.head()
    again = flow.submit(request_body(denied, decision))
    assert again.status_code == 200, again.text
    assert again.json()["task"]["id"] == first.json()["task"]["id"]
    assert harness.head() == before


def test_the_same_idempotency_key_and_body_returns_the_same_task(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    first = flow.submit(body, **{"Idempotency-Key": "k-1"})
    again = flow.submit(body, **{"Idempotency-Key": "k-1"})
    assert (again.status_code, again.json()["task"]["id"]) == (202, first.json()["task"]["id"])


def test_the_same_idempotency_key_with_another_body_is_duplicate_request(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    flow.submit(request_body(denied, decision), **{"Idempotency-Key": "k-2"})
    other_denied, other = flow.evaluate()
    before = harness.head()
    response = flow.submit(request_body(other_denied, other), **{"Idempotency-Key": "k-2"})
    assert_arap_problem(response, 409, "duplicate_request")
    assert harness.head() == before


def test_a_request_after_the_denial_expired_is_expired_denial(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    harness.clock.advance(seconds=601)
    before = harness.head()
    assert_arap_problem(flow.submit(request_body(denied, decision)), 410, "expired_denial")
    assert harness.head() == before


def test_a_tampered_binding_token_is_invalid_denial_binding(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    token = body["denial"]["binding_token"]
    body["denial"]["binding_token"] = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert harness.head() == before


def test_a_mismatched_resource_is_invalid_denial_binding(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    body["resource"] = {"type": "api", "id": ERP + "/invoices/8"}
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert harness.head() == before


def test_an_action_jcs_cannot_canonicalise_is_invalid_denial_binding(harness: Harness) -> None:
    """An integer beyond the I-JSON range has no RFC 8785 form, so the request cannot hash
    to the denied one's (found by the property test: it was a 500)."""
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    body["action"]["properties"]["amount"] = -(2**70)
    before = harness.head()
    problem = assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert "RFC 8785" in problem["detail"]
    assert harness.head() == before


def test_a_mismatched_subject_is_invalid_denial_binding(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    body["subject"] = {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-2"}}
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert harness.head() == before


def test_a_signed_token_of_another_kind_is_invalid_denial_binding(harness: Harness) -> None:
    """Our signature is not enough: a Mandate (typ execution-mandate+jwt) presented as the
    binding token is refused, and nothing is written."""
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    body = request_body(denied, decision)
    body["denial"]["binding_token"] = flow.token
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert harness.head() == before


def test_a_binding_token_for_another_audience_is_invalid_denial_binding(
    harness: Harness,
) -> None:
    services: Any = harness.client.app.state.services  # type: ignore[attr-defined]
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    claims = claims_of(decision["context"]["access_request"]["binding_token"])
    claims["aud"] = "https://other.example.com/access/v1/requests"
    forged = services.keyring.sign_compact(
        {"typ": "access-binding+jwt"},
        json.dumps(claims).encode(),
        alg="ES256",
        now=harness.clock.now(),
    )
    body = request_body(denied, decision)
    body["denial"]["binding_token"] = forged
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "invalid_denial_binding")
    assert harness.head() == before


def test_a_denial_without_access_request_is_not_requestable(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate(client_id="agent-2")
    body = {
        "subject": denied["subject"],
        "resource": denied["resource"],
        "action": denied["action"],
        "denial": {
            "evaluation_id": decision["context"]["evaluation_id"],
            "expires_at": "2099-01-01T00:00:00Z",
            "reason": decision["context"]["reason"],
        },
    }
    before = harness.head()
    assert_arap_problem(flow.submit(body), 400, "not_requestable")
    assert harness.head() == before


def test_a_request_under_a_mission_no_longer_active_is_not_requestable(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    revoked = harness.client.post(
        f"/v1/missions/{flow.mission_id}/lifecycle",
        json={"operation": "revoke", "reason": "test"},
        headers=harness.auth("operator"),
    )
    assert revoked.status_code == 200, revoked.text
    assert_arap_problem(flow.submit(request_body(denied, decision)), 400, "not_requestable")


def test_an_agent_requests_access_only_for_itself(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    assert flow.submit(request_body(denied, decision), "agent2").status_code == 403
    assert flow.submit(request_body(denied, decision), "agent").status_code == 202


def test_an_approver_may_not_submit_access_requests(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, decision = flow.evaluate()
    assert flow.submit(request_body(denied, decision), "approver").status_code == 403


def test_submissions_over_the_per_minute_limit_are_429_with_retry_after(
    harness: Harness,
) -> None:
    services: Any = harness.client.app.state.services  # type: ignore[attr-defined]
    services.settings = services.settings.model_copy(update={"access_requests_per_minute": 2})
    flow = Flow.gated(harness)
    flow.requested()
    harness.clock.advance(seconds=10)
    flow.requested()
    denied, decision = flow.evaluate()
    before = harness.head()
    response = flow.submit(request_body(denied, decision))
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "50"
    assert harness.head() == before
    harness.clock.advance(seconds=51)
    denied, decision = flow.evaluate()
    assert flow.submit(request_body(denied, decision)).status_code == 202


# ---------------------------------------------------------------------- status and cancel


def test_an_unknown_task_is_unknown_task(harness: Harness) -> None:
    response = harness.client.get("/access/v1/requests/tsk_nope", headers=harness.auth("pep"))
    assert_arap_problem(response, 404, "unknown_task")


def test_another_agent_sees_the_same_404_as_for_an_unknown_task(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    response = harness.client.get(
        f"/access/v1/requests/{task['task']['id']}", headers=harness.auth("agent2")
    )
    assert_arap_problem(response, 404, "unknown_task")


def test_the_missions_agent_may_poll_a_task_its_pep_submitted(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    assert flow.status(task["task"]["id"], "agent")["task"]["status"] == "pending"


def test_cancel_then_cancel_again_is_invalid_task_state(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    url = f"/access/v1/requests/{task['task']['id']}/cancel"
    first = harness.client.post(url, json={"reason": "not needed"}, headers=harness.auth("pep"))
    assert first.status_code == 200, first.text
    assert first.json()["task"]["status"] == "cancelled"
    before = harness.head()
    again = harness.client.post(url, headers=harness.auth("pep"))
    assert_arap_problem(again, 409, "invalid_task_state")
    assert harness.head() == before


def test_only_the_requester_cancels(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested("pep")
    url = f"/access/v1/requests/{task['task']['id']}/cancel"
    assert harness.client.post(url, headers=harness.auth("agent")).status_code == 403


def test_a_pending_task_expires_once_its_lifetime_is_over(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    harness.clock.advance(hours=24, seconds=1)
    services: Any = harness.client.app.state.services  # type: ignore[attr-defined]
    harness.client.app.state.scheduler.tick()  # type: ignore[attr-defined]
    history = services.ledger.history(task["task"]["id"])
    assert [type(e.event).__name__ for e in history] == ["Submitted", "Expired"]
    assert flow.status(task["task"]["id"])["task"]["status"] == "expired"
    assert_arap_problem(flow.approve(task["task"]["id"]), 410, "task_expired")


# ---------------------------------------------------------------------- approvers


def test_the_approver_inbox_lists_pending_requests_with_the_plain_language_view(
    harness: Harness,
) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    response = harness.client.get(
        "/v1/access-requests",
        params={"status": "pending", "mission": flow.mission_id},
        headers=harness.auth("approver"),
    )
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert item["id"] == task["task"]["id"]
    assert "tried to invoices.pay on https://erp.example.com/invoices/7" in item["rendered_request"]
    assert item["mission"]["rendered_authority"][0].startswith("May invoices.pay")
    assert item["agent_justification"]["trust"] == "untrusted"
    assert item["agent_justification"]["text"] == "month-end close"
    assert item["evaluation"]["reason"] == "approval_required"


def test_the_inbox_pages_with_a_cursor(harness: Harness) -> None:
    flow = Flow.gated(harness)
    ids = [flow.requested()[1]["task"]["id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = harness.client.get(
            "/v1/access-requests", params=params, headers=harness.auth("auditor")
        ).json()
        seen += [item["id"] for item in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


def test_a_pep_does_not_read_the_approver_inbox(harness: Harness) -> None:
    response = harness.client.get("/v1/access-requests", headers=harness.auth("pep"))
    assert response.status_code == 403


def test_approval_puts_a_reevaluate_result_on_the_task(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    approved = flow.approve(task["task"]["id"], reason="ok", max_uses=2)
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["max_uses"] == 2
    status = flow.status(task["task"]["id"])
    assert status["task"]["status"] == "approved"
    assert status["result"]["mode"] == "reevaluate"
    approval = status["result"]["approval"]
    assert approval["id"].startswith("apv_")
    state = claims_of(approval["state"])
    assert state["aud"] == issuer(harness)
    assert state["max_uses"] == 2
    assert state["mission"]["ref"] == flow.mission_id


def test_approval_defaults_to_one_hour_and_a_single_use(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, approval = flow.approval()
    state = claims_of(approval["state"])
    assert state["max_uses"] == 1
    assert state["exp"] - state["iat"] == 3600


def test_approved_until_past_the_missions_expiry_is_refused(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    response = flow.approve(task["task"]["id"], approved_until="2099-01-01T00:00:00Z")
    assert response.status_code == 400
    assert response.json()["errors"][0]["pointer"] == "/approved_until"


def test_deny_ends_the_task_without_a_result(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, task = flow.requested()
    denied = harness.client.post(
        f"/v1/access-requests/{task['task']['id']}/deny",
        json={"reason": "not this month"},
        headers=harness.auth("approver"),
    )
    assert denied.status_code == 200, denied.text
    assert denied.json()["decision"]["reason"] == "not this month"
    status = flow.status(task["task"]["id"])
    assert status["task"]["status"] == "denied"
    assert "result" not in status
    assert_arap_problem(flow.approve(task["task"]["id"]), 409, "invalid_task_state")


def test_an_approver_that_is_the_mission_subject_may_not_approve_write_access(
    harness: Harness,
) -> None:
    """SPEC 7.3 (the rule proposals' approval enforces, reused): the subject never approves
    write authority for itself. Here the Mission's subject is the approver key's identity."""
    subject = {"iss": issuer(harness), "sub": "approver-1"}
    body = {
        "intent": {
            "goal": "self approval",
            "resources": [ERP],
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "authorization_details": [entry(requires_action_approval=True)],
        "subject": subject,
        "client_id": "agent-1",
    }
    proposal = harness.client.post("/v1/proposals", json=body, headers=harness.auth("agent"))
    mission = harness.client.post(
        f"/v1/proposals/{proposal.json()['submission_id']}/approve",
        json={},
        headers=harness.auth("admin"),
    )
    assert mission.status_code == 201, mission.text
    flow = Flow.of(harness, mission.json()["id"])
    _, task = flow.requested()
    before = harness.head()
    response = flow.approve(task["task"]["id"])
    assert response.status_code == 403, response.text
    assert response.json()["rule"] == "approver_is_subject"
    assert harness.head() == before


def test_the_requesting_principal_may_not_approve(harness: Harness) -> None:
    """An admin that requested the access is still refused as its approver."""
    flow = Flow.gated(harness)
    _, task = flow.requested("admin")
    before = harness.head()
    response = flow.approve(task["task"]["id"], who="admin")
    assert response.status_code == 403, response.text
    assert response.json()["rule"] == "approver_is_requester"
    assert harness.head() == before


# ---------------------------------------------------------------------- re-evaluation


def test_reevaluation_with_the_approval_permits_once(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval()
    permitted = flow.reevaluate(denied, approval)
    assert permitted["decision"] is True, permitted
    assert permitted["context"]["approval"]["id"] == approval["id"]
    second = flow.reevaluate(denied, approval)
    assert second["decision"] is False
    assert second["context"]["reason"] == "approval_expired"
    assert second["context"]["next_action"] == "request"
    assert "access_request" in second["context"]


def test_each_use_of_an_approval_is_an_event(harness: Harness) -> None:
    services: Any = harness.client.app.state.services  # type: ignore[attr-defined]
    flow = Flow.gated(harness)
    denied, approval = flow.approval(max_uses=3)
    for _ in range(4):
        flow.reevaluate(denied, approval)
    task_id = claims_of(approval["state"])["task_id"]
    names = [type(e.event).__name__ for e in services.ledger.history(task_id)]
    assert names == ["Submitted", "Approved", "ApprovalUsed", "ApprovalUsed", "ApprovalUsed"]


def test_decisions_under_an_approval_are_counted_once_as_what_was_answered(
    harness: Harness,
) -> None:
    pdp: Any = harness.client.app.state.services.pdp  # type: ignore[attr-defined]
    flow = Flow.gated(harness)
    denied, approval = flow.approval(max_uses=1)
    permits, denials = pdp.permits, pdp.denials["approval_expired"]
    assert flow.reevaluate(denied, approval)["decision"] is True
    assert flow.reevaluate(denied, approval)["context"]["reason"] == "approval_expired"
    assert (pdp.permits, pdp.denials["approval_expired"]) == (permits + 1, denials + 1)


def test_after_approved_until_reevaluation_is_approval_expired(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval(max_uses=5)
    harness.clock.advance(hours=1, seconds=1)
    refused = flow.reevaluate(denied, approval)
    assert (refused["decision"], refused["context"]["reason"]) == (False, "approval_expired")
    assert refused["context"]["next_action"] == "request"


def test_an_approval_for_another_resource_is_out_of_scope(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval()
    other = {**denied, "resource": {"type": "api", "id": ERP + "/invoices/8"}}
    refused = flow.reevaluate(other, approval)
    assert (refused["decision"], refused["context"]["reason"]) == (False, "out_of_scope")
    assert refused["context"]["next_action"] == "request"


def test_an_approval_for_another_subject_is_not_honoured(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval()
    other = {**denied, "subject": {"type": "agent", "id": "agent-2"}}
    refused = flow.reevaluate(other, approval)
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "out_of_scope"


def test_a_tampered_approval_state_is_approval_unverifiable(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval()
    state = approval["state"]
    forged = {**approval, "state": state[:-4] + ("AAAA" if state[-4:] != "AAAA" else "BBBB")}
    before = harness.head()
    refused = flow.reevaluate(denied, forged)
    assert (refused["context"]["reason"], refused["context"]["next_action"]) == (
        "approval_unverifiable",
        "none",
    )
    assert harness.head() == before


def test_revocation_overrides_an_approval(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval(max_uses=5)
    assert flow.reevaluate(denied, approval)["decision"] is True
    revoked = harness.client.post(
        f"/v1/missions/{flow.mission_id}/lifecycle",
        json={"operation": "revoke", "reason": "test"},
        headers=harness.auth("operator"),
    )
    assert revoked.status_code == 200
    refused = flow.reevaluate(denied, approval)
    assert (refused["decision"], refused["context"]["reason"]) == (False, "policy_denied")
    assert refused["context"]["next_action"] == "none"


def test_suspension_overrides_an_approval(harness: Harness) -> None:
    flow = Flow.gated(harness)
    denied, approval = flow.approval()
    suspended = harness.client.post(
        f"/v1/missions/{flow.mission_id}/lifecycle",
        json={"operation": "suspend", "reason": "test"},
        headers=harness.auth("operator"),
    )
    assert suspended.status_code == 200
    before = harness.head()
    refused = flow.reevaluate(denied, approval)
    assert refused["context"]["reason"] == "policy_denied"
    assert harness.head() == before


def test_an_out_of_authority_approval_permits_exactly_the_approved_request(
    harness: Harness,
) -> None:
    flow = Flow.of(harness, harness.mission([entry(["invoices.read"])]))
    denied, decision = flow.evaluate(action="invoices.pay")
    assert decision["context"]["reason"] == "out_of_authority"
    response = flow.submit(request_body(denied, decision))
    task_id = response.json()["task"]["id"]
    assert flow.approve(task_id).status_code == 200
    approval = flow.status(task_id)["result"]["approval"]
    assert flow.reevaluate(denied, approval)["decision"] is True
    other = {**denied, "action": {**denied["action"], "properties": {"amount": "999"}}}
    assert flow.reevaluate(other, approval)["context"]["reason"] == "out_of_scope"
