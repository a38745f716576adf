"""``MandateGuard.check`` refuses locally: bad signature, wrong typ or issuer, expired,
unbound key, revoked Mandate, ended Mission."""

from __future__ import annotations

import time

import pytest
from mission_ledger_pep import MandateGuard, MandateRefused
from pep_keys import ISSUER, JWKS_URL, Jwks, mandate_token, new_key, sign

KEY = new_key("k1")


def guard() -> MandateGuard:
    return MandateGuard(JWKS_URL, issuer=ISSUER, http=Jwks(KEY).client())


def refused(guard: MandateGuard, token: str, jkt: str | None = "jkt-1") -> str:
    with pytest.raises(MandateRefused) as raised:
        guard.check(token, jkt)
    return raised.value.reason


def test_a_valid_mandate_passes_and_returns_its_claims() -> None:
    assert guard().check(mandate_token(KEY), "jkt-1")["jti"] == "mdt_1"


def test_a_mandate_signed_by_another_key_is_refused() -> None:
    assert refused(guard(), mandate_token(new_key("k1"))) == "credential_invalid"


def test_a_token_of_another_type_is_refused() -> None:
    token = sign(KEY, "JWT", {"iss": ISSUER, "jti": "m", "exp": time.time() + 60})
    assert refused(guard(), token) == "credential_invalid"


def test_a_mandate_of_another_issuer_is_refused() -> None:
    assert refused(guard(), mandate_token(KEY, iss="https://evil.test")) == "credential_invalid"


def test_an_expired_mandate_is_refused() -> None:
    assert refused(guard(), mandate_token(KEY, exp=time.time() - 1)) == "mandate_expired"


def test_a_mandate_bound_to_another_key_is_refused() -> None:
    assert refused(guard(), mandate_token(KEY), jkt="other") == "key_mismatch"


def test_a_mandate_without_a_proven_key_is_refused() -> None:
    assert refused(guard(), mandate_token(KEY), jkt=None) == "key_mismatch"


def test_a_revoked_mandate_is_refused() -> None:
    checker = guard()
    checker.revoke("mdt_1")
    assert refused(checker, mandate_token(KEY)) == "mandate_revoked"


def test_a_mandate_of_a_suspended_mission_is_refused_until_resumed() -> None:
    checker = guard()
    checker.mission_changed("msn_1", "suspended")
    assert refused(checker, mandate_token(KEY)) == "mission_inactive"
    checker.mission_changed("msn_1", "active")
    assert checker.check(mandate_token(KEY), "jkt-1")["jti"] == "mdt_1"
