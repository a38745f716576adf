"""AuthZEN decisions through HTTP: permits need every condition; each denial has its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.pdp.conftest import Harness
from tests.mandate_builders import jkt, proof_of

ERP = "https://erp.example.com"


def entry(actions: list[str] | None = None, **constraints: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "mission_resource_access",
        "resource": ERP,
        "resource_match": "prefix",
        "actions": actions or ["invoices.pay"],
    }
    if constraints:
        value["constraints"] = constraints
    return value


def request(
    token: str,
    *,
    action: str = "invoices.pay",
    resource: str = ERP + "/invoices/7",
    client_id: str = "agent-1",
    instance_id: str | None = "i-1",
    action_properties: dict[str, Any] | None = None,
    resource_properties: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    subject: dict[str, Any] = {"type": "agent", "id": client_id}
    if instance_id is not None:
        subject["properties"] = {"instance_id": instance_id}
    body: dict[str, Any] = {
        "subject": subject,
        "action": {"name": action, "properties": action_properties or {}},
        "resource": {"type": "api", "id": resource, "properties": resource_properties or {}},
        "context": {"mandate": token, **_proof(token), **(context or {})},
    }
    return body


def _proof(token: str) -> dict[str, Any]:
    """The proof of possession a PEP passes with a well-formed Mandate token."""
    try:
        return {"proof": proof_of(token)}
    except (IndexError, ValueError, KeyError):
        return {}


def token_for(h: Harness, **constraints: Any) -> str:
    mission = h.mission([entry(**constraints)])
    return str(h.mandate(mission)["token"])


CONSTRAINT_CASES = [
    (
        "max_amount",
        {"max_amount": {"amount": "500.00", "currency": "USD"}},
        {"action_properties": {"amount": "500", "currency": "USD"}},
        {"action_properties": {"amount": "500.01", "currency": "USD"}},
    ),
    (
        "allowed_tools",
        {"allowed_tools": ["ledger-export"]},
        {"action_properties": {"tool": "ledger-export"}},
        {"action_properties": {"tool": "shell"}},
    ),
    (
        "recipient_domain",
        {"recipient_domain": "example.com"},
        {"action_properties": {"recipient": "ap@billing.example.com"}},
        {"action_properties": {"recipient": "ap@example.net"}},
    ),
    (
        "tenant",
        {"tenant": "acme"},
        {"context": {"tenant": "acme"}},
        {"context": {"tenant": "globex"}},
    ),
    (
        "time_window",
        {
            "time_window": {
                "not_before": "2026-11-01T00:00:00Z",
                "not_after": "2026-12-31T00:00:00Z",
            }
        },
        {},
        None,
    ),
    (
        "data_classification",
        {"data_classification": ["internal"]},
        {"resource_properties": {"data_classification": "internal"}},
        {"resource_properties": {"data_classification": "secret"}},
    ),
    (
        "resource_issued_after",
        {"resource_issued_after": "2026-07-01T00:00:00Z"},
        {"resource_properties": {"issued_at": "2026-08-01T00:00:00Z"}},
        {"resource_properties": {"issued_at": "2026-06-01T00:00:00Z"}},
    ),
    (
        "resource_issued_before",
        {"resource_issued_before": "2026-09-30T23:59:59Z"},
        {"resource_properties": {"issued_at": "2026-08-01T00:00:00Z"}},
        {"resource_properties": {"issued_at": "2026-10-01T00:00:00Z"}},
    ),
]


@pytest.mark.parametrize(
    ("name", "constraints", "permitted", "denied"),
    CONSTRAINT_CASES,
    ids=[c[0] for c in CONSTRAINT_CASES],
)
def test_each_constraint_permits_inside_and_denies_outside(
    harness: Harness,
    name: str,
    constraints: dict[str, Any],
    permitted: dict[str, Any],
    denied: dict[str, Any] | None,
) -> None:
    token = token_for(harness, **constraints)
    allow = harness.evaluate(request(token, **permitted))
    assert allow["decision"] is True, allow
    if denied is not None:
        refuse = harness.evaluate(request(token, **denied))
        assert refuse["decision"] is False
        assert refuse["context"]["reason"] == "parameter_violation"
        assert refuse["context"]["constraint"] == name


def test_time_window_denies_outside_the_window(harness: Harness) -> None:
    window = {"not_before": "2026-11-01T00:00:00Z", "not_after": "2026-11-28T12:30:00Z"}
    mission = harness.mission([entry(time_window=window)])
    token = harness.mandate(mission, ttl=7200)["token"]
    assert harness.evaluate(request(token))["decision"] is True
    harness.clock.advance(minutes=45)
    refused = harness.evaluate(request(token))
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "parameter_violation"


@pytest.mark.parametrize(
    ("constraints", "missing"),
    [
        ({"max_amount": {"amount": "10", "currency": "USD"}}, {}),
        ({"allowed_tools": ["a"]}, {}),
        ({"recipient_domain": "example.com"}, {}),
        ({"tenant": "acme"}, {}),
    ],
)
def test_a_constraint_without_its_input_denies(
    harness: Harness, constraints: dict[str, Any], missing: dict[str, Any]
) -> None:
    token = token_for(harness, **constraints)
    refused = harness.evaluate(request(token, **missing))
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "parameter_violation"


def test_requires_action_approval_denies_as_approval_required(harness: Harness) -> None:
    token = token_for(harness, requires_action_approval=True)
    refused = harness.evaluate(request(token))
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "approval_required"


def test_permit_carries_evaluation_id_mission_version_and_valid_until(harness: Harness) -> None:
    token = token_for(harness)
    permit = harness.evaluate(request(token))
    assert permit["decision"] is True
    context = permit["context"]
    assert context["evaluation_id"].startswith("ev_")
    assert context["mission"]["version"] == 1
    assert context["valid_until"].endswith("Z")


def test_a_document_the_fast_parser_refuses_but_rfc8259_allows_is_decided(
    harness: Harness,
) -> None:
    """orjson refuses a leading byte order mark, which RFC 8259 section 8.1 lets a parser
    ignore: the standard parser has the last word, so the request is decided."""
    token = token_for(harness)
    raw = b"\xef\xbb\xbf" + json.dumps(request(token)).encode()
    response = harness.client.post(
        "/access/v1/evaluation",
        content=raw,
        headers={**harness.auth("pep"), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["decision"] is True


def test_a_lone_surrogate_is_refused_even_though_the_standard_parser_reads_it(
    harness: Harness,
) -> None:
    """It used to be decided; a string that is not Unicode cannot be echoed or logged as
    UTF-8, so it is a malformed request (400, AuthZEN's plain-text shape)."""
    token = token_for(harness)
    raw = json.dumps(request(token, context={"note": "x"})).replace('"x"', '"\\ud800"')
    response = harness.client.post(
        "/access/v1/evaluation",
        content=raw.encode(),
        headers={**harness.auth("pep"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert "not valid Unicode" in response.text


def test_a_body_that_is_not_json_is_400(harness: Harness) -> None:
    response = harness.client.post(
        "/access/v1/evaluation",
        content=b'{"subject": ',
        headers={**harness.auth("pep"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.text == "the body is not valid JSON"


def test_every_deny_carries_an_evaluation_id(harness: Harness) -> None:
    refused = harness.evaluate(request("mdt_unknown"))
    assert refused["decision"] is False
    assert refused["context"]["evaluation_id"].startswith("ev_")
    assert refused["context"]["reason"] == "credential_invalid"


def test_action_outside_authority_is_out_of_authority(harness: Harness) -> None:
    token = token_for(harness)
    refused = harness.evaluate(request(token, action="invoices.delete"))
    assert refused["context"]["reason"] == "out_of_authority"
    other = harness.evaluate(request(token, resource="https://crm.example.com/x"))
    assert other["context"]["reason"] == "out_of_authority"


@pytest.mark.parametrize(
    ("client_id", "instance_id"), [("agent-2", "i-1"), ("agent-1", "i-9"), ("agent-1", None)]
)
def test_a_subject_other_than_the_holder_is_actor_invalid(
    harness: Harness, client_id: str, instance_id: str | None
) -> None:
    token = token_for(harness)
    refused = harness.evaluate(request(token, client_id=client_id, instance_id=instance_id))
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "actor_invalid"


def test_subject_type_must_be_agent(harness: Harness) -> None:
    token = token_for(harness)
    body = request(token)
    body["subject"]["type"] = "user"
    assert harness.evaluate(body)["context"]["reason"] == "actor_invalid"


def test_a_badly_signed_token_is_credential_invalid(harness: Harness) -> None:
    token = token_for(harness)
    header, payload, signature = token.split(".")
    forged = ".".join(
        [header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")]
    )
    assert harness.evaluate(request(forged))["context"]["reason"] == "credential_invalid"


def test_mandate_id_works_in_place_of_the_token(harness: Harness) -> None:
    mission = harness.mission([entry()])
    issued = harness.mandate(mission)
    body = request(issued["mandate_id"], context={"proof": proof_of(issued["token"])})
    assert harness.evaluate(body)["decision"] is True


@pytest.mark.postgres_smoke
def test_suspended_mission_denies_and_resume_restores(harness: Harness) -> None:
    mission = harness.mission([entry()])
    token = harness.mandate(mission)["token"]
    harness.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "suspend", "reason": "review"},
        headers=harness.auth("operator"),
    )
    refused = harness.evaluate(request(token))
    assert refused["context"]["reason"] == "mission_inactive"
    harness.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "resume", "reason": "ok"},
        headers=harness.auth("admin"),
    )
    assert harness.evaluate(request(token))["decision"] is True


@pytest.mark.postgres_smoke
def test_revoked_mandate_denies_immediately_on_the_same_replica(harness: Harness) -> None:
    mission = harness.mission([entry()])
    issued = harness.mandate(mission)
    assert harness.evaluate(request(issued["token"]))["decision"] is True
    harness.client.post(
        f"/v1/mandates/{issued['mandate_id']}/revoke", json={}, headers=harness.auth("operator")
    )
    assert harness.evaluate(request(issued["token"]))["decision"] is False


def test_contained_capability_is_denied(harness: Harness) -> None:
    mission = harness.mission([entry(["invoices.pay", "invoices.read"])])
    token = harness.mandate(mission)["token"]
    harness.client.post(
        f"/v1/missions/{mission}/containment",
        json={"contained": [{"resource": ERP, "actions": ["invoices.pay"]}], "reason": "fraud"},
        headers=harness.auth("operator"),
    )
    refused = harness.evaluate(request(token))
    assert refused["decision"] is False
    assert refused["context"]["reason"] in {"authority_contained", "out_of_authority"}
    assert harness.evaluate(request(token, action="invoices.read"))["decision"] is True


def test_join_mode_evaluates_against_the_mission(harness: Harness) -> None:
    mission = harness.mission([entry()])
    issuer = harness.client.get("/.well-known/mission-authority-server").json()["issuer"]
    body = request("unused", instance_id=None)
    body["context"] = {"mission": {"id": mission, "issuer": issuer}, "proof": {"jkt": jkt()}}
    assert harness.evaluate(body)["decision"] is True
    body["context"]["mission"] = {"id": mission, "issuer": "https://elsewhere.example"}
    assert harness.evaluate(body)["context"]["reason"] == "mission_binding_failed"


def test_no_credential_in_context_is_credential_invalid(harness: Harness) -> None:
    body = request("x")
    body["context"] = {}
    assert harness.evaluate(body)["context"]["reason"] == "credential_invalid"


def test_min_position_beyond_the_index_denies_stale_state(harness: Harness) -> None:
    token = token_for(harness)
    body = request(token, context={"consistency": {"min_position": harness.head() + 1000}})
    refused = harness.evaluate(body)
    assert refused["decision"] is False
    assert refused["context"]["reason"] == "stale_state"


def test_a_min_position_not_reached_counts_as_a_stale_state_denial(harness: Harness) -> None:
    pdp = harness.client.app.state.services.pdp  # type: ignore[attr-defined]
    token = token_for(harness)
    before = pdp.denials["stale_state"]
    body = request(token, context={"consistency": {"min_position": harness.head() + 1000}})
    harness.evaluate(body)
    assert pdp.denials["stale_state"] == before + 1


def test_min_position_already_reached_answers_normally(harness: Harness) -> None:
    token = token_for(harness)
    body = request(token, context={"consistency": {"min_position": harness.head()}})
    assert harness.evaluate(body, **{"Ledger-Min-Position": str(harness.head())})["decision"]


def test_x_request_id_is_echoed(harness: Harness) -> None:
    token = token_for(harness)
    response = harness.client.post(
        "/access/v1/evaluation",
        json=request(token),
        headers={**harness.auth("pep"), "X-Request-ID": "req-42"},
    )
    assert response.headers["x-request-id"] == "req-42"


def test_x_request_id_is_echoed_on_a_body_too_large(harness: Harness) -> None:
    response = harness.client.post(
        "/access/v1/evaluation",
        content=b"{" + b" " * 70_000 + b"}",
        headers={**harness.auth("pep"), "X-Request-ID": "req-413"},
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "req-413"


def test_a_long_x_request_id_is_echoed_too(harness: Harness) -> None:
    token = token_for(harness)
    long_id = "r" * 300
    response = harness.client.post(
        "/access/v1/evaluation",
        json=request(token),
        headers={**harness.auth("pep"), "X-Request-ID": long_id},
    )
    assert response.headers["x-request-id"] == long_id


def test_evaluation_needs_the_pep_role(harness: Harness) -> None:
    response = harness.client.post(
        "/access/v1/evaluation", json=request("x"), headers=harness.auth("auditor")
    )
    assert response.status_code == 403


def test_batch_defaults_and_execute_all(harness: Harness) -> None:
    token = token_for(harness)
    base = request(token)
    body = {
        "subject": base["subject"],
        "resource": base["resource"],
        "context": base["context"],
        "evaluations": [
            {"action": {"name": "invoices.pay"}},
            {"action": {"name": "invoices.delete"}},
            {"action": {"name": "invoices.pay"}},
        ],
    }
    response = harness.client.post("/access/v1/evaluations", json=body, headers=harness.auth("pep"))
    assert [e["decision"] for e in response.json()["evaluations"]] == [True, False, True]


@pytest.mark.parametrize(
    ("semantic", "expected"),
    [("deny_on_first_deny", [True, False]), ("permit_on_first_permit", [True])],
)
def test_batch_short_circuit_semantics(
    harness: Harness, semantic: str, expected: list[bool]
) -> None:
    token = token_for(harness)
    base = request(token)
    body = {
        "subject": base["subject"],
        "resource": base["resource"],
        "context": base["context"],
        "options": {"evaluations_semantic": semantic},
        "evaluations": [
            {"action": {"name": "invoices.pay"}},
            {"action": {"name": "invoices.delete"}},
            {"action": {"name": "invoices.pay"}},
        ],
    }
    response = harness.client.post("/access/v1/evaluations", json=body, headers=harness.auth("pep"))
    assert [e["decision"] for e in response.json()["evaluations"]] == expected


def test_batch_item_with_a_missing_field_is_false_not_an_error(harness: Harness) -> None:
    body = {
        "evaluations": [
            {"subject": {"type": "agent", "id": "agent-1"}, "action": {"name": "x"}},
        ]
    }
    response = harness.client.post("/access/v1/evaluations", json=body, headers=harness.auth("pep"))
    assert response.status_code == 200
    item = response.json()["evaluations"][0]
    assert item["decision"] is False
    assert item["context"]["error"]["status"] == 400


def test_search_apis_list_what_the_agent_may_do(harness: Harness) -> None:
    mission = harness.mission([entry(["invoices.pay", "invoices.read"])])
    harness.mandate(mission)
    subjects = harness.client.post(
        "/access/v1/search/subject",
        json={
            "subject": {"type": "agent"},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api", "id": ERP + "/invoices/1"},
        },
        headers=harness.auth("pep"),
    ).json()
    assert {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}} in subjects[
        "results"
    ]
    resources = harness.client.post(
        "/access/v1/search/resource",
        json={
            "subject": {"type": "agent", "id": "agent-1"},
            "action": {"name": "invoices.read"},
            "resource": {"type": "api"},
        },
        headers=harness.auth("pep"),
    ).json()
    assert resources["results"] == [{"type": "api", "id": ERP}]
    actions = harness.client.post(
        "/access/v1/search/action",
        json={
            "subject": {"type": "agent", "id": "agent-1"},
            "resource": {"type": "api", "id": ERP + "/invoices/1"},
        },
        headers=harness.auth("pep"),
    ).json()
    assert actions["results"] == [{"name": "invoices.pay"}, {"name": "invoices.read"}]


@pytest.mark.postgres_smoke
def test_search_pagination_walks_every_result_once(harness: Harness) -> None:
    mission = harness.mission([entry([f"invoices.a{i}" for i in range(7)])])
    harness.mandate(mission)
    seen: list[str] = []
    page: dict[str, Any] = {"limit": 3}
    while True:
        body = {
            "subject": {"type": "agent", "id": "agent-1"},
            "resource": {"type": "api", "id": ERP + "/x"},
            "page": page,
        }
        answer = harness.client.post(
            "/access/v1/search/action", json=body, headers=harness.auth("pep")
        ).json()
        seen.extend(r["name"] for r in answer["results"])
        token = answer["page"]["next_token"]
        if token == "":
            break
        page = {"limit": 3, "token": token}
    assert sorted(seen) == sorted(f"invoices.a{i}" for i in range(7))
    assert len(seen) == len(set(seen))


def test_changing_the_query_mid_pagination_is_refused(harness: Harness) -> None:
    mission = harness.mission([entry([f"invoices.a{i}" for i in range(5)])])
    harness.mandate(mission)
    first = harness.client.post(
        "/access/v1/search/action",
        json={
            "subject": {"type": "agent", "id": "agent-1"},
            "resource": {"type": "api", "id": ERP + "/x"},
            "page": {"limit": 2},
        },
        headers=harness.auth("pep"),
    ).json()
    second = harness.client.post(
        "/access/v1/search/action",
        json={
            "subject": {"type": "agent", "id": "agent-1"},
            "resource": {"type": "api", "id": ERP + "/x"},
            "page": {"limit": 3, "token": first["page"]["next_token"]},
        },
        headers=harness.auth("pep"),
    )
    assert second.status_code == 400
