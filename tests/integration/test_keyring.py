"""The signing keyring on both stores: signing, independent verification, rotation,
retention, sealing at rest and several processes sharing one store."""

from __future__ import annotations

import base64
import json
import stat
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws
from pydantic import SecretStr

from api.routes import jwks as jwks_route
from ledger.application import Ledger
from ledger.persistence.database import Database
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.algorithms import SUPPORTED_ALGS, UnsupportedAlgorithm, load_private_key
from ledger.signing.keyring import Keyring, NoActiveSigningKey, SignatureInvalid, rotate_signing_key
from ledger.signing.sealing import (
    KEK_ENV_VAR,
    KEK_FILE_NAME,
    KeyEncryptionKey,
    KeyEncryptionKeyError,
    WrongKeyEncryptionKey,
    load_kek,
    unseal,
)
from ledger.signing.store import KEYS_FILE_NAME, open_store
from tests.conftest import T0, MutableClock

KEK = KeyEncryptionKey.generate()
CLAIMS = {"iss": "https://ledger.example", "sub": "user-1", "jti": "mdt_1"}
PAYLOAD = json.dumps(CLAIMS).encode()
HEADER = {"typ": "execution-mandate+jwt"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    """Embedded: no KEK configured (the generated file is used). PostgreSQL: a shared KEK."""
    if store_settings.embedded:
        return store_settings
    return store_settings.model_copy(update={"key_encryption_key": SecretStr(KEK.to_text())})


@pytest.fixture
def database(ledger: Ledger) -> Database:
    return ledger.database


@pytest.fixture
def keyring(settings: Settings, database: Database) -> Keyring:
    return Keyring.open(settings, database)


@pytest.fixture
def second_process(settings: Settings) -> Iterator[Database]:
    """The database as another process would open it: its own connection pool."""
    other = open_ledger(settings)
    yield other.database
    other.close()


def _retention(settings: Settings) -> timedelta:
    return timedelta(days=settings.signing_key_retention_days)


def _published(keyring: Keyring, clock: MutableClock) -> dict[str, Any]:
    """The JWKS as a verifier receives it (through JSON)."""
    return dict(json.loads(json.dumps(keyring.jwks(clock.now()))))


def _kids(keyring: Keyring, clock: MutableClock) -> set[str]:
    return {key["kid"] for key in keyring.jwks(clock.now())["keys"]}


def _sign(keyring: Keyring, clock: MutableClock, alg: str = "ES256") -> str:
    return keyring.sign_compact(HEADER, PAYLOAD, alg=alg, now=clock.now())


def _pyjwt_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    claims: dict[str, Any] = jwt.decode(token, key=key, algorithms=[key.algorithm_name])
    return claims


def _jwcrypto_verify(token: str, jwks: dict[str, Any], alg: str) -> bytes:
    verifier = jwcrypto_jws.JWS()
    verifier.allowed_algs = [alg]
    verifier.deserialize(token, key=jwcrypto_jwk.JWKSet.from_json(json.dumps(jwks)))
    payload: bytes = verifier.payload
    return payload


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", maxsplit=1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_storage(settings: Settings) -> str:
    """Everything the store wrote, as text (the JSON file, or the table's rows)."""
    if settings.embedded:
        return (settings.data_dir / KEYS_FILE_NAME).read_text()
    with psycopg.connect(settings.database_url or "", autocommit=True) as conn:
        rows = conn.execute("SELECT * FROM signing_keys").fetchall()
    return repr(rows)


# ---------------------------------------------------------------------- signing and verifying


def test_ensure_creates_one_active_key_and_then_reuses_it(
    keyring: Keyring, clock: MutableClock
) -> None:
    first = keyring.ensure("ES256", clock.now())
    clock.advance(seconds=1)
    second = keyring.ensure("ES256", clock.now())
    assert first.kid == second.kid
    assert second.status == "active"
    assert [info.kid for info in keyring.infos(clock.now())] == [first.kid]


def test_signing_without_an_active_key_is_refused(keyring: Keyring, clock: MutableClock) -> None:
    with pytest.raises(NoActiveSigningKey):
        _sign(keyring, clock)


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_signatures_verify_with_pyjwt_from_the_public_jwks(
    keyring: Keyring, clock: MutableClock, alg: str
) -> None:
    keyring.ensure(alg, clock.now())
    token = _sign(keyring, clock, alg)
    assert _pyjwt_verify(token, _published(keyring, clock)) == CLAIMS


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_signatures_verify_with_jwcrypto_from_the_public_jwks(
    keyring: Keyring, clock: MutableClock, alg: str
) -> None:
    keyring.ensure(alg, clock.now())
    token = _sign(keyring, clock, alg)
    assert _jwcrypto_verify(token, _published(keyring, clock), alg) == PAYLOAD


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_keyring_verifies_its_own_signature_and_returns_header_and_payload(
    keyring: Keyring, clock: MutableClock, alg: str
) -> None:
    info = keyring.ensure(alg, clock.now())
    token = _sign(keyring, clock, alg)
    header, payload = keyring.verify_compact(token, algorithms=[alg], now=clock.now())
    assert header == {**HEADER, "alg": alg, "kid": info.kid}
    assert payload == PAYLOAD


def test_signed_header_carries_alg_kid_and_the_callers_typ(
    keyring: Keyring, clock: MutableClock
) -> None:
    info = keyring.ensure("ES256", clock.now())
    assert _header(_sign(keyring, clock)) == {
        "typ": "execution-mandate+jwt",
        "alg": "ES256",
        "kid": info.kid,
    }


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_a_signed_batch_keeps_its_order_and_each_token_verifies_independently(
    keyring: Keyring, clock: MutableClock, alg: str
) -> None:
    info = keyring.ensure(alg, clock.now())
    payloads = [json.dumps({**CLAIMS, "jti": f"set-{i}"}).encode() for i in range(20)]
    tokens = keyring.sign_compact_many(HEADER, payloads, alg=alg, now=clock.now())
    jwks = _published(keyring, clock)
    assert len(tokens) == len(payloads)
    for token, payload in zip(tokens, payloads, strict=True):
        assert _header(token) == {**HEADER, "alg": alg, "kid": info.kid}
        assert _jwcrypto_verify(token, jwks, alg) == payload
        assert _pyjwt_verify(token, jwks) == json.loads(payload)
        assert keyring.verify_compact(token, algorithms=[alg], now=clock.now())[1] == payload


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_the_one_token_signer_makes_tokens_that_verify_independently(
    keyring: Keyring, clock: MutableClock, alg: str
) -> None:
    info = keyring.ensure(alg, clock.now())
    sign = keyring.compact_signer(alg)
    jwks = _published(keyring, clock)
    for i in range(3):  # the second and third reuse the encoded header
        payload = json.dumps({**CLAIMS, "jti": f"bt-{i}"}).encode()
        token = sign(HEADER, payload, clock.now())
        assert _header(token) == {**HEADER, "alg": alg, "kid": info.kid}
        assert _jwcrypto_verify(token, jwks, alg) == payload
        assert _pyjwt_verify(token, jwks) == json.loads(payload)


def test_the_one_token_signer_refuses_a_caller_chosen_kid(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    with pytest.raises(ValueError, match="kid"):
        keyring.compact_signer("ES256")({"kid": "x"}, PAYLOAD, clock.now())


def test_a_signed_batch_refuses_a_caller_chosen_kid(keyring: Keyring, clock: MutableClock) -> None:
    keyring.ensure("ES256", clock.now())
    with pytest.raises(ValueError, match="kid"):
        keyring.sign_compact_many({"kid": "x"}, [PAYLOAD], alg="ES256", now=clock.now())


@pytest.mark.parametrize("member", ["alg", "kid"])
def test_callers_cannot_choose_alg_or_kid(
    keyring: Keyring, clock: MutableClock, member: str
) -> None:
    keyring.ensure("ES256", clock.now())
    with pytest.raises(ValueError, match=member):
        keyring.sign_compact({member: "x"}, PAYLOAD, alg="ES256", now=clock.now())


def test_jwks_keys_have_unique_kids_use_sig_alg_and_no_private_members(
    keyring: Keyring, clock: MutableClock
) -> None:
    for alg in SUPPORTED_ALGS:
        keyring.ensure(alg, clock.now())
    keyring.rotate("ES256", clock.now())
    keyring.rotate("EdDSA", clock.now(), activation_delay=timedelta(hours=1))
    keys = _published(keyring, clock)["keys"]
    assert len(keys) == 5
    assert len({key["kid"] for key in keys}) == len(keys)
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] in SUPPORTED_ALGS
        assert not PRIVATE_MEMBERS & set(key)


def test_verification_rejects_a_tampered_payload(keyring: Keyring, clock: MutableClock) -> None:
    keyring.ensure("ES256", clock.now())
    header, _, signature = _sign(keyring, clock).split(".")
    other_claims = _b64url(json.dumps({"sub": "someone-else"}).encode())
    forged = f"{header}.{other_claims}.{signature}"
    with pytest.raises(SignatureInvalid, match="does not verify"):
        keyring.verify_compact(forged, algorithms=["ES256"], now=clock.now())


def test_verification_rejects_an_alg_outside_the_allowlist(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    token = _sign(keyring, clock)
    with pytest.raises(SignatureInvalid, match="not accepted"):
        keyring.verify_compact(token, algorithms=["EdDSA"], now=clock.now())


def test_verification_rejects_unsigned_alg_none_tokens(
    keyring: Keyring, clock: MutableClock
) -> None:
    kid = keyring.ensure("ES256", clock.now()).kid
    header = _b64url(json.dumps({"alg": "none", "kid": kid}).encode())
    with pytest.raises(SignatureInvalid, match="not accepted"):
        keyring.verify_compact(
            f"{header}.{_b64url(PAYLOAD)}.", algorithms=["ES256"], now=clock.now()
        )
    with pytest.raises(UnsupportedAlgorithm):
        keyring.verify_compact(
            f"{header}.{_b64url(PAYLOAD)}.", algorithms=["none"], now=clock.now()
        )


def test_verification_rejects_a_kid_of_another_alg(keyring: Keyring, clock: MutableClock) -> None:
    kid = keyring.ensure("ES256", clock.now()).kid
    header = _b64url(json.dumps({"alg": "RS256", "kid": kid}).encode())
    token = f"{header}.{_b64url(PAYLOAD)}.{_b64url(b'x' * 256)}"
    with pytest.raises(SignatureInvalid, match="is a ES256 key"):
        keyring.verify_compact(token, algorithms=["ES256", "RS256"], now=clock.now())


def test_verification_rejects_an_unknown_kid(keyring: Keyring, clock: MutableClock) -> None:
    keyring.ensure("ES256", clock.now())
    header = _b64url(json.dumps({"alg": "ES256", "kid": "unknown"}).encode())
    token = f"{header}.{_b64url(PAYLOAD)}.{_b64url(b'x' * 64)}"
    with pytest.raises(SignatureInvalid, match="not a published signing key"):
        keyring.verify_compact(token, algorithms=["ES256"], now=clock.now())


def test_verification_rejects_garbage(keyring: Keyring, clock: MutableClock) -> None:
    with pytest.raises(SignatureInvalid, match="well-formed"):
        keyring.verify_compact("not.a-jws", algorithms=["ES256"], now=clock.now())


# ---------------------------------------------------------------------- rotation and retention


def test_rotation_keeps_the_old_kid_published(keyring: Keyring, clock: MutableClock) -> None:
    old = keyring.ensure("ES256", clock.now())
    new = keyring.rotate("ES256", clock.now())
    assert {old.kid, new.kid} <= _kids(keyring, clock)


def test_after_rotation_new_signatures_carry_the_new_kid(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    new = keyring.rotate("ES256", clock.now())
    assert _header(_sign(keyring, clock))["kid"] == new.kid
    assert keyring.active("ES256", clock.now()).kid == new.kid


def test_tokens_signed_before_rotation_still_verify_independently_after_it(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    before = _sign(keyring, clock)
    clock.advance(days=30)
    keyring.rotate("ES256", clock.now())
    after = _sign(keyring, clock)
    jwks = _published(keyring, clock)
    assert _pyjwt_verify(before, jwks) == _pyjwt_verify(after, jwks) == CLAIMS
    assert _jwcrypto_verify(before, jwks, "ES256") == PAYLOAD
    assert keyring.verify_compact(before, algorithms=["ES256"], now=clock.now())[1] == PAYLOAD


def test_retired_key_stays_published_until_the_retention_period_ends(
    keyring: Keyring, clock: MutableClock, settings: Settings
) -> None:
    old = keyring.ensure("ES256", clock.now())
    keyring.rotate("ES256", clock.now())
    clock.advance(seconds=_retention(settings).total_seconds() - 1)
    assert old.kid in _kids(keyring, clock)


def test_retired_key_drops_out_of_the_jwks_after_the_retention_period(
    keyring: Keyring, clock: MutableClock, settings: Settings
) -> None:
    old = keyring.ensure("ES256", clock.now())
    new = keyring.rotate("ES256", clock.now())
    clock.advance(seconds=_retention(settings).total_seconds())
    assert _kids(keyring, clock) == {new.kid}
    assert old.kid in {info.kid for info in keyring.infos(clock.now())}  # kept in the store


def test_retired_key_stops_verifying_after_the_retention_period(
    keyring: Keyring, clock: MutableClock, settings: Settings
) -> None:
    keyring.ensure("ES256", clock.now())
    token = _sign(keyring, clock)
    keyring.rotate("ES256", clock.now())
    clock.advance(seconds=_retention(settings).total_seconds())
    with pytest.raises(SignatureInvalid, match="not a published signing key"):
        keyring.verify_compact(token, algorithms=["ES256"], now=clock.now())


def test_pending_key_is_published_but_does_not_sign_before_activation(
    keyring: Keyring, clock: MutableClock
) -> None:
    current = keyring.ensure("ES256", clock.now())
    pending = keyring.rotate("ES256", clock.now(), activation_delay=timedelta(minutes=10))
    assert pending.status == "pending"
    assert pending.kid in _kids(keyring, clock)
    clock.advance(minutes=10, microseconds=-1)
    assert _header(_sign(keyring, clock))["kid"] == current.kid


def test_pending_key_signs_from_its_activation(keyring: Keyring, clock: MutableClock) -> None:
    keyring.ensure("ES256", clock.now())
    pending = keyring.rotate("ES256", clock.now(), activation_delay=timedelta(minutes=10))
    clock.advance(minutes=10)
    assert _header(_sign(keyring, clock))["kid"] == pending.kid


def test_infos_report_each_keys_status_and_retirement(
    keyring: Keyring, clock: MutableClock
) -> None:
    first = keyring.ensure("ES256", clock.now())
    second = keyring.rotate("ES256", clock.now(), activation_delay=timedelta(hours=1))
    clock.advance(hours=2)
    third = keyring.rotate("ES256", clock.now(), activation_delay=timedelta(hours=1))
    infos = {info.kid: info for info in keyring.infos(clock.now())}
    assert (infos[first.kid].status, infos[first.kid].retired_at) == (
        "retired",
        T0 + timedelta(hours=1),
    )
    assert (infos[second.kid].status, infos[second.kid].retired_at) == ("active", None)
    assert (infos[third.kid].status, infos[third.kid].activates_at) == (
        "pending",
        T0 + timedelta(hours=3),
    )
    assert [infos[k].generation for k in (first.kid, second.kid, third.kid)] == [1, 2, 3]


def test_a_newer_rotation_overrides_an_earlier_scheduled_key(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    scheduled = keyring.rotate("ES256", clock.now(), activation_delay=timedelta(hours=1))
    forced = keyring.rotate("ES256", clock.now())
    clock.advance(hours=2)
    assert keyring.active("ES256", clock.now()).kid == forced.kid
    assert scheduled.kid in _kids(keyring, clock)  # never signed, still published for a while


def test_rotation_rejects_a_negative_activation_delay(
    keyring: Keyring, clock: MutableClock
) -> None:
    with pytest.raises(ValueError, match="negative"):
        keyring.rotate("ES256", clock.now(), activation_delay=timedelta(seconds=-1))


# ---------------------------------------------------------------------- at rest


def test_keys_survive_reopening_the_store(
    keyring: Keyring, clock: MutableClock, settings: Settings, database: Database
) -> None:
    info = keyring.ensure("EdDSA", clock.now())
    token = _sign(keyring, clock, "EdDSA")
    reopened = Keyring.open(settings, database)
    assert reopened.active("EdDSA", clock.now()).kid == info.kid
    assert reopened.verify_compact(token, algorithms=["EdDSA"], now=clock.now())[1] == PAYLOAD


def test_a_wrong_key_encryption_key_fails_loudly(
    keyring: Keyring, clock: MutableClock, settings: Settings, database: Database
) -> None:
    keyring.ensure("ES256", clock.now())
    wrong = settings.model_copy(
        update={"key_encryption_key": SecretStr(KeyEncryptionKey.generate().to_text())}
    )
    with pytest.raises(WrongKeyEncryptionKey, match=KEK_ENV_VAR):
        Keyring.open(wrong, database)


@pytest.mark.parametrize("alg", SUPPORTED_ALGS)
def test_stored_keys_hold_no_plaintext_private_key_material(
    keyring: Keyring, clock: MutableClock, settings: Settings, database: Database, alg: str
) -> None:
    info = keyring.ensure(alg, clock.now())
    record = next(k for k in open_store(settings, database).load() if k.kid == info.kid)
    private = load_private_key(
        unseal(load_kek(settings), record.sealed_private_key, kid=info.kid, alg=alg), alg
    )
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if isinstance(private, ec.EllipticCurvePrivateKey):
        d = _b64url(private.private_numbers().private_value.to_bytes(32, "big"))
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        d = _b64url(private.private_bytes_raw())
    else:
        d = _b64url(private.private_numbers().d.to_bytes(256, "big"))
    raw = _raw_storage(settings)
    assert info.kid in raw
    for secret in (d, _b64url(der), base64.b64encode(der).decode(), "PRIVATE KEY", '"d"'):
        assert secret not in raw


def test_keys_file_is_readable_by_its_owner_only(tmp_path: Path, clock: MutableClock) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    Keyring.open(settings, None).ensure("ES256", clock.now())
    for name in (KEYS_FILE_NAME, KEK_FILE_NAME):
        assert stat.S_IMODE((settings.data_dir / name).stat().st_mode) == 0o600


def test_a_lost_kek_file_is_not_silently_replaced(tmp_path: Path, clock: MutableClock) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    Keyring.open(settings, None).ensure("ES256", clock.now())
    (settings.data_dir / KEK_FILE_NAME).unlink()
    with pytest.raises(KeyEncryptionKeyError, match="missing"):
        Keyring.open(settings, None)
    assert not (settings.data_dir / KEK_FILE_NAME).exists()


@pytest.mark.postgres
def test_postgres_refuses_to_open_without_a_kek(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url)
    ledger = open_ledger(settings)
    try:
        with pytest.raises(KeyEncryptionKeyError, match=KEK_ENV_VAR):
            Keyring.open(settings, ledger.database)
    finally:
        ledger.close()


# ---------------------------------------------------------------------- several processes


def test_two_keyrings_see_each_others_rotation_after_refresh(
    keyring: Keyring, clock: MutableClock, settings: Settings, second_process: Database
) -> None:
    keyring.ensure("ES256", clock.now())
    other = Keyring.open(settings, second_process)
    rotated = other.rotate("ES256", clock.now())
    assert rotated.kid not in _kids(keyring, clock)
    keyring.refresh()
    assert rotated.kid in _kids(keyring, clock)
    assert keyring.active("ES256", clock.now()).kid == rotated.kid


def test_an_unknown_kid_reloads_the_store_before_it_is_rejected(
    keyring: Keyring, clock: MutableClock, settings: Settings, second_process: Database
) -> None:
    keyring.ensure("ES256", clock.now())
    other = Keyring.open(settings, second_process)
    other.rotate("ES256", clock.now())
    token = other.sign_compact(HEADER, PAYLOAD, alg="ES256", now=clock.now())
    assert keyring.verify_compact(token, algorithms=["ES256"], now=clock.now())[1] == PAYLOAD


def test_unknown_kids_reload_the_store_at_most_once_per_interval(
    keyring: Keyring, clock: MutableClock, settings: Settings, second_process: Database
) -> None:
    keyring.ensure("ES256", clock.now())
    bogus_header = _b64url(json.dumps({"alg": "ES256", "kid": "bogus"}).encode())
    bogus = f"{bogus_header}.{_b64url(PAYLOAD)}.{_b64url(b'x' * 64)}"
    with pytest.raises(SignatureInvalid):
        keyring.verify_compact(bogus, algorithms=["ES256"], now=clock.now())  # reloads once
    other = Keyring.open(settings, second_process)
    other.rotate("ES256", clock.now())
    token = other.sign_compact(HEADER, PAYLOAD, alg="ES256", now=clock.now())
    clock.advance(seconds=1)
    with pytest.raises(SignatureInvalid, match="not a published"):
        keyring.verify_compact(token, algorithms=["ES256"], now=clock.now())
    clock.advance(seconds=keyring.miss_refresh_interval.total_seconds())
    assert keyring.verify_compact(token, algorithms=["ES256"], now=clock.now())[1] == PAYLOAD


def test_concurrent_ensure_creates_a_single_key(
    clock: MutableClock, settings: Settings, database: Database, second_process: Database
) -> None:
    keyrings = [Keyring.open(settings, database), Keyring.open(settings, second_process)]
    barrier = threading.Barrier(len(keyrings))
    kids: list[str] = []

    def start(keyring: Keyring) -> None:
        barrier.wait()
        kids.append(keyring.ensure("ES256", clock.now()).kid)

    threads = [threading.Thread(target=start, args=(k,)) for k in keyrings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(kids) == 2
    assert len(set(kids)) == 1
    assert len(open_store(settings, database).load()) == 1


def test_rotate_signing_key_adds_a_key_running_servers_pick_up(
    keyring: Keyring, clock: MutableClock, settings: Settings
) -> None:
    keyring.ensure("ES256", clock.now())
    info = rotate_signing_key(
        settings, alg="ES256", activate_in=timedelta(minutes=5), now=clock.now()
    )
    assert info.status == "pending"
    keyring.refresh()
    assert info.kid in _kids(keyring, clock)
    clock.advance(minutes=5)
    assert keyring.active("ES256", clock.now()).kid == info.kid


# ---------------------------------------------------------------------- the HTTP route


def _jwks_client(keyring: Keyring, clock: MutableClock) -> TestClient:
    app = FastAPI()
    app.include_router(jwks_route.router)
    app.state.services = SimpleNamespace(keyring=keyring, clock=clock)
    return TestClient(app)


def test_jwks_endpoint_serves_the_public_keys_with_cache_headers(
    keyring: Keyring, clock: MutableClock
) -> None:
    keyring.ensure("ES256", clock.now())
    keyring.ensure("EdDSA", clock.now())
    with _jwks_client(keyring, clock) as client:
        response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwk-set+json"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.json() == _published(keyring, clock)


def test_jwks_endpoint_shows_another_process_rotation_once_its_view_is_stale(
    keyring: Keyring, clock: MutableClock, settings: Settings, second_process: Database
) -> None:
    keyring.ensure("ES256", clock.now())
    with _jwks_client(keyring, clock) as client:
        client.get("/.well-known/jwks.json")
        rotated = Keyring.open(settings, second_process).rotate("ES256", clock.now())
        clock.advance(seconds=jwks_route.REFRESH_AFTER.total_seconds())
        kids = {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}
    assert rotated.kid in kids
