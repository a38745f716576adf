"""Egress denials over HTTP (SPEC 7.2; RFC 8908 Captive Portal API; standards.md check 40):
a requestable egress denial carries its captive_url, whose Captive Portal API answers
captive until the access request made with it is approved, then counts down to
approved_until, and is captive again after it or once its uses are spent."""

from __future__ import annotations

from typing import Any

from ledger.domain.instants import parse_instant
from tests.api.pdp.access_flow import Flow, issuer, request_body
from tests.api.pdp.conftest import Harness
from tests.mandate_builders import proof_of

ALLOWED = "https://api.allowed.example"
ELSEWHERE = "https://uploads.elsewhere.example"
CAPTIVE_JSON = "application/captive+json"


def _egress_flow(h: Harness) -> Flow:
    mission_id = h.mission(
        [
            {
                "type": "mission_resource_access",
                "resource": ALLOWED,
                "resource_match": "exact",
                "actions": ["egress.connect"],
            }
        ]
    )
    return Flow.of(h, mission_id)


def _connect(flow: Flow, target: str) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
        "action": {"name": "egress.connect"},
        "resource": {"type": "egress", "id": target},
        "context": {"mandate": flow.token, "proof": proof_of(flow.token)},
    }


def _denied(flow: Flow) -> tuple[dict[str, Any], dict[str, Any]]:
    body = _connect(flow, ELSEWHERE)
    decision = flow.h.evaluate(body)
    assert decision["decision"] is False, decision
    return body, decision


def _portal(h: Harness, url: str, who: str = "pep") -> Any:
    path = url.removeprefix(issuer(h))
    return h.client.get(path, headers={**h.auth(who), "Accept": CAPTIVE_JSON})


def test_a_requestable_egress_denial_carries_its_captive_url(harness: Harness) -> None:
    _, decision = _denied(_egress_flow(harness))
    access = decision["context"]["access_request"]
    assert decision["context"]["reason"] == "out_of_authority"
    assert access["captive_url"] == (
        issuer(harness) + "/v1/egress/denials/" + access["binding_token"]
    )


def test_each_egress_denial_has_a_captive_url_of_its_own(harness: Harness) -> None:
    flow = _egress_flow(harness)
    first = _denied(flow)[1]["context"]["access_request"]["captive_url"]
    second = _denied(flow)[1]["context"]["access_request"]["captive_url"]
    assert first != second


def test_a_denial_of_another_resource_type_has_no_captive_url(harness: Harness) -> None:
    flow = Flow.gated(harness)
    _, decision = flow.evaluate()
    assert "captive_url" not in decision["context"]["access_request"]


def test_a_connect_target_host_and_port_is_read_as_an_https_origin(harness: Harness) -> None:
    flow = _egress_flow(harness)
    assert harness.evaluate(_connect(flow, "api.allowed.example:443"))["decision"] is True
    assert harness.evaluate(_connect(flow, "api.allowed.example:8443"))["decision"] is False


def test_check_40_before_approval_the_portal_is_captive_with_the_denials_access_request(
    harness: Harness,
) -> None:
    _, decision = _denied(_egress_flow(harness))
    access = decision["context"]["access_request"]
    response = _portal(harness, access["captive_url"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CAPTIVE_JSON
    assert response.headers["cache-control"] == "private"
    body = response.json()
    assert body["captive"] is True
    assert body["user-portal-url"].startswith(issuer(harness) + "/console/access-requests/tsk_")
    assert body["access-request"] == {"context": {"access_request": access}}


def test_while_the_request_is_pending_the_portal_stays_captive(harness: Harness) -> None:
    flow = _egress_flow(harness)
    denied, decision = _denied(flow)
    submitted = flow.submit(request_body(denied, decision))
    assert submitted.status_code == 202, submitted.text
    body = _portal(harness, decision["context"]["access_request"]["captive_url"]).json()
    assert body["captive"] is True
    assert body["user-portal-url"].endswith(
        "/console/access-requests/" + submitted.json()["task"]["id"]
    )


def test_after_approval_the_portal_counts_down_to_approved_until(harness: Harness) -> None:
    flow = _egress_flow(harness)
    denied, decision = _denied(flow)
    task = flow.submit(request_body(denied, decision)).json()["task"]
    assert flow.approve(task["id"], reason="needed for the upload").status_code == 200
    approval = flow.status(task["id"])["result"]["approval"]
    url = decision["context"]["access_request"]["captive_url"]
    until = parse_instant(approval["approved_until"])
    first = _portal(harness, url).json()
    assert first == {
        "captive": False,
        "seconds-remaining": int((until - harness.clock.now()).total_seconds()),
    }
    harness.clock.advance(seconds=90)
    second = _portal(harness, url).json()
    assert second["captive"] is False
    assert second["seconds-remaining"] == first["seconds-remaining"] - 90


def test_after_approved_until_the_portal_is_captive_again(harness: Harness) -> None:
    flow = _egress_flow(harness)
    denied, decision = _denied(flow)
    task = flow.submit(request_body(denied, decision)).json()["task"]
    flow.approve(task["id"], reason="once", approved_until=None)
    approval = flow.status(task["id"])["result"]["approval"]
    harness.clock.set(parse_instant(approval["approved_until"]))
    body = _portal(harness, decision["context"]["access_request"]["captive_url"]).json()
    assert body["captive"] is True


def test_once_the_approvals_uses_are_spent_the_portal_is_captive_again(harness: Harness) -> None:
    flow = _egress_flow(harness)
    denied, decision = _denied(flow)
    task = flow.submit(request_body(denied, decision)).json()["task"]
    flow.approve(task["id"], reason="once")
    approval = flow.status(task["id"])["result"]["approval"]
    retried = {**denied, "context": {**denied["context"], "proof": proof_of(flow.token)}}
    assert flow.reevaluate(retried, approval)["decision"] is True
    body = _portal(harness, decision["context"]["access_request"]["captive_url"]).json()
    assert body["captive"] is True


def test_a_forged_denial_id_is_unknown(harness: Harness) -> None:
    _, decision = _denied(_egress_flow(harness))
    token = decision["context"]["access_request"]["binding_token"]
    head, payload, signature = token.split(".")
    forged = ".".join(
        [head, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")]
    )
    response = harness.client.get(f"/v1/egress/denials/{forged}", headers=harness.auth("pep"))
    assert response.status_code == 404
    assert response.json()["type"].endswith("unknown_denial")


def test_the_binding_token_of_a_denial_that_is_not_egress_is_not_a_denial_id(
    harness: Harness,
) -> None:
    _, decision = Flow.gated(harness).evaluate()
    token = decision["context"]["access_request"]["binding_token"]
    response = harness.client.get(f"/v1/egress/denials/{token}", headers=harness.auth("pep"))
    assert response.status_code == 404
    assert response.json()["type"].endswith("unknown_denial")


def test_the_agent_may_read_the_portal(harness: Harness) -> None:
    _, decision = _denied(_egress_flow(harness))
    response = _portal(harness, decision["context"]["access_request"]["captive_url"], "agent")
    assert response.status_code == 200


def test_an_approver_may_not_read_the_portal(harness: Harness) -> None:
    _, decision = _denied(_egress_flow(harness))
    response = _portal(harness, decision["context"]["access_request"]["captive_url"], "approver")
    assert response.status_code == 403


def test_the_portal_needs_a_credential(harness: Harness) -> None:
    _, decision = _denied(_egress_flow(harness))
    path = decision["context"]["access_request"]["captive_url"].removeprefix(issuer(harness))
    assert harness.client.get(path).status_code == 401


def test_pdp_metadata_advertises_captive_portal_egress(harness: Harness) -> None:
    metadata = harness.client.get("/.well-known/authzen-configuration").json()
    assert (
        "urn:openid:authzen:capability:access-request:captive-portal-egress"
        in metadata["capabilities"]
    )
