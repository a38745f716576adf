"""The durable SET log: which changes become SETs, for which streams, in what order."""

from __future__ import annotations

import json
from typing import Any

import jwt as pyjwt
import pytest
from pydantic import SecretStr

from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.delegation import ActorRef
from ledger.domain.states import Operation
from ledger.domain.streams import (
    LIFECYCLE_CHANGE,
    POLL,
    SESSION_REVOKED,
    TOKEN_CLAIMS_CHANGE,
    VERIFICATION,
    StreamStatus,
)
from ledger.persistence.snapshots import StateCodec
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from projections.follower import LogFollower
from projections.signals import SignalLog
from tests.builders import ADMIN, OPERATOR, active_mission
from tests.mandate_builders import delegable_authority, jkt, mission_with

PEP = Actor(type="api_key", name="pep-1", role="pep")
KEK = SecretStr("lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA")


class Signals:
    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.keyring = Keyring.open(
            settings.model_copy(update={"key_encryption_key": KEK}), ledger.database
        )
        for alg in ("ES256", "RS256"):
            self.keyring.ensure(alg, ledger.clock.now())
        self.follower = LogFollower(
            ledger,
            durable=[SignalLog(StateCodec(ledger.mapper.transcoder), self.keyring, ledger.issuer)],
        )

    def stream(self, **config: Any) -> str:
        written = self.ledger.create_stream(
            actor=PEP, aud="pep-1", receiver_config={"delivery": {"method": POLL}, **config}
        )
        return written.value.stream_id

    def log(self, stream_id: str) -> list[dict[str, Any]]:
        self.follower.catch_up()
        rows = self.ledger.database.fetchall(
            "SELECT seq, jti, event_type, set_jwt FROM set_log WHERE stream_id = %s ORDER BY seq",
            (stream_id,),
        )
        return [dict(r) for r in rows]

    def claims(self, token: str) -> dict[str, Any]:
        header, payload = self.keyring.verify_compact(
            token, algorithms=("ES256", "RS256", "EdDSA"), now=self.ledger.clock.now()
        )
        assert header["typ"] == "secevent+jwt"
        return dict(json.loads(payload))


@pytest.fixture
def signals(ledger: Ledger, store_settings: Settings) -> Signals:
    return Signals(ledger, store_settings)


def test_every_mission_transition_is_a_lifecycle_change(signals: Signals) -> None:
    stream = signals.stream()
    mission = active_mission(signals.ledger)
    for operation, who in ((Operation.SUSPEND, OPERATOR), (Operation.RESUME, ADMIN)):
        signals.ledger.change_lifecycle(
            actor=who, mission_id=mission.id, operation=operation, reason="t"
        )
    signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="done"
    )
    rows = signals.log(stream)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    states = [signals.claims(r["set_jwt"])["events"][LIFECYCLE_CHANGE]["state"] for r in rows]
    assert states == ["active", "suspended", "active", "revoked"]


def test_set_claims_follow_the_ssf_profile(signals: Signals) -> None:
    stream = signals.stream()
    mission = active_mission(signals.ledger)
    claims = signals.claims(signals.log(stream)[0]["set_jwt"])
    assert {"iss", "iat", "jti", "aud", "txn", "sub_id", "events"} <= set(claims)
    assert "sub" not in claims
    assert "exp" not in claims
    assert claims["aud"] == "pep-1"
    assert claims["sub_id"] == {"format": "opaque", "id": mission.id}
    assert list(claims["events"]) == [LIFECYCLE_CHANGE]
    event = claims["events"][LIFECYCLE_CHANGE]
    assert event["version"] == 1
    assert "prior_state" not in event


def test_mandate_revocation_is_session_revoked_with_a_complex_subject(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    mandate = signals.ledger.issue_mandate(
        actor=PEP,
        mission_id=mission.id,
        holder=ActorRef(client_id="agent-1", instance_id="i-1"),
        jkt=jkt(),
    ).value
    signals.ledger.revoke_mandate(actor=OPERATOR, mandate_id=mandate.id, reason="compromised")
    last = signals.claims(signals.log(stream)[-1]["set_jwt"])
    event = last["events"][SESSION_REVOKED]
    assert event["initiating_entity"] == "admin"
    assert event["reason_admin"]["en"]
    assert isinstance(event["event_timestamp"], int)
    assert event["event_timestamp"] <= last["iat"]
    assert last["sub_id"]["format"] == "complex"
    assert last["sub_id"]["session"] == {"format": "opaque", "id": mandate.id}
    assert last["sub_id"]["user"]["format"] == "iss_sub"


def test_narrowing_is_token_claims_change_with_the_new_claims(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    mandate = signals.ledger.issue_mandate(
        actor=PEP,
        mission_id=mission.id,
        holder=ActorRef(client_id="agent-1", instance_id="i-1"),
        jkt=jkt(),
    ).value
    narrower = [delegable_authority()[1]]
    signals.ledger.narrow_mandate(
        actor=OPERATOR, mandate_id=mandate.id, authorization_details=narrower, reason="tighten"
    )
    last = signals.claims(signals.log(stream)[-1]["set_jwt"])
    event = last["events"][TOKEN_CLAIMS_CHANGE]
    assert event["claims"]["authorization_details"] == narrower
    assert event["claims"]["mandate_version"] == 2


def test_every_set_of_a_cascade_has_its_own_jti(signals: Signals) -> None:
    stream = signals.stream()
    mission = mission_with(signals.ledger, delegable_authority())
    for instance in ("i-1", "i-2"):
        signals.ledger.issue_mandate(
            actor=PEP,
            mission_id=mission.id,
            holder=ActorRef(client_id="agent-1", instance_id=instance),
            jkt=jkt(),
        )
    signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    )
    rows = signals.log(stream)
    kinds = [r["event_type"] for r in rows]
    assert kinds.count(SESSION_REVOKED) == 2
    jtis = [r["jti"] for r in rows]
    assert len(set(jtis)) == len(jtis)


def test_each_stream_gets_its_own_gap_free_sequence(signals: Signals) -> None:
    first = signals.stream()
    active_mission(signals.ledger)
    second = signals.stream()
    active_mission(signals.ledger)
    assert [r["seq"] for r in signals.log(first)] == [1, 2]
    assert [r["seq"] for r in signals.log(second)] == [1]


def test_events_requested_filters_the_stream(signals: Signals) -> None:
    stream = signals.stream(events_requested=[SESSION_REVOKED])
    active_mission(signals.ledger)
    assert signals.log(stream) == []


def test_paused_stream_holds_and_disabled_drops(signals: Signals) -> None:
    paused = signals.stream()
    disabled = signals.stream()
    signals.ledger.set_stream_status(
        actor=PEP, stream_id=paused, status=StreamStatus.PAUSED, reason=None
    )
    signals.ledger.set_stream_status(
        actor=PEP, stream_id=disabled, status=StreamStatus.DISABLED, reason=None
    )
    active_mission(signals.ledger)
    assert len(signals.log(paused)) == 1
    assert signals.log(disabled) == []


def test_removed_subject_is_left_out(signals: Signals) -> None:
    stream = signals.stream()
    mission = active_mission(signals.ledger)
    signals.ledger.remove_stream_subject(
        stream_id=stream, subject={"format": "opaque", "id": mission.id}
    )
    signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
    )
    other = active_mission(signals.ledger)
    ids = [signals.claims(r["set_jwt"])["sub_id"]["id"] for r in signals.log(stream)]
    assert ids == [mission.id, other.id]


def test_verification_emits_a_verification_set_for_that_stream(signals: Signals) -> None:
    stream = signals.stream()
    signals.ledger.request_verification(stream_id=stream, state="abc")
    claims = signals.claims(signals.log(stream)[-1]["set_jwt"])
    assert claims["events"] == {VERIFICATION: {"state": "abc"}}
    assert claims["sub_id"] == {"format": "opaque", "id": stream}


def test_rs256_streams_are_signed_with_rs256(signals: Signals) -> None:
    stream = signals.stream(signing_alg="RS256")
    active_mission(signals.ledger)
    token = signals.log(stream)[0]["set_jwt"]
    assert pyjwt.get_unverified_header(token)["alg"] == "RS256"


def test_rebuilding_the_signal_log_repeats_the_same_sets(signals: Signals) -> None:
    stream = signals.stream()
    mission = active_mission(signals.ledger)
    signals.ledger.change_lifecycle(
        actor=OPERATOR, mission_id=mission.id, operation=Operation.REVOKE, reason="t"
    )
    before = [(r["seq"], r["jti"]) for r in signals.log(stream)]
    signals.follower.rebuild("signal_log")
    assert [(r["seq"], r["jti"]) for r in signals.log(stream)] == before
