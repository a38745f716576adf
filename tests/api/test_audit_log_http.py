"""GET /v1/audit/log (SPEC 7.4): every event in position order with actor and chain hash,
paged by position; auditors and admins only."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api, assert_problem


def _page(api: Api, who: str = "auditor", **params: Any) -> dict[str, Any]:
    response = api.client.get("/v1/audit/log", params=params, headers=api.auth(who))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _all(api: Api, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        page = _page(api, after=after, limit=limit)
        entries += page["data"]
        if page["next_after"] is None:
            return entries
        after = page["next_after"]


def test_the_log_lists_every_event_in_position_order_up_to_the_head(api: Api) -> None:
    api.mission()
    entries = _all(api, limit=1000)
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions)
    assert positions[-1] == api.head()


def test_paging_by_position_neither_skips_nor_repeats(api: Api) -> None:
    api.mission()
    api.mission()
    assert _all(api, limit=3) == _all(api, limit=1000)


def test_each_entry_names_its_aggregate_actor_and_chain_hash(api: Api) -> None:
    mission = api.mission()
    [approved] = [e for e in _all(api, limit=1000) if e["originator_id"] == mission["id"]]
    assert approved["version"] == 1
    assert approved["topic"].startswith("mission-ledger:Mission.")
    assert approved["actor"]["name"] == "approver-1"
    assert len(bytes.fromhex(approved["chain_hash"])) == 32


def test_the_chain_hashes_match_the_mission_history(api: Api) -> None:
    mission = api.mission()
    history = {e["position"]: e["chain_hash"] for e in api.events(mission["id"])}
    logged = {
        e["position"]: e["chain_hash"] for e in _all(api, limit=1000) if e["position"] in history
    }
    assert logged == history


def test_an_operator_may_not_read_the_audit_log(api: Api) -> None:
    response = api.client.get("/v1/audit/log", headers=api.auth("operator"))
    assert_problem(response, 403, "forbidden")


def test_a_limit_above_the_maximum_is_400(api: Api) -> None:
    response = api.client.get("/v1/audit/log?limit=1001", headers=api.auth("auditor"))
    assert response.status_code == 400
