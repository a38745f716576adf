"""``Idempotency-Key`` (SPEC 6.2): scoped to the credential; the same key with the same body
returns the original response (same ids, same status) and writes nothing; the same key with
a different body is 409 problem+json ``idempotency_conflict``."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem, entry
from tests.builders import ERP

pytestmark = pytest.mark.postgres_smoke  # concurrent replays race on each backend's locks

KEY = {"Idempotency-Key": "req-0001"}


@dataclass(frozen=True)
class Write:
    name: str
    who: str
    path: str
    status: int
    body: Callable[[Api], dict[str, Any]]
    other_body: Callable[[Api], dict[str, Any]]
    identity: str  # the member naming what was written


WRITES = [
    Write(
        "submit",
        "agent",
        "/v1/proposals",
        202,
        lambda a: a.proposal_body(),
        lambda a: a.proposal_body(instance_id="other"),
        "submission_id",
    ),
    Write(
        "approve",
        "approver",
        "/v1/proposals/{proposal}/approve",
        201,
        lambda _: {},
        lambda _: {"authorization_details": [entry(actions=["invoices.read"])]},
        "id",
    ),
    Write(
        "deny",
        "approver",
        "/v1/proposals/{proposal}/deny",
        200,
        lambda _: {"reason": "no"},
        lambda _: {"reason": "never"},
        "submission_id",
    ),
    Write(
        "cancel",
        "agent",
        "/v1/proposals/{proposal}/cancel",
        200,
        lambda _: {"reason": "no"},
        lambda _: {"reason": "never"},
        "submission_id",
    ),
    Write(
        "lifecycle",
        "operator",
        "/v1/missions/{mission}/lifecycle",
        200,
        lambda _: {"operation": "suspend", "reason": "incident"},
        lambda _: {"operation": "revoke", "reason": "incident"},
        "id",
    ),
    Write(
        "containment",
        "operator",
        "/v1/missions/{mission}/containment",
        200,
        lambda _: {"contained": [{"resource": ERP, "actions": ["invoices.read"]}], "reason": "x"},
        lambda _: {"contained": [{"resource": ERP}], "reason": "x"},
        "id",
    ),
    Write(
        "expansion",
        "agent",
        "/v1/missions/{mission}/expansion",
        202,
        lambda a: {"intent": a.intent(), "authorization_details": [entry()]},
        lambda a: {"intent": a.intent(days=20), "authorization_details": [entry()]},
        "submission_id",
    ),
]


@dataclass
class Targets:
    api: Api
    proposal: str
    mission: str

    def send(
        self, write: Write, body: dict[str, Any], *, who: str | None = None, **headers: str
    ) -> Any:
        path = write.path.format(proposal=self.proposal, mission=self.mission)
        return self.api.client.post(
            path, json=body, headers=self.api.auth(who or write.who, **headers)
        )


@pytest.fixture
def targets(api: Api) -> Targets:
    return Targets(api=api, proposal=api.submit()["submission_id"], mission=api.mission()["id"])


by_write = pytest.mark.parametrize("write", WRITES, ids=[w.name for w in WRITES])


@by_write
def test_the_same_key_and_body_replays_the_original_response(
    targets: Targets, write: Write
) -> None:
    api = targets.api
    first = targets.send(write, write.body(api), **KEY)
    assert first.status_code == write.status, first.text
    head = api.head()
    again = targets.send(write, write.body(api), **KEY)
    assert again.status_code == write.status, again.text
    assert again.json()[write.identity] == first.json()[write.identity]
    assert again.json()["version"] == first.json()["version"]
    assert again.headers["Ledger-Position"] == first.headers["Ledger-Position"]
    assert api.head() == head


@by_write
def test_the_same_key_with_another_body_is_409_idempotency_conflict(
    targets: Targets, write: Write
) -> None:
    api = targets.api
    assert targets.send(write, write.body(api), **KEY).status_code == write.status
    head = api.head()
    response = targets.send(write, write.other_body(api), **KEY)
    body = assert_problem(response, 409, "idempotency_conflict")
    assert body["type"].endswith("idempotency_conflict")
    assert api.head() == head


def test_a_replay_answers_the_original_even_after_later_changes(api: Api) -> None:
    mission = api.mission()
    path = f"/v1/missions/{mission['id']}/lifecycle"
    body = {"operation": "suspend", "reason": "incident"}
    first = api.client.post(path, json=body, headers=api.auth("operator", **KEY))
    assert api.lifecycle(mission["id"], "resume", who="admin").status_code == 200
    head = api.head()
    again = api.client.post(path, json=body, headers=api.auth("operator", **KEY))
    assert again.status_code == 200
    assert again.json()["state"] == "suspended"
    assert again.json()["version"] == first.json()["version"] == 2
    assert api.head() == head
    assert api.get_mission(mission["id"])["state"] == "active"


def test_the_body_is_compared_as_json_not_as_bytes(api: Api) -> None:
    body = api.proposal_body()
    compact = json.dumps(body, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    headers = api.auth("agent", **KEY, **{"Content-Type": "application/json"})
    first = api.client.post("/v1/proposals", content=compact, headers=headers)
    head = api.head()
    again = api.client.post("/v1/proposals", content=spaced, headers=headers)
    assert again.status_code == 202
    assert again.json()["submission_id"] == first.json()["submission_id"]
    assert api.head() == head


def test_keys_are_scoped_to_the_credential(api: Api) -> None:
    body = api.proposal_body()
    mine = api.client.post("/v1/proposals", json=body, headers=api.auth("agent", **KEY))
    admins = api.client.post("/v1/proposals", json=body, headers=api.auth("admin", **KEY))
    assert mine.status_code == admins.status_code == 202
    assert mine.json()["submission_id"] != admins.json()["submission_id"]


def test_another_credential_may_reuse_a_key_with_its_own_body(api: Api) -> None:
    mine = api.client.post(
        "/v1/proposals", json=api.proposal_body(), headers=api.auth("agent", **KEY)
    )
    theirs = api.client.post(
        "/v1/proposals",
        json=api.proposal_body(client="agent2"),
        headers=api.auth("agent2", **KEY),
    )
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["submission_id"] != theirs.json()["submission_id"]
    assert theirs.json()["client_id"] == "agent-2"


def test_a_key_reused_on_another_endpoint_is_409_idempotency_conflict(api: Api) -> None:
    mission = api.mission()
    api.client.post(
        f"/v1/missions/{mission['id']}/lifecycle",
        json={"operation": "suspend", "reason": "incident"},
        headers=api.auth("operator", **KEY),
    )
    head = api.head()
    response = api.client.post(
        f"/v1/missions/{mission['id']}/containment",
        json={"contained": [{"resource": ERP}], "reason": "incident"},
        headers=api.auth("operator", **KEY),
    )
    assert_problem(response, 409, "idempotency_conflict")
    assert api.head() == head


def test_requests_without_a_key_are_not_deduplicated(api: Api) -> None:
    body = api.proposal_body()
    first = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    second = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert first.json()["submission_id"] != second.json()["submission_id"]


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"], ids=["empty", "too-long", "control"])
def test_an_invalid_key_is_400(api: Api, key: str) -> None:
    head = api.head()
    response = api.client.post(
        "/v1/proposals",
        json=api.proposal_body(),
        headers=api.auth("agent", **{"Idempotency-Key": key}),
    )
    assert_problem(response, 400, "invalid_request")
    assert api.head() == head


def test_concurrent_retries_with_one_key_write_once(api: Api) -> None:
    body = api.proposal_body()
    head = api.head()

    def send(_: int) -> Any:
        return api.client.post("/v1/proposals", json=body, headers=api.auth("agent", **KEY))

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(send, range(6)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses]
    assert len({r.json()["submission_id"] for r in responses}) == 1
    assert api.head() == head + 1
