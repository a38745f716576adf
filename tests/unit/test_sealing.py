"""Private keys at rest: AES-256-GCM under the key-encryption key, and where the KEK comes from."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from ledger.settings import Settings
from ledger.signing.sealing import (
    KEK_ENV_VAR,
    KEK_FILE_NAME,
    KeyEncryptionKey,
    KeyEncryptionKeyError,
    UnsealError,
    WrongKeyEncryptionKey,
    load_kek,
    seal,
    unseal,
)

KID = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
PLAINTEXT = b"-----BEGIN PRIVATE KEY----- pretend PKCS#8 bytes"


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def kek() -> KeyEncryptionKey:
    return KeyEncryptionKey.generate()


def test_seal_then_unseal_returns_the_plaintext(kek: KeyEncryptionKey) -> None:
    sealed = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    assert unseal(kek, sealed, kid=KID, alg="ES256") == PLAINTEXT


def test_sealed_text_is_versioned_and_holds_no_plaintext(kek: KeyEncryptionKey) -> None:
    sealed = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    version, kek_id, nonce, _ciphertext = sealed.split(".")
    assert version == "v1"
    assert kek_id == kek.id
    assert len(base64.urlsafe_b64decode(nonce + "==")) == 12
    assert b"PRIVATE" not in sealed.encode()
    assert _text(PLAINTEXT) not in sealed


def test_each_seal_uses_a_fresh_nonce(kek: KeyEncryptionKey) -> None:
    first = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    second = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    assert first.split(".")[2] != second.split(".")[2]


def test_another_kek_is_reported_as_the_wrong_kek(kek: KeyEncryptionKey) -> None:
    sealed = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    other = KeyEncryptionKey.generate()
    with pytest.raises(WrongKeyEncryptionKey, match=KEK_ENV_VAR):
        unseal(other, sealed, kid=KID, alg="ES256")


def test_another_kek_fails_authentication_even_with_a_forged_kek_id(
    kek: KeyEncryptionKey,
) -> None:
    other = KeyEncryptionKey.generate()
    version, _, nonce, ciphertext = seal(kek, PLAINTEXT, kid=KID, alg="ES256").split(".")
    forged = ".".join((version, other.id, nonce, ciphertext))
    with pytest.raises(UnsealError, match="failed authentication"):
        unseal(other, forged, kid=KID, alg="ES256")


def test_an_altered_ciphertext_fails_authentication(kek: KeyEncryptionKey) -> None:
    version, kek_id, nonce, ciphertext = seal(kek, PLAINTEXT, kid=KID, alg="ES256").split(".")
    raw = bytearray(base64.urlsafe_b64decode(ciphertext + "=" * (-len(ciphertext) % 4)))
    raw[0] ^= 1
    altered = ".".join((version, kek_id, nonce, _text(bytes(raw))))
    with pytest.raises(UnsealError, match="failed authentication"):
        unseal(kek, altered, kid=KID, alg="ES256")


def test_a_sealed_key_opens_only_under_its_own_kid(kek: KeyEncryptionKey) -> None:
    sealed = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    with pytest.raises(UnsealError):
        unseal(kek, sealed, kid="another-kid", alg="ES256")


def test_a_sealed_key_opens_only_under_its_own_alg(kek: KeyEncryptionKey) -> None:
    sealed = seal(kek, PLAINTEXT, kid=KID, alg="ES256")
    with pytest.raises(UnsealError):
        unseal(kek, sealed, kid=KID, alg="EdDSA")


@pytest.mark.parametrize("sealed", ["v2.a.b.c", "garbage", "", "v1.only.three"])
def test_an_unknown_sealed_format_is_refused(kek: KeyEncryptionKey, sealed: str) -> None:
    with pytest.raises(UnsealError, match="format"):
        unseal(kek, sealed, kid=KID, alg="ES256")


def test_kek_text_round_trips_with_or_without_padding(kek: KeyEncryptionKey) -> None:
    text = kek.to_text()
    assert KeyEncryptionKey.from_text(text) == kek
    assert KeyEncryptionKey.from_text(text + "=") == kek


@pytest.mark.parametrize(
    "text",
    [
        _text(b"\x01" * 16),
        _text(b"\x01" * 33),
        base64.b64encode(b"\xfb\xff" * 16).decode(),  # standard alphabet: '+' and '/'
        "not a key!",
        "",
    ],
)
def test_kek_text_must_be_base64url_of_32_bytes(text: str) -> None:
    with pytest.raises(KeyEncryptionKeyError, match=KEK_ENV_VAR):
        KeyEncryptionKey.from_text(text)


def test_kek_repr_hides_the_secret(kek: KeyEncryptionKey) -> None:
    assert kek.to_text() not in repr(kek)
    assert kek.id in repr(kek)


def test_configured_kek_is_used(tmp_path: Path, kek: KeyEncryptionKey) -> None:
    settings = Settings(data_dir=tmp_path, key_encryption_key=SecretStr(kek.to_text()))
    assert load_kek(settings) == kek
    assert not (tmp_path / KEK_FILE_NAME).exists()


def test_malformed_configured_kek_is_refused_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, key_encryption_key=SecretStr("too-short"))
    with pytest.raises(KeyEncryptionKeyError, match=KEK_ENV_VAR):
        load_kek(settings)


def test_embedded_mode_generates_a_private_kek_file_on_first_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    kek = load_kek(settings)
    path = tmp_path / "data" / KEK_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyEncryptionKey.from_text(path.read_text()) == kek


def test_embedded_mode_reuses_its_kek_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert load_kek(settings) == load_kek(settings)


def test_embedded_mode_refuses_to_replace_a_missing_kek_file_when_keys_exist(
    tmp_path: Path,
) -> None:
    with pytest.raises(KeyEncryptionKeyError, match="missing"):
        load_kek(Settings(data_dir=tmp_path), create=False)
    assert not (tmp_path / KEK_FILE_NAME).exists()


def test_postgres_mode_without_a_kek_is_refused_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql://db.invalid/ledger")
    with pytest.raises(KeyEncryptionKeyError, match=KEK_ENV_VAR):
        load_kek(settings)
    assert not (tmp_path / KEK_FILE_NAME).exists()
