"""The ``as_of`` story shared by the HTTP and CLI replay tests: a Mission is approved,
narrowed (containment), a Mandate is issued under it, the Mission is suspended, the Mandate
is revoked, ten minutes apart. At each step the live Mission and Mandate are read (as an
auditor) and kept with the step's instant, so a later read "as of" that instant can be
compared with what the live read answered then."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.domain.instants import format_instant
from tests.api.conftest import Api, entry
from tests.builders import ERP
from tests.mandate_builders import jkt

CRM = "https://crm.example.com"
STEPS = ["approved", "narrowed", "issued", "suspended", "revoked"]


@dataclass
class Story:
    mission_id: str
    mandate_id: str = ""
    at: dict[str, str] = field(default_factory=dict)
    live_mission: dict[str, dict[str, Any]] = field(default_factory=dict)
    live_mandate: dict[str, dict[str, Any]] = field(default_factory=dict)


def get(api: Api, path: str, who: str = "auditor", **params: str) -> Any:
    return api.client.get(path, params=params, headers=api.auth(who))


def issue(api: Api, mission_id: str) -> dict[str, Any]:
    body = {
        "actor": {"client_id": "agent-1", "instance_id": "i-1"},
        "cnf": {"jkt": jkt()},
        "ttl_seconds": 3600,
    }
    response = api.client.post(
        f"/v1/missions/{mission_id}/mandates", json=body, headers=api.auth("agent")
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def mission_over_two_resources(api: Api) -> dict[str, Any]:
    return api.mission(
        intent=api.intent(resources=[ERP, CRM]),
        authorization_details=[entry(), entry(CRM, ["accounts.read"])],
    )


def tell_story(api: Api) -> Story:
    told = Story(mission_id=mission_over_two_resources(api)["id"])

    def record(step: str) -> None:
        told.at[step] = format_instant(api.clock.now())
        told.live_mission[step] = get(api, f"/v1/missions/{told.mission_id}").json()
        if told.mandate_id:
            told.live_mandate[step] = get(api, f"/v1/mandates/{told.mandate_id}").json()
        api.clock.advance(minutes=10)

    record("approved")
    contained = api.client.post(
        f"/v1/missions/{told.mission_id}/containment",
        json={"contained": [{"resource": CRM}], "reason": "incident"},
        headers=api.auth("operator"),
    )
    assert contained.status_code == 200, contained.text
    record("narrowed")
    told.mandate_id = issue(api, told.mission_id)["mandate_id"]
    record("issued")
    assert api.lifecycle(told.mission_id, "suspend").status_code == 200
    record("suspended")
    revoked = api.client.post(
        f"/v1/mandates/{told.mandate_id}/revoke",
        json={"reason": "done"},
        headers=api.auth("operator"),
    )
    assert revoked.status_code == 200, revoked.text
    record("revoked")
    return told
