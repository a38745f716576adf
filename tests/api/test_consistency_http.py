"""Read-your-writes (SPEC 6.5): every write answers with ``Ledger-Position`` and only once
this replica's read models include it; every read honours ``Ledger-Min-Position`` (waiting
up to 2 s, then 503 ``stale_state``); a malformed position is 400."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem, entry, pointers
from tests.builders import ERP

pytestmark = pytest.mark.postgres_smoke  # read-your-writes waits on each backend's follower

MIN = "Ledger-Min-Position"


def _reads(api: Api) -> list[tuple[str, str]]:
    """Every governance read, as (who, path), on a fresh Mission and proposal."""
    mission = api.mission()
    proposal = api.submit()
    return [
        ("operator", "/v1/missions"),
        ("operator", f"/v1/missions/{mission['id']}"),
        ("auditor", f"/v1/missions/{mission['id']}/events"),
        ("approver", "/v1/proposals"),
        ("approver", f"/v1/proposals/{proposal['submission_id']}"),
    ]


def test_every_write_answers_with_its_ledger_position(api: Api) -> None:
    positions: list[int] = []

    def position_of(response: Any, status: int) -> None:
        assert response.status_code == status, response.text
        position = int(response.headers["Ledger-Position"])
        assert position == api.head()
        positions.append(position)

    submitted = api.client.post(
        "/v1/proposals", json=api.proposal_body(), headers=api.auth("agent")
    )
    position_of(submitted, 202)
    approved = api.approve(submitted.json()["submission_id"])
    position_of(approved, 201)
    mission_id = approved.json()["id"]
    position_of(api.lifecycle(mission_id, "suspend"), 200)
    position_of(api.lifecycle(mission_id, "resume", who="admin"), 200)
    position_of(
        api.client.post(
            f"/v1/missions/{mission_id}/containment",
            json={"contained": [{"resource": ERP, "actions": ["invoices.read"]}], "reason": "x"},
            headers=api.auth("operator"),
        ),
        200,
    )
    expansion = api.client.post(
        f"/v1/missions/{mission_id}/expansion",
        json={"intent": api.intent(), "authorization_details": [entry()]},
        headers=api.auth("agent"),
    )
    position_of(expansion, 202)
    position_of(
        api.client.post(
            f"/v1/proposals/{expansion.json()['submission_id']}/deny",
            json={"reason": "no"},
            headers=api.auth("approver"),
        ),
        200,
    )
    other = api.submit()
    position_of(
        api.client.post(
            f"/v1/proposals/{other['submission_id']}/cancel",
            json={"reason": "no"},
            headers=api.auth("agent"),
        ),
        200,
    )
    position_of(api.lifecycle(mission_id, "revoke"), 200)
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


def test_the_position_of_a_mission_write_is_its_events_position(api: Api) -> None:
    mission = api.mission()
    response = api.lifecycle(mission["id"], "suspend")
    assert int(response.headers["Ledger-Position"]) == api.events(mission["id"])[-1]["position"]


def test_a_write_that_changes_nothing_answers_the_current_position(api: Api) -> None:
    mission = api.mission()
    suspended = api.lifecycle(mission["id"], "suspend")
    again = api.lifecycle(mission["id"], "suspend")
    assert again.headers["Ledger-Position"] == suspended.headers["Ledger-Position"]


def test_a_write_is_visible_to_the_next_read_without_waiting(api: Api) -> None:
    mission = api.mission()
    api.lifecycle(mission["id"], "suspend")
    listed = api.client.get("/v1/missions?state=suspended", headers=api.auth("operator"))
    assert [m["id"] for m in listed.json()["data"]] == [mission["id"]]
    proposal = api.submit()
    inbox = api.client.get("/v1/proposals?status=pending", headers=api.auth("approver"))
    assert proposal["submission_id"] in [p["submission_id"] for p in inbox.json()["data"]]


def test_every_read_answers_at_the_position_of_a_write(api: Api) -> None:
    reads = _reads(api)
    written = api.lifecycle(api.mission()["id"], "suspend")
    position = written.headers["Ledger-Position"]
    for who, path in reads:
        response = api.client.get(path, headers=api.auth(who, **{MIN: position}))
        assert response.status_code == 200, (path, response.text)


def test_a_position_far_beyond_the_head_is_503_stale_state_after_waiting(api: Api) -> None:
    mission = api.mission()
    head = api.head()
    started = time.monotonic()
    response = api.client.get(
        f"/v1/missions/{mission['id']}",
        headers=api.auth("operator", **{MIN: str(head + 1_000_000)}),
    )
    waited = time.monotonic() - started
    body = assert_problem(response, 503, "stale_state")
    assert body["requested"] == head + 1_000_000
    assert waited >= api.settings.read_your_writes_timeout_seconds * 0.9
    assert api.head() == head


@pytest.mark.parametrize(
    "value", ["abc", "-1", "1.5", "0x10", " ", "9" * 19, "1e3", "\u00b2", "\u00b9"]
)
def test_a_malformed_min_position_is_400_on_every_read(api: Api, value: str) -> None:
    # (The test client re-encodes a non-ASCII header as UTF-8: a raw Latin-1 "²", which
    # str.isdigit takes and int refuses, is sent by tests/e2e/test_raw_headers.py.)
    header = value.encode("latin-1")
    for who, path in _reads(api):
        response = api.client.get(path, headers={**api.auth(who), MIN: header})
        assert_problem(response, 400, "invalid_request")
        assert pointers(response) == [f"/headers/{MIN}"]
