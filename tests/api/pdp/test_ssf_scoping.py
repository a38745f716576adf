"""Signal scoping (SPEC 7.3): a PEP's stream names the ``resources`` it guards and carries
only the Missions and Mandates whose authority touches one of them; only an admin may run
an unscoped stream, which carries everything. Read through poll here (SSE: tests/e2e/
test_sse_scoping.py; push: test_ssf_push.py): every delivery method reads the one SET log,
which is scoped when it is written."""

from __future__ import annotations

from typing import Any

import jwt as pyjwt
import pytest

from ledger.domain.streams import LIFECYCLE_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE
from tests.api.pdp.conftest import Harness

A = "https://erp.example.com/orders"
B = "https://crm.example.com/contacts"


def entry(resource: str, **members: Any) -> dict[str, Any]:
    return {"type": "mission_resource_access", "resource": resource, "actions": ["read"], **members}


def create(h: Harness, body: dict[str, Any], who: str = "pep") -> str:
    response = h.client.post("/ssf/streams", json=body, headers=h.auth(who))
    assert response.status_code == 201, response.text
    return str(response.json()["stream_id"])


def received(h: Harness, stream_id: str, who: str = "pep") -> list[dict[str, Any]]:
    """Every SET the stream holds, as claims, oldest first."""
    response = h.client.post(
        f"/ssf/poll/{stream_id}", json={"returnImmediately": True}, headers=h.auth(who)
    )
    assert response.status_code == 200, response.text
    tokens = response.json()["sets"].values()
    decoded = [pyjwt.decode(t, options={"verify_signature": False}) for t in tokens]
    return sorted(decoded, key=lambda c: c["iat"])


def missions_in(sets: list[dict[str, Any]]) -> set[str]:
    return {
        c["events"][LIFECYCLE_CHANGE]["mission"]["id"]
        for c in sets
        if LIFECYCLE_CHANGE in c["events"]
    }


def sessions_in(sets: list[dict[str, Any]], event_type: str) -> list[str]:
    return [c["sub_id"]["session"]["id"] for c in sets if event_type in c["events"]]


def revoke(h: Harness, mission: str) -> None:
    response = h.client.post(
        f"/v1/missions/{mission}/lifecycle",
        json={"operation": "revoke", "reason": "scoping test"},
        headers=h.auth("operator"),
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------- what a stream carries


def test_a_pep_stream_carries_missions_over_its_resources_and_never_others(
    harness: Harness,
) -> None:
    stream = create(harness, {"resources": [A]})
    over_a = harness.mission([entry(A)])
    over_b = harness.mission([entry(B)])
    revoke(harness, over_b)
    revoke(harness, over_a)
    sets = received(harness, stream)
    assert missions_in(sets) == {over_a}
    states = [c["events"][LIFECYCLE_CHANGE]["state"] for c in sets]
    assert states == ["active", "revoked"]


def test_a_stream_resource_covers_what_lies_below_it(harness: Harness) -> None:
    stream = create(harness, {"resources": ["https://erp.example.com/"]})
    below = harness.mission([entry(A)])
    harness.mission([entry(B)])
    assert missions_in(received(harness, stream)) == {below}


def test_a_mission_over_a_prefix_containing_the_stream_resource_is_carried(
    harness: Harness,
) -> None:
    stream = create(harness, {"resources": [A + "/42"]})
    wider = harness.mission([entry("https://erp.example.com/", resource_match="prefix")])
    harness.mission([entry(A + "/43")])
    assert missions_in(received(harness, stream)) == {wider}


def test_mandate_sets_follow_their_own_authority(harness: Harness) -> None:
    mission = harness.mission([entry(A), entry(B)])
    harness.mandate(mission, details=[entry(B)], instance="i-b")
    both = harness.mandate(mission, instance="i-ab")
    stream = create(harness, {"resources": [A]})
    revoke(harness, mission)
    assert sessions_in(received(harness, stream), SESSION_REVOKED) == [both["mandate_id"]]


def test_a_narrowing_reaches_the_streams_of_the_resources_it_took_away(
    harness: Harness,
) -> None:
    mission = harness.mission([entry(A), entry(B)])
    mandate = harness.mandate(mission, instance="i-1")
    stream = create(harness, {"resources": [A]})
    response = harness.client.post(
        f"/v1/mandates/{mandate['mandate_id']}/narrow",
        json={"authorization_details": [entry(B)], "reason": "drop A"},
        headers=harness.auth("operator"),
    )
    assert response.status_code == 200, response.text
    assert sessions_in(received(harness, stream), TOKEN_CLAIMS_CHANGE) == [mandate["mandate_id"]]


def test_an_admin_stream_without_resources_carries_everything(harness: Harness) -> None:
    stream = create(harness, {}, who="admin")
    over_a = harness.mission([entry(A)])
    over_b = harness.mission([entry(B)])
    assert missions_in(received(harness, stream, "admin")) == {over_a, over_b}


def test_an_admin_stream_with_resources_is_scoped_too(harness: Harness) -> None:
    stream = create(harness, {"resources": [B]}, who="admin")
    harness.mission([entry(A)])
    over_b = harness.mission([entry(B)])
    assert missions_in(received(harness, stream, "admin")) == {over_b}


def test_new_resources_scope_the_sets_raised_after_the_change(harness: Harness) -> None:
    stream = create(harness, {"resources": [A]})
    over_a = harness.mission([entry(A)])
    response = harness.client.patch(
        "/ssf/streams", json={"stream_id": stream, "resources": [B]}, headers=harness.auth("pep")
    )
    assert response.status_code == 200, response.text
    assert response.json()["resources"] == [B]
    harness.mission([entry(A)])
    over_b = harness.mission([entry(B)])
    assert missions_in(received(harness, stream)) == {over_a, over_b}


# ---------------------------------------------------------------------- refused configurations


def _refused(harness: Harness, method: str, body: dict[str, Any], code: str) -> None:
    head = harness.head()
    response = harness.client.request(
        method, "/ssf/streams", json=body, headers=harness.auth("pep")
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code
    assert problem["errors"][0]["pointer"].startswith("/resources")
    assert harness.head() == head


def test_a_pep_stream_without_resources_is_refused(harness: Harness) -> None:
    poll_only = {"delivery": {"method": "urn:ietf:rfc:8936"}}
    _refused(harness, "POST", poll_only, "stream_resources_required")
    assert harness.client.get("/ssf/streams", headers=harness.auth("pep")).json() == []


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_pep_may_not_drop_its_streams_resources(harness: Harness, method: str) -> None:
    stream = create(harness, {"resources": [A]})
    _refused(harness, method, {"stream_id": stream, "resources": None}, "stream_resources_required")


@pytest.mark.parametrize(
    "resources",
    [[], "https://erp.example.com", ["not a uri"], ["https://x.example.com/#f"], [7]],
    ids=["empty", "not-an-array", "not-a-uri", "fragment", "not-a-string"],
)
def test_malformed_resources_are_refused(harness: Harness, resources: object) -> None:
    _refused(harness, "POST", {"resources": resources}, "invalid_request")
