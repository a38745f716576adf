"""Every SET is verified before it is acted on: a wrong key, a wrong ``aud``, a tampered
token or a wrong ``typ`` is rejected and counted, and reaches no callback and no guard; a
rotated key is fetched on first sight of its ``kid``."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from mission_ledger_pep import MandateGuard, SignalSubscriber
from mission_ledger_pep.jwks import JwksCache
from pep_keys import AUDIENCE, ISSUER, JWKS_URL, Jwks, new_key, revoked_set, sign


class Harness:
    def __init__(self, tmp_path: Path, jwks: Jwks) -> None:
        self.seen: list[dict[str, Any]] = []
        self.guard = MandateGuard(JWKS_URL, issuer=ISSUER, http=jwks.client())
        self.subscriber = SignalSubscriber(
            "https://ledger.test",
            "key",
            "s1",
            cursor_path=tmp_path / "cursor",
            on_mandate_revoked=self.seen.append,
            on_event=self.seen.append,
            guard=self.guard,
            issuer=ISSUER,
            audience=AUDIENCE,
        )
        self.subscriber.jwks = JwksCache(JWKS_URL, http=jwks.client(), min_refresh_interval=0)

    def deliver(self, token: str) -> None:
        self.subscriber._deliver(token)


@pytest.fixture
def trusted() -> Any:
    return new_key("k1")


@pytest.fixture
def harness(tmp_path: Path, trusted: Any) -> Harness:
    return Harness(tmp_path, Jwks(trusted))


def assert_rejected(harness: Harness, code: str) -> None:
    assert harness.subscriber.rejected[code] == 1
    assert harness.seen == []
    assert not harness.guard.is_revoked("mdt_1")


def test_a_valid_set_reaches_the_callbacks_and_the_guard(harness: Harness, trusted: Any) -> None:
    harness.deliver(revoked_set(trusted, "mdt_1"))
    assert len(harness.seen) == 2
    assert harness.guard.is_revoked("mdt_1")
    assert harness.subscriber.rejected_total == 0


def test_set_signed_by_a_key_not_in_the_jwks_is_rejected(harness: Harness) -> None:
    harness.deliver(revoked_set(new_key("k1"), "mdt_1"))  # same kid, another key
    assert_rejected(harness, "bad_signature")


def test_set_with_an_unknown_kid_is_rejected(harness: Harness) -> None:
    harness.deliver(revoked_set(new_key("intruder"), "mdt_1"))
    assert_rejected(harness, "unknown_key")


def test_set_for_another_audience_is_rejected(harness: Harness, trusted: Any) -> None:
    harness.deliver(revoked_set(trusted, "mdt_1", aud="gateway-2"))
    assert_rejected(harness, "wrong_aud")


def test_set_from_another_issuer_is_rejected(harness: Harness, trusted: Any) -> None:
    harness.deliver(revoked_set(trusted, "mdt_1", iss="https://evil.test"))
    assert_rejected(harness, "wrong_iss")


def test_tampered_set_is_rejected(harness: Harness, trusted: Any) -> None:
    header, payload, signature = revoked_set(trusted, "mdt_0").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub_id"]["session"]["id"] = "mdt_1"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    harness.deliver(f"{header}.{forged}.{signature}")
    assert_rejected(harness, "bad_signature")


def test_token_of_another_type_is_rejected(harness: Harness, trusted: Any) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": 1, "jti": "x", "sub_id": {}, "events": {}}
    harness.deliver(sign(trusted, "JWT", claims))
    assert_rejected(harness, "wrong_typ")


def test_rotated_key_is_fetched_on_first_sight_of_its_kid(tmp_path: Path, trusted: Any) -> None:
    jwks = Jwks(trusted)
    harness = Harness(tmp_path, jwks)
    harness.deliver(revoked_set(trusted, "mdt_0"))
    fetched = jwks.fetches
    rotated = new_key("k2")
    jwks.keys.append(rotated)
    harness.deliver(revoked_set(rotated, "mdt_1"))
    assert jwks.fetches == fetched + 1
    assert harness.guard.is_revoked("mdt_1")
    assert harness.subscriber.rejected_total == 0
