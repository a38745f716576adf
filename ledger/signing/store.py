"""Where signing keys live: one small protocol, two stores.

* Embedded mode: ``<data_dir>/signing-keys.json`` (mode 0600), rewritten atomically
  (temporary file, fsync, rename, fsync of the directory) under an exclusive
  ``flock`` on ``signing-keys.lock``, so the server and the CLI can both write.
  Loads re-read the file only when it changed (inode, size, mtime).
* PostgreSQL: the ``signing_keys`` table (``migrations/postgres/0003``), shared by
  every replica; inserts that must not race take a transaction advisory lock.

Records are never updated or deleted: a key's whole life (pending, active, retired,
unpublished) follows from its ``activates_at`` and its successors', so the stored
history of public keys stays complete for audit. The store numbers the keys of each
``alg`` in insertion order (``generation`` 1, 2, ...) under its lock: "the newest
key" means the highest generation, which no clock skew or equal timestamp can
reorder. Instants are UTC; the table keeps them as microseconds since the epoch,
like the other tables.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from ledger.domain.instants import format_instant
from ledger.persistence.database import Database, Dialect
from ledger.persistence.private_files import (
    PRIVATE_FILE_MODE,
    make_private_dir,
    write_atomically,
)
from ledger.settings import Settings

KEYS_FILE_NAME: Final = "signing-keys.json"
LOCK_FILE_NAME: Final = "signing-keys.lock"
FILE_FORMAT: Final = "mission-ledger/signing-keys/v1"

_ADVISORY_LOCK_KEY: Final = 0x4D4C_736B  # "MLsk"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class KeyStoreError(RuntimeError):
    """The key store is unreadable or inconsistent (a corrupt file, a duplicate kid)."""


@dataclass(frozen=True)
class NewKey:
    """A signing key to store: public JWK in clear, private key sealed."""

    kid: str
    alg: str
    created_at: datetime
    activates_at: datetime
    sealed_private_key: str
    public_jwk: Mapping[str, str]


@dataclass(frozen=True)
class StoredKey(NewKey):
    """A stored key with the generation the store gave it (1 for an ``alg``'s first key)."""

    generation: int


class KeyStore(Protocol):
    """Persistence of signing keys. Both operations are safe across processes."""

    def load(self) -> list[StoredKey]:
        """Every stored key (cheap when nothing changed)."""
        ...

    def insert(self, key: NewKey, *, unless_active_at: datetime | None = None) -> StoredKey | None:
        """Store ``key`` as the newest generation of its ``alg`` and return the record.

        With ``unless_active_at``, atomically store nothing (and return None) when a
        key of the same ``alg`` already has ``activates_at`` at or before that instant.
        """
        ...


def open_store(settings: Settings, database: Database | None) -> KeyStore:
    """The JSON file in embedded mode, the ``signing_keys`` table on PostgreSQL."""
    if settings.embedded:
        return FileKeyStore(settings.data_dir)
    if database is None:
        msg = "the PostgreSQL signing-key store needs the ledger's Database"
        raise ValueError(msg)
    return SqlKeyStore(database)


def public_key_set(
    keys: Iterable[StoredKey], kids: Iterable[str]
) -> dict[str, list[dict[str, str]]]:
    """A JWK Set of the stored public keys named by ``kids`` (published or not; unknown kids
    are left out), sorted by kid. Needs no key-encryption key."""
    wanted = set(kids)
    chosen = sorted((k for k in keys if k.kid in wanted), key=lambda k: k.kid)
    return {"keys": [dict(k.public_jwk) for k in chosen]}


def _blocks(existing: list[StoredKey], key: NewKey, unless_active_at: datetime | None) -> bool:
    if unless_active_at is None:
        return False
    return any(k.alg == key.alg and k.activates_at <= unless_active_at for k in existing)


def _stored(key: NewKey, generation: int) -> StoredKey:
    return StoredKey(
        kid=key.kid,
        alg=key.alg,
        created_at=key.created_at,
        activates_at=key.activates_at,
        sealed_private_key=key.sealed_private_key,
        public_jwk=dict(key.public_jwk),
        generation=generation,
    )


# ---------------------------------------------------------------------- embedded: a JSON file


class FileKeyStore:
    """``<data_dir>/signing-keys.json``: ``{"format": ..., "keys": [...]}``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / KEYS_FILE_NAME
        self._lock_path = data_dir / LOCK_FILE_NAME
        self._signature: tuple[int, int, int, int] | None = None
        self._cached: list[StoredKey] = []

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> list[StoredKey]:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            self._signature, self._cached = None, []
            return []
        with handle:
            stat = os.fstat(handle.fileno())
            signature = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if signature == self._signature:
                return list(self._cached)
            keys = self._parse(handle.read())
        self._signature, self._cached = signature, keys
        return list(keys)

    def insert(self, key: NewKey, *, unless_active_at: datetime | None = None) -> StoredKey | None:
        with self._exclusive():
            existing = self._read_fresh()
            if any(k.kid == key.kid for k in existing):
                msg = f"a signing key with kid {key.kid} already exists"
                raise KeyStoreError(msg)
            if _blocks(existing, key, unless_active_at):
                return None
            top = max((k.generation for k in existing if k.alg == key.alg), default=0)
            stored = _stored(key, top + 1)
            self._write([*existing, stored])
        return stored

    # -------------------------------------------------------------- internals

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        make_private_dir(self.data_dir)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_fresh(self) -> list[StoredKey]:
        try:
            return self._parse(self.path.read_bytes())
        except FileNotFoundError:
            return []

    def _write(self, keys: list[StoredKey]) -> None:
        document = {"format": FILE_FORMAT, "keys": [_key_to_json(k) for k in keys]}
        data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
        write_atomically(self.path, data)

    def _parse(self, raw: bytes) -> list[StoredKey]:
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
                msg = f"expected format {FILE_FORMAT!r}"
                raise ValueError(msg)
            entries = document["keys"]
            if not isinstance(entries, list):
                msg = "'keys' is not a list"
                raise ValueError(msg)
            keys = [_key_from_json(entry) for entry in entries]
        except (ValueError, KeyError, TypeError) as error:
            msg = f"the signing key file {self.path} is unreadable: {error}"
            raise KeyStoreError(msg) from error
        return keys


def _key_to_json(key: StoredKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "created_at": format_instant(key.created_at),
        "activates_at": format_instant(key.activates_at),
        "sealed_private_key": key.sealed_private_key,
        "public_jwk": dict(key.public_jwk),
        "generation": key.generation,
    }


def _key_from_json(entry: object) -> StoredKey:
    if not isinstance(entry, dict):
        msg = "a key entry is not an object"
        raise TypeError(msg)
    return StoredKey(
        kid=_text(entry["kid"]),
        alg=_text(entry["alg"]),
        created_at=_instant(entry["created_at"]),
        activates_at=_instant(entry["activates_at"]),
        sealed_private_key=_text(entry["sealed_private_key"]),
        public_jwk=_jwk(entry["public_jwk"]),
        generation=_integer(entry["generation"]),
    )


def _text(value: object) -> str:
    if not isinstance(value, str):
        msg = f"expected a string, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"expected an integer, got {type(value).__name__}"
        raise TypeError(msg)
    return value


def _instant(value: object) -> datetime:
    parsed = datetime.fromisoformat(_text(value))
    if parsed.tzinfo is None:
        msg = f"instant {value!r} has no UTC offset"
        raise ValueError(msg)
    return parsed.astimezone(UTC)


def _jwk(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        msg = "public_jwk must be an object of strings"
        raise TypeError(msg)
    return dict(value)


# ---------------------------------------------------------------------- PostgreSQL: a table


_COLUMNS: Final = "kid, alg, generation, created_at, activates_at, sealed_private_key, public_jwk"


class SqlKeyStore:
    """The ``signing_keys`` table (written for PostgreSQL; the SQL also runs on SQLite)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def load(self) -> list[StoredKey]:
        rows = self.database.fetchall(
            f"SELECT {_COLUMNS} FROM signing_keys ORDER BY alg, generation"  # noqa: S608 - constant
        )
        return [self._from_row(row) for row in rows]

    def insert(self, key: NewKey, *, unless_active_at: datetime | None = None) -> StoredKey | None:
        with self.database.transaction() as cur:
            if self.database.dialect is Dialect.POSTGRES:
                # Serialises "create one unless there is one" across replicas.
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            if unless_active_at is not None:
                cur.execute(
                    "SELECT kid FROM signing_keys WHERE alg = %s AND activates_at <= %s LIMIT 1",
                    (key.alg, to_micros(unless_active_at)),
                )
                if cur.fetchone() is not None:
                    return None
            cur.execute("SELECT kid FROM signing_keys WHERE kid = %s", (key.kid,))
            if cur.fetchone() is not None:
                msg = f"a signing key with kid {key.kid} already exists"
                raise KeyStoreError(msg)
            cur.execute(
                "SELECT COALESCE(MAX(generation), 0) AS top FROM signing_keys WHERE alg = %s",
                (key.alg,),
            )
            top = cur.fetchone()
            stored = _stored(key, int(top["top"] if top else 0) + 1)
            cur.execute(
                f"INSERT INTO signing_keys ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",  # noqa: S608 - constant
                (
                    stored.kid,
                    stored.alg,
                    stored.generation,
                    to_micros(stored.created_at),
                    to_micros(stored.activates_at),
                    stored.sealed_private_key,
                    json.dumps(dict(stored.public_jwk), sort_keys=True, separators=(",", ":")),
                ),
            )
        return stored

    @staticmethod
    def _from_row(row: Mapping[str, Any]) -> StoredKey:
        try:
            return StoredKey(
                kid=str(row["kid"]),
                alg=str(row["alg"]),
                generation=int(row["generation"]),
                created_at=from_micros(int(row["created_at"])),
                activates_at=from_micros(int(row["activates_at"])),
                sealed_private_key=str(row["sealed_private_key"]),
                public_jwk=_jwk(json.loads(row["public_jwk"])),
            )
        except (ValueError, TypeError) as error:
            msg = f"signing_keys row {row.get('kid')!r} is unreadable: {error}"
            raise KeyStoreError(msg) from error


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware instant (exact, no float rounding)."""
    if value.tzinfo is None:
        msg = "naive datetimes are not instants"
        raise ValueError(msg)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)
