"""Subject and approver rules over HTTP (SPEC 7.3): a ``subject_token`` from a trusted issuer
(a real OpenID Provider on loopback) makes the subject ``asserted``; a token that does not
verify is 400 ``subject_unverified``; ``require_subject_assertion`` refuses unasserted
proposals; an approver below ``controls.acr``, or the subject approving write authority for
itself, is 403 ``approval_not_allowed`` naming the rule. Every refusal writes nothing.

The rules do not depend on the store, so these run on the embedded store only."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.clock import SystemClock
from ledger.settings import Settings
from tests.api.conftest import ROLES, Api, assert_problem, entry, issue_keys
from tests.conftest import MutableClock
from tests.oidc_issuer import OidcIssuer, new_key, serve_issuer

ACCESS_AUDIENCE = "https://ledger.example.com"
READ_ONLY = ["invoices.read", "invoices.list"]


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with serve_issuer() as served:
        yield served


@contextmanager
def _api(tmp_path: Path, clock: MutableClock, issuer: OidcIssuer, **settings: Any) -> Iterator[Api]:
    configured = Settings(
        data_dir=tmp_path / "data",
        subject_issuers=[issuer.url],
        oauth_issuer=issuer.url,
        oauth_jwks_uri=issuer.url + "/jwks.json",
        oauth_audience=ACCESS_AUDIENCE,
        **settings,
    )
    with TestClient(create_app(configured, clock=clock)) as client:
        yield Api(client=client, keys=issue_keys(client), clock=clock, settings=configured)


@pytest.fixture
def api(tmp_path: Path, clock: MutableClock, issuer: OidcIssuer) -> Iterator[Api]:
    with _api(tmp_path, clock, issuer) as made:
        yield made


@pytest.fixture
def strict_api(tmp_path: Path, clock: MutableClock, issuer: OidcIssuer) -> Iterator[Api]:
    with _api(tmp_path, clock, issuer, require_subject_assertion=True) as made:
        yield made


def subject_token(api: Api, issuer: OidcIssuer, typ: str | None = None, **claims: Any) -> str:
    return issuer.token(now=api.clock.now(), typ=typ, aud=api.settings.public_issuer, **claims)


def submit(api: Api, **body: Any) -> Any:
    return api.client.post(
        "/v1/proposals", json=api.proposal_body(**body), headers=api.auth("agent")
    )


def asserted_body(
    api: Api, issuer: OidcIssuer, typ: str | None = None, **claims: Any
) -> dict[str, Any]:
    """A proposal naming its subject only through a subject_token."""
    body = api.proposal_body(subject_token=subject_token(api, issuer, typ, **claims))
    del body["subject"]
    return body


def approve_as(api: Api, submission_id: str, headers: dict[str, str]) -> Any:
    return api.client.post(f"/v1/proposals/{submission_id}/approve", json={}, headers=headers)


def jwt_approver(issuer: OidcIssuer, **claims: Any) -> dict[str, str]:
    """An approver's access token (verified at the real time, as every access token is)."""
    token = issuer.token(
        now=SystemClock().now(), aud=ACCESS_AUDIENCE, scope="mission_ledger.approver", **claims
    )
    return {"Authorization": f"Bearer {token}"}


def with_acr(api: Api, acr: str) -> dict[str, Any]:
    intent = api.intent()
    intent["controls"] = {"acr": acr}
    return intent


def refused_without_writing(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    head = api.head()
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    problem = assert_problem(response, 400, "subject_unverified")
    assert api.head() == head
    return problem


def payload_of(compact: str) -> dict[str, Any]:
    part = compact.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


# ------------------------------------------------------------------ assertion


def test_a_verified_subject_token_makes_the_mission_subject_asserted(
    api: Api, issuer: OidcIssuer
) -> None:
    submitted = api.client.post(
        "/v1/proposals", json=asserted_body(api, issuer), headers=api.auth("agent")
    )
    assert submitted.status_code == 202, submitted.text
    approved = api.approve(submitted.json()["submission_id"])
    assert approved.status_code == 201, approved.text
    mission = api.get_mission(approved.json()["id"])
    assert mission["subject"] == {"iss": issuer.url, "sub": "alice"}
    assert mission["subject_provenance"] == "asserted"
    assert "subject_attested_by" not in mission


def test_an_id_jag_subject_token_is_accepted(api: Api, issuer: OidcIssuer) -> None:
    body = asserted_body(api, issuer, typ="oauth-id-jag+jwt")
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert response.status_code == 202, response.text
    assert response.json()["subject_provenance"] == "asserted"


def test_an_asserted_subject_is_asserted_in_mission_status(api: Api, issuer: OidcIssuer) -> None:
    proposal = api.client.post(
        "/v1/proposals", json=asserted_body(api, issuer), headers=api.auth("agent")
    ).json()
    mission = api.approve(proposal["submission_id"]).json()
    response = api.client.post(
        "/mission-status", data={"mission_id": mission["id"]}, headers=api.auth("pep")
    )
    assert response.status_code == 200, response.text
    described = payload_of(response.text)["mission"]
    assert described["subject_provenance"] == "asserted"
    assert described["subject"] == {"iss": issuer.url, "sub": "alice"}


def test_the_proposal_view_shows_the_subject_provenance(api: Api, issuer: OidcIssuer) -> None:
    proposal = api.client.post(
        "/v1/proposals", json=asserted_body(api, issuer), headers=api.auth("agent")
    ).json()
    response = api.client.get(
        f"/v1/proposals/{proposal['submission_id']}", headers=api.auth("approver")
    )
    assert response.json()["subject_provenance"] == "asserted"


def test_a_subject_without_a_token_is_attested_by_the_approver(api: Api) -> None:
    mission = api.mission()
    assert mission["subject_provenance"] == "attested"
    assert mission["subject_attested_by"] == {
        "iss": api.settings.public_issuer,
        "sub": ROLES["approver"],
    }


def test_a_subject_given_beside_a_matching_token_is_accepted(api: Api, issuer: OidcIssuer) -> None:
    body = api.proposal_body(
        subject={"iss": issuer.url, "sub": "alice"}, subject_token=subject_token(api, issuer)
    )
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert response.status_code == 202, response.text


# ------------------------------------------------------------------ tokens that do not verify


def test_an_unsigned_subject_token_is_400_and_writes_nothing(api: Api, issuer: OidcIssuer) -> None:
    body = api.proposal_body(
        subject_token=issuer.unsigned(now=api.clock.now(), aud=api.settings.public_issuer)
    )
    del body["subject"]
    refused_without_writing(api, body)


def test_an_expired_subject_token_is_400_and_writes_nothing(api: Api, issuer: OidcIssuer) -> None:
    past = int((api.clock.now() - timedelta(hours=1)).timestamp())
    refused_without_writing(api, asserted_body(api, issuer, iat=past - 300, exp=past))


def test_a_wrongly_signed_subject_token_is_400_and_writes_nothing(
    api: Api, issuer: OidcIssuer
) -> None:
    impostor = new_key(issuer.key.kid)  # same kid, another key
    token = issuer.token(now=api.clock.now(), aud=api.settings.public_issuer, key=impostor)
    body = api.proposal_body(subject_token=token)
    del body["subject"]
    refused_without_writing(api, body)


def test_a_subject_token_from_an_untrusted_issuer_is_400(api: Api, issuer: OidcIssuer) -> None:
    refused_without_writing(api, asserted_body(api, issuer, iss="https://evil.example.com"))


def test_a_subject_token_for_another_audience_is_400(api: Api, issuer: OidcIssuer) -> None:
    body = api.proposal_body(
        subject_token=issuer.token(now=api.clock.now(), aud="https://other.example.com")
    )
    del body["subject"]
    refused_without_writing(api, body)


def test_a_subject_that_differs_from_the_token_is_400(api: Api, issuer: OidcIssuer) -> None:
    body = api.proposal_body(subject_token=subject_token(api, issuer, sub="mallory"))
    problem = refused_without_writing(api, body)
    assert problem["errors"][0]["pointer"] == "/subject"


# ------------------------------------------------------------------ require_subject_assertion


def test_an_unasserted_proposal_is_400_when_assertion_is_required(strict_api: Api) -> None:
    refused_without_writing(strict_api, strict_api.proposal_body())


def test_an_asserted_proposal_is_accepted_when_assertion_is_required(
    strict_api: Api, issuer: OidcIssuer
) -> None:
    response = strict_api.client.post(
        "/v1/proposals", json=asserted_body(strict_api, issuer), headers=strict_api.auth("agent")
    )
    assert response.status_code == 202, response.text


# ------------------------------------------------------------------ approver rules


def refused_approval(api: Api, submission_id: str, headers: dict[str, str], rule: str) -> None:
    head = api.head()
    problem = assert_problem(approve_as(api, submission_id, headers), 403, "approval_not_allowed")
    assert problem["rule"] == rule
    assert rule in problem["detail"]
    assert api.head() == head


def test_the_subject_may_not_approve_write_authority_for_itself(
    api: Api, issuer: OidcIssuer
) -> None:
    proposal = api.submit(subject={"iss": issuer.url, "sub": "alice"})
    refused_approval(api, proposal["submission_id"], jwt_approver(issuer), "approver_is_subject")


def test_an_api_key_approver_may_not_approve_write_authority_for_itself(api: Api) -> None:
    subject = {"iss": api.settings.public_issuer, "sub": ROLES["approver"]}
    proposal = api.submit(subject=subject)
    refused_approval(api, proposal["submission_id"], api.auth("approver"), "approver_is_subject")


def test_the_subject_may_approve_read_only_authority_for_itself(
    api: Api, issuer: OidcIssuer
) -> None:
    proposal = api.submit(
        subject={"iss": issuer.url, "sub": "alice"},
        authorization_details=[entry(actions=READ_ONLY)],
    )
    response = approve_as(api, proposal["submission_id"], jwt_approver(issuer))
    assert response.status_code == 201, response.text


def test_an_api_key_approver_does_not_meet_controls_acr(api: Api) -> None:
    proposal = api.submit(intent=with_acr(api, "phr"))
    refused_approval(api, proposal["submission_id"], api.auth("approver"), "acr_not_met")


def test_a_jwt_approver_with_another_acr_does_not_meet_controls_acr(
    api: Api, issuer: OidcIssuer
) -> None:
    proposal = api.submit(intent=with_acr(api, "phr"))
    headers = jwt_approver(issuer, sub="bob", acr="pwd")
    refused_approval(api, proposal["submission_id"], headers, "acr_not_met")


def test_a_jwt_approver_with_the_required_acr_approves(api: Api, issuer: OidcIssuer) -> None:
    proposal = api.submit(intent=with_acr(api, "phr"))
    headers = jwt_approver(issuer, sub="bob", acr="phr")
    response = approve_as(api, proposal["submission_id"], headers)
    assert response.status_code == 201, response.text
