"""Private keys at rest: AES-256-GCM under the key-encryption key (KEK).

The KEK is 32 random bytes, written base64url in ``MISSION_LEDGER_KEY_ENCRYPTION_KEY``
(``Settings.key_encryption_key``). When it is unset, the embedded mode generates one
in ``<data_dir>/key-encryption-key`` (mode 0600) on first use; PostgreSQL refuses to
run without one, because replicas must share it and a generated file would not be.

A sealed key is one ASCII string::

    v1.<kek id>.<nonce>.<ciphertext and tag>        (each part base64url, no padding)

``v1`` is the format version. The nonce is 96 random bits, fresh for every seal.
The associated data binds the ciphertext to the key's ``kid`` and ``alg``, so a
sealed blob copied onto another key's record does not open. The KEK id is a
48-bit HMAC of the KEK (it reveals nothing useful about it) that lets a wrong KEK
be reported as such instead of as generic corruption.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ledger.persistence.private_files import PRIVATE_FILE_MODE, make_private_dir
from ledger.settings import Settings

KEK_BYTES: Final = 32
NONCE_BYTES: Final = 12
FORMAT_VERSION: Final = "v1"
KEK_FILE_NAME: Final = "key-encryption-key"
KEK_ENV_VAR: Final = "MISSION_LEDGER_KEY_ENCRYPTION_KEY"

_AAD_PREFIX: Final = b"mission-ledger/signing-key/v1"
_KEK_ID_LABEL: Final = b"mission-ledger/key-encryption-key-id"
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class KeyEncryptionKeyError(RuntimeError):
    """The key-encryption key is missing or malformed (a configuration problem)."""


class UnsealError(RuntimeError):
    """A sealed private key cannot be opened: unknown format, altered, or another KEK."""


class WrongKeyEncryptionKey(UnsealError):
    """The key was sealed under a different key-encryption key than the configured one."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict base64url: the URL-safe alphabet only, padding optional."""
    stripped = text.strip().rstrip("=")
    if _BASE64URL.fullmatch(stripped) is None:
        msg = "not base64url"
        raise ValueError(msg)
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except binascii.Error as error:  # an impossible length, e.g. one character
        msg = "not base64url"
        raise ValueError(msg) from error


@dataclass(frozen=True, repr=False)
class KeyEncryptionKey:
    """32 secret bytes. ``repr`` shows only the id, never the key."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEK_BYTES:
            msg = f"a key-encryption key is {KEK_BYTES} bytes, got {len(self.secret)}"
            raise KeyEncryptionKeyError(msg)

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(KEK_BYTES))

    @classmethod
    def from_text(cls, text: str, *, source: str = KEK_ENV_VAR) -> KeyEncryptionKey:
        """Parse the base64url form; ``source`` names where it came from in errors."""
        try:
            secret = _b64url_decode(text)
        except ValueError:
            msg = f"{source} must be base64url (the URL-safe alphabet) encoding {KEK_BYTES} bytes"
            raise KeyEncryptionKeyError(msg) from None
        if len(secret) != KEK_BYTES:
            msg = (
                f"{source} must encode exactly {KEK_BYTES} bytes (got {len(secret)}); "
                'generate one with: python -c "import secrets, base64; '
                'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
            )
            raise KeyEncryptionKeyError(msg)
        return cls(secret)

    def to_text(self) -> str:
        return _b64url(self.secret)

    @property
    def id(self) -> str:
        """A short, non-secret identifier of this KEK (HMAC-SHA-256, 48 bits)."""
        return _b64url(hmac.new(self.secret, _KEK_ID_LABEL, hashlib.sha256).digest()[:6])

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.id!r})"


def _associated_data(kid: str, alg: str) -> bytes:
    return b"\x00".join((_AAD_PREFIX, kid.encode("utf-8"), alg.encode("utf-8")))


def seal(kek: KeyEncryptionKey, plaintext: bytes, *, kid: str, alg: str) -> str:
    """Encrypt ``plaintext`` (a private key) for storage, bound to ``kid`` and ``alg``."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(kek.secret).encrypt(nonce, plaintext, _associated_data(kid, alg))
    return ".".join((FORMAT_VERSION, kek.id, _b64url(nonce), _b64url(ciphertext)))


def unseal(kek: KeyEncryptionKey, sealed: str, *, kid: str, alg: str) -> bytes:
    """Decrypt a sealed key; raises ``UnsealError`` (or ``WrongKeyEncryptionKey``), never
    returns bytes that did not authenticate."""
    parts = sealed.split(".")
    if len(parts) != 4 or parts[0] != FORMAT_VERSION:
        version = parts[0] if len(parts) > 1 else "?"
        msg = (
            f"signing key {kid}: unsupported sealed-key format {version[:16]!r} "
            f"(this version reads {FORMAT_VERSION!r})"
        )
        raise UnsealError(msg)
    _, kek_id, nonce_text, ciphertext_text = parts
    if kek_id != kek.id:  # the id is not secret; the AES-GCM tag does the authenticating
        msg = (
            f"signing key {kid} was sealed under key-encryption key {kek_id!r}, but the "
            f"configured key-encryption key is {kek.id!r}: set {KEK_ENV_VAR} to the key "
            "the store was created with"
        )
        raise WrongKeyEncryptionKey(msg)
    try:
        nonce = _b64url_decode(nonce_text)
        ciphertext = _b64url_decode(ciphertext_text)
    except ValueError:
        msg = f"signing key {kid}: the sealed key is not valid base64url"
        raise UnsealError(msg) from None
    if len(nonce) != NONCE_BYTES:
        msg = f"signing key {kid}: the sealed key has a {len(nonce)}-byte nonce"
        raise UnsealError(msg)
    try:
        return AESGCM(kek.secret).decrypt(nonce, ciphertext, _associated_data(kid, alg))
    except InvalidTag:
        msg = (
            f"signing key {kid} ({alg}) failed authentication: the stored key was altered, "
            "moved to another record, or sealed under another key-encryption key"
        )
        raise UnsealError(msg) from None


# ---------------------------------------------------------------------- where the KEK comes from


def kek_file(data_dir: Path) -> Path:
    return data_dir / KEK_FILE_NAME


def load_kek(settings: Settings, *, create: bool = True) -> KeyEncryptionKey:
    """The KEK for these settings.

    Configured (``key_encryption_key``): parse it. Embedded without one: read
    ``<data_dir>/key-encryption-key``, creating it (mode 0600) when ``create``.
    PostgreSQL without one: refuse, naming the setting.
    """
    if settings.key_encryption_key is not None:
        return KeyEncryptionKey.from_text(settings.key_encryption_key.get_secret_value())
    if not settings.embedded:
        msg = (
            f"{KEK_ENV_VAR} is not set: with PostgreSQL every replica must share one "
            f"key-encryption key ({KEK_BYTES} random bytes, base64url) to open the signing keys"
        )
        raise KeyEncryptionKeyError(msg)
    path = kek_file(settings.data_dir)
    if path.exists():
        return read_kek_file(path)
    if not create:
        msg = (
            f"the key-encryption key file {path} is missing, but signing keys sealed with it "
            f"exist: restore the file or set {KEK_ENV_VAR}"
        )
        raise KeyEncryptionKeyError(msg)
    return create_kek_file(path)


def read_kek_file(path: Path) -> KeyEncryptionKey:
    return KeyEncryptionKey.from_text(path.read_text(encoding="ascii"), source=str(path))


def create_kek_file(path: Path) -> KeyEncryptionKey:
    """Write a new KEK to ``path`` (0600) unless another process just did; return the one
    on disk. The file appears complete or not at all (written aside, then hard-linked)."""
    make_private_dir(path.parent)
    kek = KeyEncryptionKey.generate()
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(kek.to_text() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return read_kek_file(path)
        _fsync_dir(path.parent)
        return kek
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
