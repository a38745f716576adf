"""Bad input on every governance write endpoint (SPEC 6.1, and the ground rule: malformed,
oversized, unauthorised, out-of-order or replayed input gets a clear 4xx with a
machine-readable body and changes nothing).

Every test asserts the ledger's head position did not move. Illegal transitions (409) are
covered, with the same assertion, by ``test_lifecycle_http`` and ``test_proposals_http``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from api.middleware import MAX_BODY_BYTES
from tests.api.conftest import Api, assert_problem, entry, pointers
from tests.builders import ERP


@dataclass(frozen=True)
class Target:
    """One write endpoint: who may call it, a valid body, and a member of the wrong type."""

    name: str
    who: str
    path: str
    body: Callable[[Api], dict[str, Any]]
    wrong_type: tuple[str, Any]


TARGETS = [
    Target("submit", "agent", "/v1/proposals", lambda a: a.proposal_body(), ("client_id", 5)),
    Target(
        "approve", "approver", "/v1/proposals/{proposal}/approve", lambda _: {}, ("expires_at", 5)
    ),
    Target(
        "deny",
        "approver",
        "/v1/proposals/{proposal}/deny",
        lambda _: {"reason": "no"},
        ("reason", 5),
    ),
    Target(
        "cancel",
        "agent",
        "/v1/proposals/{proposal}/cancel",
        lambda _: {"reason": "no"},
        ("reason", ["no"]),
    ),
    Target(
        "lifecycle",
        "operator",
        "/v1/missions/{mission}/lifecycle",
        lambda _: {"operation": "suspend", "reason": "incident"},
        ("expected_version", "1"),
    ),
    Target(
        "containment",
        "operator",
        "/v1/missions/{mission}/containment",
        lambda _: {"contained": [{"resource": ERP}], "reason": "incident"},
        ("contained", {"resource": ERP}),
    ),
    Target(
        "expansion",
        "agent",
        "/v1/missions/{mission}/expansion",
        lambda a: {"intent": a.intent(), "authorization_details": [entry()]},
        ("intent", "a string"),
    ),
]
BY_NAME = {t.name: t for t in TARGETS}


@dataclass
class Scene:
    """A pending proposal and an active Mission to aim the requests at."""

    api: Api
    proposal: str
    mission: str

    def path(self, target: Target) -> str:
        return target.path.format(proposal=self.proposal, mission=self.mission)

    def post(self, target: Target, content: bytes | Iterator[bytes], **headers: str) -> Any:
        return self.api.client.post(
            self.path(target),
            content=content,
            headers=self.api.auth(target.who, **{"Content-Type": "application/json", **headers}),
        )

    def post_json(self, target: Target, body: Any, **headers: str) -> Any:
        return self.post(target, json.dumps(body).encode(), **headers)

    def refused(
        self,
        target: Target,
        body: Any,
        status: int = 400,
        code: str | None = None,
        **headers: str,
    ) -> Any:
        """Send ``body``; assert a problem with ``status`` (and ``code``, by default the
        status's own) and that nothing was written."""
        head = self.api.head()
        response = self.post_json(target, body, **headers)
        code = code or {400: "invalid_request", 413: "payload_too_large"}[status]
        assert_problem(response, status, code)
        assert self.api.head() == head
        return response


@pytest.fixture(scope="module")
def scene(shared_api: Api) -> Scene:
    """One app for the whole module: every request here is refused (and writes nothing),
    or writes a new proposal that no other test looks at."""
    mission = shared_api.mission()
    proposal = shared_api.submit()
    return Scene(api=shared_api, proposal=proposal["submission_id"], mission=mission["id"])


by_target = pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


# ---------------------------------------------------------------------- every endpoint


@by_target
def test_malformed_json_is_400(scene: Scene, target: Target) -> None:
    head = scene.api.head()
    response = scene.post(target, b'{"reason": "unterminated')
    assert_problem(response, 400, "invalid_request")
    assert scene.api.head() == head


@by_target
def test_a_json_array_body_is_400(scene: Scene, target: Target) -> None:
    scene.refused(target, [target.body(scene.api)])


@by_target
def test_a_json_string_body_is_400(scene: Scene, target: Target) -> None:
    scene.refused(target, "suspend")


@by_target
@pytest.mark.parametrize("scalar", [None, 1, True], ids=["null", "number", "boolean"])
def test_a_json_scalar_body_is_400(scene: Scene, target: Target, scalar: Any) -> None:
    scene.refused(target, scalar)


@by_target
def test_a_member_of_the_wrong_type_is_400_not_422(scene: Scene, target: Target) -> None:
    member, value = target.wrong_type
    body = target.body(scene.api) | {member: value}
    response = scene.refused(target, body)
    assert any(p.startswith(f"/{member}") for p in pointers(response)), response.json()


@by_target
def test_an_unknown_top_level_member_is_400_at_its_pointer(scene: Scene, target: Target) -> None:
    body = target.body(scene.api) | {"colour": "blue"}
    response = scene.refused(target, body)
    assert "/colour" in pointers(response)


@by_target
def test_a_body_over_64_kib_is_413(scene: Scene, target: Target) -> None:
    body = target.body(scene.api) | {"padding": "x" * MAX_BODY_BYTES}
    scene.refused(target, body, status=413)


@by_target
def test_a_chunked_body_over_64_kib_is_413(scene: Scene, target: Target) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"padding": "'
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"x" * 4096
        yield b'"}'

    head = scene.api.head()
    response = scene.post(target, chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert scene.api.head() == head


@by_target
def test_an_oversized_idempotency_key_is_400(scene: Scene, target: Target) -> None:
    response = scene.refused(target, target.body(scene.api), **{"Idempotency-Key": "k" * 256})
    assert pointers(response) == ["/headers/Idempotency-Key"]


def test_a_body_of_exactly_64_kib_is_accepted(scene: Scene) -> None:
    target = BY_NAME["submit"]
    content = json.dumps(target.body(scene.api)).encode()
    content += b" " * (MAX_BODY_BYTES - len(content))
    assert len(content) == MAX_BODY_BYTES
    response = scene.post(target, content)
    assert response.status_code == 202, response.text


def test_a_declared_length_over_64_kib_is_refused_before_reading(scene: Scene) -> None:
    target = BY_NAME["submit"]
    head = scene.api.head()
    response = scene.api.client.post(
        target.path,
        content=b"{}",
        headers=scene.api.auth(
            "agent",
            **{"Content-Type": "application/json", "Content-Length": str(MAX_BODY_BYTES + 1)},
        ),
    )
    assert_problem(response, 413, "payload_too_large")
    assert scene.api.head() == head


# ---------------------------------------------------------------------- unknown members


def _with_entry(api: Api, **changes: Any) -> dict[str, Any]:
    return api.proposal_body(authorization_details=[entry() | changes])


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda b: b["intent"].update(colour="blue"), "/intent/colour"),
        (lambda b: b["subject"].update(colour="blue"), "/subject/colour"),
        (
            lambda b: b["authorization_details"][0].update(colour="blue"),
            "/authorization_details/0/colour",
        ),
        (
            lambda b: b["authorization_details"][0].update(
                constraints={"max_amount": {"amount": "5", "currency": "USD", "colour": "blue"}}
            ),
            "/authorization_details/0/constraints/max_amount/colour",
        ),
        (
            lambda b: b["authorization_details"][0].update(
                delegation={"max_depth": 1, "colour": 1}
            ),
            "/authorization_details/0/delegation/colour",
        ),
    ],
    ids=["intent", "subject", "entry", "max-amount", "delegation"],
)
def test_an_unknown_nested_member_of_a_proposal_is_400_at_its_pointer(
    scene: Scene, change: Callable[[dict[str, Any]], None], pointer: str
) -> None:
    body = scene.api.proposal_body()
    change(body)
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == [pointer]


def test_an_unknown_member_of_an_approvers_entry_is_400_at_its_pointer(scene: Scene) -> None:
    body = {"authorization_details": [entry(colour="blue")]}
    response = scene.refused(BY_NAME["approve"], body)
    assert pointers(response) == ["/authorization_details/0/colour"]


def test_an_unknown_constraint_in_an_approvers_entry_is_400_at_its_pointer(scene: Scene) -> None:
    body = {"authorization_details": [entry(constraints={"colour": "blue"})]}
    response = scene.refused(BY_NAME["approve"], body, code="unsupported_control")
    assert pointers(response) == ["/authorization_details/0/constraints/colour"]


@pytest.mark.parametrize(
    ("change", "pointer", "code"),
    [
        (lambda b: b["intent"].update(colour="blue"), "/intent/colour", "invalid_request"),
        (
            lambda b: b["authorization_details"][0].update(colour="blue"),
            "/authorization_details/0/colour",
            "invalid_request",
        ),
        (
            lambda b: b["authorization_details"][0].update(constraints={"colour": "blue"}),
            "/authorization_details/0/constraints/colour",
            "unsupported_control",
        ),
    ],
    ids=["intent", "entry", "constraints"],
)
def test_an_unknown_nested_member_of_an_expansion_is_400_at_its_pointer(
    scene: Scene, change: Callable[[dict[str, Any]], None], pointer: str, code: str
) -> None:
    target = BY_NAME["expansion"]
    body = target.body(scene.api)
    change(body)
    response = scene.refused(target, body, code=code)
    assert pointers(response) == [pointer]


def test_an_unknown_member_of_a_containment_item_is_400_at_its_pointer(scene: Scene) -> None:
    body = {"contained": [{"resource": ERP, "colour": "blue"}], "reason": "incident"}
    response = scene.refused(BY_NAME["containment"], body)
    assert pointers(response) == ["/contained/0/colour"]


# ---------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("expected_version", "1"),
        ("expected_version", True),
        ("expected_version", 1.5),
        ("expected_version", 0),
        ("operation", "pause"),
        ("operation", 1),
        ("reason", None),
        ("reason", ""),
        ("nonce", 7),
        ("on_expiry", "explode"),
    ],
)
def test_a_lifecycle_member_of_the_wrong_type_or_range_is_400(
    scene: Scene, member: str, value: Any
) -> None:
    body = {"operation": "suspend", "reason": "incident"} | {member: value}
    response = scene.refused(BY_NAME["lifecycle"], body)
    assert f"/{member}" in pointers(response)


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda b: b.update(subject="alice"), "/subject"),
        (lambda b: b["subject"].update(sub=5), "/subject/sub"),
        (lambda b: b.update(instance_id=5), "/instance_id"),
        (lambda b: b.update(intent=["goal"]), "/intent"),
        (
            lambda b: b.update(authorization_details={"type": "mission_resource_access"}),
            "/authorization_details",
        ),
        (lambda b: b["intent"].update(resources=ERP), "/intent/resources"),
        (
            lambda b: b["authorization_details"][0].update(actions="invoices.read"),
            "/authorization_details/0/actions",
        ),
        (
            lambda b: b["authorization_details"][0].update(type="other"),
            "/authorization_details/0/type",
        ),
        (lambda b: b.pop("subject"), "/subject"),
        (lambda b: b["intent"].pop("goal"), "/intent/goal"),
    ],
    ids=[
        "subject-string",
        "sub-number",
        "instance-number",
        "intent-array",
        "details-object",
        "resources-string",
        "actions-string",
        "entry-type",
        "subject-missing",
        "goal-missing",
    ],
)
def test_a_proposal_member_of_the_wrong_type_is_400_at_its_pointer(
    scene: Scene, change: Callable[[dict[str, Any]], None], pointer: str
) -> None:
    body = scene.api.proposal_body()
    change(body)
    response = scene.refused(BY_NAME["submit"], body)
    assert pointer in pointers(response), response.json()


# ---------------------------------------------------------------------- oversized strings


@pytest.mark.parametrize(
    ("target_name", "change", "pointer"),
    [
        ("submit", lambda b: b.update(client_id="a" * 129), "/client_id"),
        ("submit", lambda b: b["subject"].update(sub="a" * 257), "/subject/sub"),
        ("submit", lambda b: b["intent"].update(goal="g" * 4097), "/intent/goal"),
        (
            "submit",
            lambda b: b["authorization_details"][0].update(actions=["a" * 300]),
            "/authorization_details/0/actions/0",
        ),
        ("deny", lambda b: b.update(reason="r" * 1025), "/reason"),
        ("cancel", lambda b: b.update(reason="r" * 1025), "/reason"),
        ("lifecycle", lambda b: b.update(reason="r" * 1025), "/reason"),
        ("lifecycle", lambda b: b.update(nonce="n" * 257), "/nonce"),
        ("containment", lambda b: b.update(reason="r" * 1025), "/reason"),
        ("approve", lambda b: b.update(approval_event_id="e" * 257), "/approval_event_id"),
    ],
    ids=[
        "client-id",
        "subject-sub",
        "goal",
        "action",
        "deny-reason",
        "cancel-reason",
        "lifecycle-reason",
        "nonce",
        "containment-reason",
        "approval-event-id",
    ],
)
def test_an_oversized_string_is_400_at_its_pointer(
    scene: Scene, target_name: str, change: Callable[[dict[str, Any]], None], pointer: str
) -> None:
    target = BY_NAME[target_name]
    body = target.body(scene.api)
    change(body)
    response = scene.refused(target, body)
    assert pointer in pointers(response), response.json()


def test_an_oversized_resource_uri_is_400(scene: Scene) -> None:
    long_uri = ERP + "/" + "p" * 9000
    body = scene.api.proposal_body()
    body["intent"]["resources"] = [long_uri]
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/intent/resources/0"]


# ---------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    "uri",
    ["not a uri", "erp/invoices", "https://erp.example.com/x#frag", "", 42],
    ids=["spaces", "relative", "fragment", "empty", "number"],
)
def test_an_invalid_intent_resource_uri_is_400(scene: Scene, uri: Any) -> None:
    body = scene.api.proposal_body()
    body["intent"]["resources"] = [uri]
    del body["authorization_details"]
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/intent/resources/0"]


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("erp/invoices", "exact"),
        ("urn:example:erp", "prefix"),
        ("https://erp.example.com?q=1", "prefix"),
    ],
    ids=["relative", "prefix-not-hierarchical", "prefix-with-query"],
)
def test_an_invalid_entry_resource_uri_is_400(scene: Scene, uri: str, match: str) -> None:
    body = scene.api.proposal_body(authorization_details=[entry(uri, resource_match=match)])
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/authorization_details/0/resource"]


def test_an_invalid_containment_resource_uri_is_400(scene: Scene) -> None:
    body = {"contained": [{"resource": "not a uri"}], "reason": "incident"}
    response = scene.refused(BY_NAME["containment"], body)
    assert pointers(response) == ["/contained/0/resource"]


def test_an_invalid_purpose_uri_is_400(scene: Scene) -> None:
    body = scene.api.proposal_body()
    body["intent"]["purpose"] = "reconcile invoices"
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/intent/purpose"]


# ---------------------------------------------------------------------- decimals


@pytest.mark.parametrize(
    "amount",
    ["1e300", "-5", "+5", "5,00", "1.0000000000000000001", " 5", "", "NaN", "Infinity", 5, 5.5],
)
def test_an_invalid_max_amount_is_400(scene: Scene, amount: Any) -> None:
    limited = entry(constraints={"max_amount": {"amount": amount, "currency": "USD"}})
    body = scene.api.proposal_body(authorization_details=[limited])
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/authorization_details/0/constraints/max_amount/amount"]


@pytest.mark.parametrize("currency", ["usd", "US", "DOLLARS", 840])
def test_an_invalid_max_amount_currency_is_400(scene: Scene, currency: Any) -> None:
    limited = entry(constraints={"max_amount": {"amount": "5", "currency": currency}})
    body = scene.api.proposal_body(authorization_details=[limited])
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/authorization_details/0/constraints/max_amount/currency"]


def test_an_invalid_max_amount_in_an_approvers_narrowing_is_400(scene: Scene) -> None:
    limited = entry(constraints={"max_amount": {"amount": "1e300", "currency": "USD"}})
    response = scene.refused(BY_NAME["approve"], {"authorization_details": [limited]})
    assert pointers(response) == ["/authorization_details/0/constraints/max_amount/amount"]


# ---------------------------------------------------------------------- instants


BAD_INSTANTS = [
    "tomorrow",
    "2026-12-01",
    "2026-12-01T00:00:00",
    "2026-02-30T00:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T00:00:60Z",
    "2026-12-01 00:00:00Z",
    "2026-12-01T00:00:00+25:00",
]


@pytest.mark.parametrize("instant", [*BAD_INSTANTS, 1_800_000_000])
def test_an_invalid_intent_expiry_is_400(scene: Scene, instant: Any) -> None:
    body = scene.api.proposal_body()
    body["intent"]["expires_at"] = instant
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/intent/expires_at"]


@pytest.mark.parametrize("instant", BAD_INSTANTS)
def test_an_invalid_approval_expiry_is_400(scene: Scene, instant: str) -> None:
    response = scene.refused(BY_NAME["approve"], {"expires_at": instant})
    assert pointers(response) == ["/expires_at"]


@pytest.mark.parametrize("instant", BAD_INSTANTS)
def test_an_invalid_suspension_deadline_is_400(scene: Scene, instant: str) -> None:
    body = {"operation": "suspend", "reason": "incident", "suspend_until": instant}
    response = scene.refused(BY_NAME["lifecycle"], body)
    assert pointers(response) == ["/suspend_until"]


def test_an_invalid_time_window_constraint_is_400(scene: Scene) -> None:
    window = {"time_window": {"not_before": "9am", "not_after": "2026-12-01T00:00:00Z"}}
    body = scene.api.proposal_body(authorization_details=[entry(constraints=window)])
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/authorization_details/0/constraints/time_window/not_before"]


# ---------------------------------------------------------------------- unauthorised


@by_target
def test_a_write_without_a_credential_is_401_and_writes_nothing(
    scene: Scene, target: Target
) -> None:
    head = scene.api.head()
    response = scene.api.client.post(scene.path(target), json=target.body(scene.api))
    assert_problem(response, 401, "unauthorized")
    assert scene.api.head() == head


# ---------------------------------------------------------------------- hostile input


@by_target
def test_deeply_nested_json_is_400_invalid_request(scene: Scene, target: Target) -> None:
    head = scene.api.head()
    depth = 20_000
    response = scene.post(target, b'{"intent": ' + b"[" * depth + b"]" * depth + b"}")
    assert_problem(response, 400, "invalid_request")
    assert scene.api.head() == head


@pytest.mark.parametrize("sub", ["a\x00b", "a\nb", "a\x7fb"], ids=["nul", "newline", "delete"])
def test_a_control_character_in_the_subject_is_400(scene: Scene, sub: str) -> None:
    body = scene.api.proposal_body(subject={"iss": "https://idp.example.com", "sub": sub})
    response = scene.refused(BY_NAME["submit"], body)
    assert pointers(response) == ["/subject/sub"]


def test_a_refused_nul_leaves_the_read_models_following(scene: Scene) -> None:
    api = scene.api
    nul = api.proposal_body(subject={"iss": "https://idp.example.com", "sub": "a\x00b"})
    scene.refused(BY_NAME["submit"], nul)
    assert api.submit()["status"] == "pending"
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["follower_healthy"] is True


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [
        ("operator", "GET", "/v1/missions/msn_a%00b"),
        ("auditor", "GET", "/v1/missions/msn_a%00b/events"),
        ("approver", "GET", "/v1/proposals/prp_a%00b"),
        ("approver", "POST", "/v1/proposals/prp_a%00b/approve"),
        ("approver", "POST", "/v1/proposals/prp_a%00b/deny"),
        ("operator", "POST", "/v1/missions/msn_a%00b/lifecycle"),
        ("operator", "GET", "/v1/mandates/mdt_a%00b"),
    ],
    ids=["mission", "events", "proposal", "approve", "deny", "lifecycle", "mandate"],
)
def test_an_id_containing_a_nul_is_an_unknown_id(
    scene: Scene, who: str, method: str, path: str
) -> None:
    body = {"operation": "revoke", "reason": "r"} if path.endswith("lifecycle") else {}
    head = scene.api.head()
    kwargs: dict[str, Any] = {"json": body} if method == "POST" else {}
    response = scene.api.client.request(method, path, headers=scene.api.auth(who), **kwargs)
    assert_problem(response, 404, "not_found")
    assert scene.api.head() == head


@pytest.mark.parametrize("member", ["subject", "client_id"])
def test_a_board_filter_containing_a_nul_is_400(scene: Scene, member: str) -> None:
    response = scene.api.client.get(
        "/v1/missions", params={member: "a\x00b"}, headers=scene.api.auth("operator")
    )
    assert_problem(response, 400, "invalid_request")
    assert pointers(response) == [f"/{member}"]


@pytest.mark.parametrize(
    "path",
    ["/v1/agents/a%00b/instances/i-1/revoke", "/v1/agents/agent-1/instances/i%00/revoke"],
    ids=["client", "instance"],
)
def test_a_kill_switch_for_a_malformed_name_is_400(scene: Scene, path: str) -> None:
    head = scene.api.head()
    response = scene.api.client.post(path, json={}, headers=scene.api.auth("operator"))
    assert_problem(response, 400, "invalid_request")
    assert scene.api.head() == head


def test_a_get_with_a_body_over_64_kib_is_413(scene: Scene) -> None:
    response = scene.api.client.request(
        "GET",
        "/v1/missions",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers=scene.api.auth("operator"),
    )
    assert_problem(response, 413, "payload_too_large")


def test_a_get_with_a_chunked_body_over_64_kib_is_413(scene: Scene) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 4096 + 1):
            yield b"x" * 4096

    response = scene.api.client.request(
        "GET", "/v1/missions", content=chunks(), headers=scene.api.auth("operator")
    )
    assert_problem(response, 413, "payload_too_large")
