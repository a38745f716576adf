"""Key binding (SPEC 7.3): a Mandate permits only for a caller that has shown it holds the
key the Mandate is bound to (``cnf.jkt``), by the thumbprint the PEP verified
(``context.proof.jkt``) or by the DPoP proof itself (``context.proof.dpop``), which the
PDP verifies."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from ledger.settings import Settings
from tests.api.pdp.conftest import Harness, _started, server_settings
from tests.api.pdp.test_authzen_decisions import entry
from tests.conftest import MutableClock

HTM = "POST"
HTU = "https://erp.example.com/invoices/7"


class Holder:
    """An agent instance's key pair, as its DPoP client would hold it."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256")
        self.jkt = self.key.thumbprint()

    def dpop(self, *, iat: float, htm: str = HTM, htu: str = HTU, jti: str | None = None) -> str:
        header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": self.key.as_dict(private=False)}
        claims = {"htm": htm, "htu": htu, "iat": int(iat), "jti": jti or secrets.token_hex(8)}
        return jws.serialize_compact(header, json.dumps(claims).encode(), self.key)


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def issued(harness: Harness, holder: Holder) -> dict[str, Any]:
    mission = harness.mission([entry()])
    return harness.mandate(mission, key=holder.jkt)


@pytest.fixture(params=["process", "inline"])
def checking(
    request: pytest.FixtureRequest, store_settings: Settings, clock: MutableClock
) -> Iterator[Harness]:
    """A server whose DPoP signatures are checked by its checker process (ready before the
    test starts, and checking every one the test sends), or by the server itself."""
    settings = server_settings(store_settings, proof_verifier=request.param)
    for started in _started(settings, clock):
        proofs = started.client.app.state.services.proofs  # type: ignore[attr-defined]
        if request.param == "process":
            assert started.client.portal.call(proofs.wait_ready)  # type: ignore[union-attr]
        yield started
        assert proofs.checked_here == 0 or request.param == "inline"


@pytest.fixture
def bound(checking: Harness, holder: Holder) -> dict[str, Any]:
    """A Mandate bound to ``holder``'s key, on the ``checking`` server."""
    return checking.mandate(checking.mission([entry()]), key=holder.jkt)


def _body(mandate: str, proof: dict[str, Any] | None) -> dict[str, Any]:
    context: dict[str, Any] = {"mandate": mandate}
    if proof is not None:
        context["proof"] = proof
    return {
        "subject": {"type": "agent", "id": "agent-1", "properties": {"instance_id": "i-1"}},
        "action": {"name": "invoices.pay"},
        "resource": {"type": "api", "id": HTU},
        "context": context,
    }


def _reason(harness: Harness, body: dict[str, Any]) -> str | None:
    answer = harness.evaluate(body)
    return None if answer["decision"] else str(answer["context"]["reason"])


def _dpop(proof: str, htm: str = HTM, htu: str = HTU) -> dict[str, str]:
    return {"dpop": proof, "htm": htm, "htu": htu}


def test_the_bound_thumbprint_permits(
    harness: Harness, issued: dict[str, Any], holder: Holder
) -> None:
    assert _reason(harness, _body(issued["token"], {"jkt": holder.jkt})) is None


def test_no_proof_is_key_mismatch(harness: Harness, issued: dict[str, Any]) -> None:
    assert _reason(harness, _body(issued["token"], None)) == "key_mismatch"


def test_another_keys_thumbprint_is_key_mismatch(harness: Harness, issued: dict[str, Any]) -> None:
    assert _reason(harness, _body(issued["token"], {"jkt": Holder().jkt})) == "key_mismatch"


def test_a_valid_dpop_proof_permits(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    proof = holder.dpop(iat=checking.clock.now().timestamp())
    assert _reason(checking, _body(bound["token"], _dpop(proof))) is None
    proofs = checking.client.app.state.services.proofs  # type: ignore[attr-defined]
    assert proofs.checked_apart + proofs.checked_here == 1  # its signature was checked once


def test_metrics_count_the_signature_checks_by_where_they_were_made(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    for _ in range(2):
        proof = holder.dpop(iat=checking.clock.now().timestamp())
        assert _reason(checking, _body(bound["token"], _dpop(proof))) is None
    text = checking.client.get("/metrics", headers=checking.auth("operator")).text
    proofs = checking.client.app.state.services.proofs  # type: ignore[attr-defined]
    by = "checker" if proofs.pid is not None else "server"
    assert f'mission_ledger_dpop_signature_checks_total{{by="{by}"}} 2.0' in text


def test_a_dpop_proof_by_another_key_is_key_mismatch(
    checking: Harness, bound: dict[str, Any]
) -> None:
    proof = Holder().dpop(iat=checking.clock.now().timestamp())
    assert _reason(checking, _body(bound["token"], _dpop(proof))) == "key_mismatch"


def test_a_stale_dpop_iat_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    proof = holder.dpop(iat=checking.clock.now().timestamp() - 61)
    assert _reason(checking, _body(bound["token"], _dpop(proof))) == "key_mismatch"


def test_a_replayed_dpop_jti_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    proof = holder.dpop(iat=checking.clock.now().timestamp())
    assert _reason(checking, _body(bound["token"], _dpop(proof))) is None
    assert _reason(checking, _body(bound["token"], _dpop(proof))) == "key_mismatch"


def test_a_dpop_proof_for_another_url_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    proof = holder.dpop(iat=checking.clock.now().timestamp(), htu="https://erp.example.com/other")
    assert _reason(checking, _body(bound["token"], _dpop(proof))) == "key_mismatch"


def test_a_dpop_proof_for_another_method_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    proof = holder.dpop(iat=checking.clock.now().timestamp(), htm="GET")
    assert _reason(checking, _body(bound["token"], _dpop(proof))) == "key_mismatch"


def test_a_tampered_dpop_proof_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    header, payload, signature = holder.dpop(iat=checking.clock.now().timestamp()).split(".")
    other = Holder().dpop(iat=checking.clock.now().timestamp(), htu="https://erp.example.com/x")
    tampered = ".".join([header, other.split(".")[1], signature])
    assert payload != other.split(".")[1]
    assert _reason(checking, _body(bound["token"], _dpop(tampered))) == "key_mismatch"


def _resigned(proof: str, other: str) -> str:
    """``proof`` with the signature of ``other`` (a proof of the same key)."""
    return ".".join([*proof.split(".")[:2], other.split(".")[2]])


def test_a_dpop_proof_whose_signature_does_not_verify_is_key_mismatch(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    now = checking.clock.now().timestamp()
    forged = _resigned(holder.dpop(iat=now), holder.dpop(iat=now))
    answer = checking.evaluate(_body(bound["token"], _dpop(forged)))
    assert answer["decision"] is False
    assert answer["context"]["reason"] == "key_mismatch"
    assert "signature" in answer["context"]["reason_admin"]["en"]


def test_a_proof_that_does_not_verify_does_not_use_up_its_jti(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    now = checking.clock.now().timestamp()
    genuine = holder.dpop(iat=now, jti="jti-1")
    forged = _resigned(holder.dpop(iat=now, jti="jti-1", htu=HTU + "?x"), genuine)
    assert _reason(checking, _body(bound["token"], _dpop(forged))) == "key_mismatch"
    assert _reason(checking, _body(bound["token"], _dpop(genuine))) is None


def _revoked(h: Harness, mandate_id: str) -> None:
    response = h.client.post(
        f"/v1/mandates/{mandate_id}/revoke", json={"reason": "test"}, headers=h.auth("admin")
    )
    assert response.status_code == 200, response.text


def test_a_proof_that_does_not_verify_is_key_mismatch_whatever_else_the_decision_found(
    checking: Harness, bound: dict[str, Any], holder: Holder
) -> None:
    _revoked(checking, bound["mandate_id"])
    now = checking.clock.now().timestamp()
    genuine = holder.dpop(iat=now)
    assert _reason(checking, _body(bound["token"], _dpop(genuine))) == "credential_invalid"
    forged = _resigned(holder.dpop(iat=now), genuine)
    assert _reason(checking, _body(bound["token"], _dpop(forged))) == "key_mismatch"


def test_a_verified_proof_is_used_up_even_by_a_decision_that_denied_before_the_key_check(
    checking: Harness, holder: Holder
) -> None:
    mission = checking.mission([entry()])
    revoked = checking.mandate(mission, key=holder.jkt)
    live = checking.mandate(mission, key=holder.jkt)
    _revoked(checking, revoked["mandate_id"])
    proof = holder.dpop(iat=checking.clock.now().timestamp())
    assert _reason(checking, _body(revoked["token"], _dpop(proof))) == "credential_invalid"
    assert _reason(checking, _body(live["token"], _dpop(proof))) == "key_mismatch"


def test_a_key_mismatch_is_not_requestable_and_names_the_check(
    harness: Harness, issued: dict[str, Any]
) -> None:
    answer = harness.evaluate(_body(issued["token"], {"jkt": Holder().jkt}))
    assert "cnf.jkt" in answer["context"]["reason_admin"]["en"]
    assert "access_request" not in answer["context"]


@pytest.fixture
def relaxed(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    """MISSION_LEDGER_REQUIRE_PROOF=false (development)."""
    settings = server_settings(store_settings, require_proof=False)
    yield from _started(settings, clock)


def test_without_require_proof_a_token_permits_without_a_proof(relaxed: Harness) -> None:
    mission = relaxed.mission([entry()])
    token = relaxed.mandate(mission)["token"]
    assert _reason(relaxed, _body(token, None)) is None


def test_without_require_proof_a_wrong_proof_still_denies(relaxed: Harness) -> None:
    mission = relaxed.mission([entry()])
    token = relaxed.mandate(mission)["token"]
    assert _reason(relaxed, _body(token, {"jkt": Holder().jkt})) == "key_mismatch"


def test_a_bare_mandate_id_needs_a_proof_even_without_require_proof(relaxed: Harness) -> None:
    mission = relaxed.mission([entry()])
    holder = Holder()
    mandate_id = relaxed.mandate(mission, key=holder.jkt)["mandate_id"]
    assert _reason(relaxed, _body(mandate_id, None)) == "key_mismatch"
    assert _reason(relaxed, _body(mandate_id, {"jkt": holder.jkt})) is None


def test_join_mode_needs_a_proof_even_without_require_proof(relaxed: Harness) -> None:
    mission = relaxed.mission([entry()])
    issuer = relaxed.client.get("/.well-known/mission-authority-server").json()["issuer"]
    body = _body("unused", None)
    body["subject"] = {"type": "agent", "id": "agent-1"}
    body["context"] = {"mission": {"id": mission, "issuer": issuer}}
    assert _reason(relaxed, body) == "key_mismatch"
    body["context"]["proof"] = {"jkt": Holder().jkt}
    assert _reason(relaxed, body) is None


@pytest.fixture
def small_replay_cache(store_settings: Settings, clock: MutableClock) -> Iterator[Harness]:
    """MISSION_LEDGER_DPOP_REPLAY_CACHE_SIZE=2."""
    settings = server_settings(store_settings, dpop_replay_cache_size=2)
    yield from _started(settings, clock)


def test_a_full_replay_cache_refuses_new_proofs_rather_than_forget_one(
    small_replay_cache: Harness, holder: Holder
) -> None:
    h = small_replay_cache
    token = h.mandate(h.mission([entry()]), key=holder.jkt)["token"]
    now = h.clock.now().timestamp()
    first, second, third = (holder.dpop(iat=now) for _ in range(3))
    assert _reason(h, _body(token, _dpop(first))) is None
    assert _reason(h, _body(token, _dpop(second))) is None
    assert _reason(h, _body(token, _dpop(third))) == "key_mismatch"
    assert _reason(h, _body(token, _dpop(first))) == "key_mismatch"  # still remembered
