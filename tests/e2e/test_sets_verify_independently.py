"""Every Security Event Token the service emits verifies with two independent JOSE
libraries (PyJWT and jwcrypto) through the running service's JWKS URL, on each stream
signing algorithm (ES256, EdDSA, RS256), and passes the black-box checks of
reference/standards.md section 10 items 32-34.

One server per backend drives every kind of change that produces a SET (Mission
activation, suspension and revocation, Mandate narrowing, revocation and cascade,
verification, a transmitter-initiated status change) into three poll streams, one per
algorithm; the tests then read what each stream received.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from tests.conftest import BACKENDS, PostgresServer
from tests.e2e.server import PEP_SCOPE, ServerProcess, create_key, proposal_body, store_env

pytestmark = pytest.mark.slow

LIFECYCLE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"
CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
TOKEN_CLAIMS_CHANGE = CAEP + "token-claims-change"
VERIFICATION = SSF + "verification"
STREAM_UPDATED = SSF + "stream-updated"
STREAM_EVENTS = {VERIFICATION, STREAM_UPDATED}
EVERY_TYPE = {LIFECYCLE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE, VERIFICATION, STREAM_UPDATED}
ALGS = ("ES256", "EdDSA", "RS256")
SKEW_SECONDS = 5


@dataclass
class Received:
    """What one stream received: its configuration and every SET, in order."""

    config: dict[str, Any]
    sets: list[str]


@dataclass
class Run:
    url: str
    streams: dict[str, Received]  # by signing algorithm
    verification_state: str

    @property
    def jwks_uri(self) -> str:
        return self.url + "/.well-known/jwks.json"


def _jkt(seed: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode().rstrip("=")


class Driver:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.auth = {
            role: {"Authorization": "Bearer " + create_key(env, role, f"{role}-sets")}
            for role in ("agent", "approver", "operator", "pep", "admin")
        }

    def post(self, path: str, body: Any, role: str, status: int = 200) -> Any:
        response = httpx.post(self.url + path, json=body, headers=self.auth[role], timeout=30)
        assert response.status_code == status, (path, response.text)
        return response.json() if response.content else None

    def mission(self) -> str:
        body = proposal_body(
            "exercise every SET", "agent-sets", ("invoices.read", "invoices.approve")
        )
        proposal = self.post("/v1/proposals", body, "agent", 202)
        return str(
            self.post(f"/v1/proposals/{proposal['submission_id']}/approve", {}, "approver", 201)[
                "id"
            ]
        )

    def mandate(self, mission_id: str, instance: str) -> str:
        body = {
            "actor": {"client_id": "agent-sets", "instance_id": instance},
            "cnf": {"jkt": _jkt(instance)},
        }
        return str(
            self.post(f"/v1/missions/{mission_id}/mandates", body, "agent", 201)["mandate_id"]
        )

    def lifecycle(self, mission_id: str, operation: str) -> None:
        body = {"operation": operation, "reason": f"{operation} for the SET test"}
        self.post(f"/v1/missions/{mission_id}/lifecycle", body, "operator")

    def drain(self, stream_id: str, until: str) -> list[str]:
        """Poll and acknowledge until a SET of type ``until`` has arrived."""
        sets: list[str] = []
        for _ in range(200):
            answer = self.post(f"/ssf/poll/{stream_id}", {"returnImmediately": True}, "pep")
            batch = list(answer["sets"].values())
            sets.extend(batch)
            if batch:
                self.post(
                    f"/ssf/poll/{stream_id}", {"maxEvents": 0, "ack": list(answer["sets"])}, "pep"
                )
            if any(
                until in pyjwt.decode(s, options={"verify_signature": False})["events"]
                for s in batch
            ):
                return sets
            if not batch:
                time.sleep(0.05)  # a moment for the signal log to catch up
        raise AssertionError(f"no {until} SET on stream {stream_id}: {len(sets)} received")


def _drive(url: str, env: dict[str, str]) -> Run:
    driver = Driver(url, env)
    configs = {
        alg: driver.post(
            "/ssf/streams",
            {
                "delivery": {"method": "urn:ietf:rfc:8936"},
                "signing_alg": alg,
                "resources": PEP_SCOPE,
            },
            "pep",
            201,
        )
        for alg in ALGS
    }
    mission = driver.mission()  # lifecycle-change (active)
    narrowed = driver.mandate(mission, "i-narrowed")
    revoked = driver.mandate(mission, "i-revoked")
    driver.post(
        f"/v1/mandates/{narrowed}/narrow",
        {
            "authorization_details": [
                {
                    "type": "mission_resource_access",
                    "resource": "https://erp.example.com",
                    "actions": ["invoices.read"],
                }
            ],
            "reason": "read only from now on",
        },
        "operator",
    )  # token-claims-change
    driver.post(f"/v1/mandates/{revoked}/revoke", {"reason": "compromised"}, "operator")
    driver.lifecycle(mission, "suspend")  # lifecycle-change (suspended)
    driver.post(
        f"/v1/missions/{mission}/lifecycle", {"operation": "resume", "reason": "back"}, "admin"
    )
    driver.lifecycle(mission, "revoke")  # lifecycle-change (revoked) + cascade
    state = "state-" + _jkt(url)[:12]
    for config in configs.values():
        driver.post("/ssf/verify", {"stream_id": config["stream_id"], "state": state}, "pep", 204)
        # An administrator (not the stream's owner) pausing and enabling it: the
        # transmitter-initiated change is announced with stream-updated.
        for status in ("paused", "enabled"):
            driver.post(
                "/ssf/status", {"stream_id": config["stream_id"], "status": status}, "admin"
            )
    streams = {
        alg: Received(config, driver.drain(config["stream_id"], STREAM_UPDATED))
        for alg, config in configs.items()
    }
    for received in streams.values():  # the second stream-updated (enabled), if not yet in
        types = [_claims(s)["events"] for s in received.sets]
        if sum(STREAM_UPDATED in t for t in types) < 2:
            received.sets.extend(driver.drain(received.config["stream_id"], STREAM_UPDATED))
    return Run(url, streams, state)


def _claims(token: str) -> dict[str, Any]:
    return dict(pyjwt.decode(token, options={"verify_signature": False}))


@pytest.fixture(scope="module", params=BACKENDS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp(f"sets-{request.param}")
    database: str | None = None
    pg: PostgresServer | None = None
    if request.param == "sqlite":
        env = store_env(data_dir=tmp / "data")
    else:
        pg = request.getfixturevalue("postgres_server")
        database = pg.create_database(template=pg.template)
        env = store_env(database_url=pg.url_for(database))
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield _drive(server.url, env)
    finally:
        server.stop()
        if pg is not None and database is not None:
            pg.drop_database(database)


def _every_set(run: Run) -> Iterator[tuple[str, Received, str]]:
    for alg, received in run.streams.items():
        for token in received.sets:
            yield alg, received, token


# ---------------------------------------------------------------------- coverage


def test_every_set_type_reaches_every_stream(run: Run) -> None:
    for received in run.streams.values():
        types = {next(iter(_claims(s)["events"])) for s in received.sets}
        assert types == EVERY_TYPE


# ---------------------------------------------------------------------- item 32


def test_every_set_verifies_with_pyjwt_through_the_jwks_url(run: Run) -> None:
    client = pyjwt.PyJWKClient(run.jwks_uri, cache_keys=False)
    for alg, received, token in _every_set(run):
        key = client.get_signing_key_from_jwt(token)
        claims = pyjwt.decode(
            token, key.key, algorithms=[alg], audience=received.config["aud"], issuer=run.url
        )
        assert claims == _claims(token)


def test_every_set_verifies_with_jwcrypto_through_the_jwks_url(run: Run) -> None:
    keyset = jwcrypto_jwk.JWKSet.from_json(httpx.get(run.jwks_uri).text)
    for alg, _, token in _every_set(run):
        signed = jwcrypto_jws.JWS()
        signed.deserialize(token)
        signed.allowed_algs = [alg]
        signed.verify(keyset)  # raises unless a JWKS key verifies it
        assert json.loads(signed.payload) == _claims(token)


def test_every_set_header_is_secevent_jwt_with_the_stream_algorithm_and_a_published_kid(
    run: Run,
) -> None:
    published = {key["kid"]: key for key in httpx.get(run.jwks_uri).json()["keys"]}
    for alg, _, token in _every_set(run):
        header = pyjwt.get_unverified_header(token)
        assert header["typ"] == "secevent+jwt"
        assert header["alg"] == alg != "none"
        assert header["kid"] in published
        assert published[header["kid"]]["alg"] == alg


# ---------------------------------------------------------------------- item 33


def test_every_set_has_iss_iat_jti_aud_sub_id_one_event_and_no_sub_or_exp(run: Run) -> None:
    for _, received, token in _every_set(run):
        claims = _claims(token)
        assert claims["iss"] == run.url
        assert isinstance(claims["iat"], int)
        assert isinstance(claims["jti"], str)
        assert claims["jti"]
        assert claims["aud"] == received.config["aud"]
        assert isinstance(claims["sub_id"], dict)
        assert claims["sub_id"]["format"]
        assert len(claims["events"]) == 1
        event_type = next(iter(claims["events"]))
        # SSF's own stream events (verification, stream-updated) go to every stream.
        assert event_type in received.config["events_delivered"] or event_type in STREAM_EVENTS
        assert "sub" not in claims
        assert "exp" not in claims


def test_jti_is_unique_across_every_stream(run: Run) -> None:
    jtis = [_claims(token)["jti"] for _, _, token in _every_set(run)]
    assert len(jtis) == len(set(jtis))


def test_one_ledger_change_carries_one_txn_on_every_stream(run: Run) -> None:
    by_change: dict[tuple[str, str], set[str]] = {}
    for _, _, token in _every_set(run):
        claims = _claims(token)
        event_type = next(iter(claims["events"]))
        if event_type in STREAM_EVENTS:
            continue  # addressed to one stream only
        change = (event_type, json.dumps(claims["sub_id"], sort_keys=True) + str(claims["events"]))
        by_change.setdefault(change, set()).add(claims["txn"])
    assert by_change
    assert all(len(txns) == 1 for txns in by_change.values()), by_change


# ---------------------------------------------------------------------- item 34


def test_caep_payloads_have_language_maps_an_initiating_entity_and_a_past_timestamp(
    run: Run,
) -> None:
    seen = 0
    for _, _, token in _every_set(run):
        claims = _claims(token)
        event_type, payload = next(iter(claims["events"].items()))
        if not event_type.startswith(CAEP):
            continue
        seen += 1
        assert isinstance(payload["reason_admin"], dict)
        assert payload["reason_admin"]
        assert all(isinstance(text, str) and text for text in payload["reason_admin"].values())
        if "reason_user" in payload:
            assert isinstance(payload["reason_user"], dict)
        assert payload["initiating_entity"] in {"admin", "user", "policy", "system"}
        assert isinstance(payload["event_timestamp"], int)
        assert payload["event_timestamp"] <= claims["iat"] + SKEW_SECONDS
        if event_type == TOKEN_CLAIMS_CHANGE:
            assert isinstance(payload["claims"], dict)
            actions = payload["claims"]["authorization_details"][0]["actions"]
            assert actions == ["invoices.read"]
    assert seen >= 3 * len(ALGS)  # narrowed, revoked, cascaded on every stream


def test_a_cascade_is_initiated_by_policy_and_a_revocation_by_an_admin(run: Run) -> None:
    for received in run.streams.values():
        entities = [
            _claims(s)["events"][SESSION_REVOKED]["initiating_entity"]
            for s in received.sets
            if SESSION_REVOKED in _claims(s)["events"]
        ]
        assert entities == ["admin", "policy"]  # the revoke, then the Mission's cascade


# ---------------------------------------------------------------------- stream events


def test_verification_echoes_the_state_to_the_stream_itself(run: Run) -> None:
    for received in run.streams.values():
        verifications = [_claims(s) for s in received.sets if VERIFICATION in _claims(s)["events"]]
        assert len(verifications) == 1
        assert verifications[0]["events"][VERIFICATION] == {"state": run.verification_state}
        assert verifications[0]["sub_id"] == {
            "format": "opaque",
            "id": received.config["stream_id"],
        }


def test_a_transmitter_initiated_status_change_is_announced_with_stream_updated(
    run: Run,
) -> None:
    for received in run.streams.values():
        updates = [
            _claims(s)["events"][STREAM_UPDATED]
            for s in received.sets
            if STREAM_UPDATED in _claims(s)["events"]
        ]
        assert [u["status"] for u in updates] == ["paused", "enabled"]
