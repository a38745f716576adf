"""The keyring: signs with the active key, verifies by ``kid``, rotates, publishes the JWKS.

Key lifecycle, per ``alg``, all decided from the stored records and the ``now``
the caller passes in (this module never reads the clock):

* the store numbers the keys of an ``alg`` in insertion order (``generation``);
* the ACTIVE key at ``now`` is the newest generation whose ``activates_at <= now``;
  it alone signs;
* a key is PENDING before its ``activates_at`` (published, so verifiers can fetch
  it before any token carries its ``kid``, but never used to sign);
* a key is RETIRED from ``retired_at``: the first instant at or after its own
  activation when a newer generation is active. Retired keys stay in the JWKS,
  and keep verifying, for ``signing_key_retention_days``; after that they are
  unpublished (the record itself is kept).

Several replicas share one store. ``refresh()`` reloads it (cheap: a stat of the
JSON file, or one small SELECT); the server calls it periodically, the JWKS route
calls ``refresh_if_stale``, and verifying a token whose ``kid`` is unknown refreshes
once (rate-limited by ``miss_refresh_interval``) before rejecting it.

Thread-safe: readers use an immutable snapshot that ``refresh`` swaps atomically.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry, extract_compact, serialize_compact, validate_compact

from ledger.domain.instants import format_instant
from ledger.persistence.database import Database
from ledger.settings import Settings
from ledger.signing.algorithms import (
    SUPPORTED_ALGS,
    check_alg,
    generate_private_key,
    jose_signing_key,
    jose_verification_key,
    jws_registry,
    load_private_key,
    private_key_to_der,
    public_jwk,
)
from ledger.signing.callbacks import callback_secret
from ledger.signing.sealing import KeyEncryptionKey, load_kek, seal, unseal
from ledger.signing.store import (
    FileKeyStore,
    KeyStore,
    KeyStoreError,
    NewKey,
    StoredKey,
    open_store,
    public_key_set,
)

log = logging.getLogger("mission_ledger.signing")

KeyStatus = Literal["pending", "active", "retired"]

DEFAULT_MISS_REFRESH_INTERVAL = timedelta(seconds=5)


class SignatureInvalid(Exception):
    """A compact JWS that does not verify against a published key of an allowed ``alg``."""


class NoActiveSigningKey(LookupError):
    """No key of the requested ``alg`` is active at that instant (call ``ensure`` first)."""


@dataclass(frozen=True)
class SigningKeyInfo:
    """What may be said about a key without its secret, as of one instant."""

    kid: str
    alg: str
    generation: int
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None
    status: KeyStatus
    published: bool

    def to_json(self) -> dict[str, Any]:
        """For ``keys`` CLI output: instants as RFC 3339 UTC strings."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "generation": self.generation,
            "created_at": format_instant(self.created_at),
            "activates_at": format_instant(self.activates_at),
            "retired_at": None if self.retired_at is None else format_instant(self.retired_at),
            "status": self.status,
            "published": self.published,
        }


@dataclass(frozen=True)
class _Entry:
    """An opened key: the stored record, its joserfc keys and the JWK to publish."""

    record: StoredKey
    jwk: Mapping[str, str]
    signing_key: Key
    verification_key: Key
    # The instant a newer generation first takes over (see module docstring), if any.
    retired_at: datetime | None = None

    @property
    def kid(self) -> str:
        return self.record.kid

    @property
    def alg(self) -> str:
        return self.record.alg

    def status(self, now: datetime) -> KeyStatus:
        if now < self.record.activates_at:
            return "pending"
        if self.retired_at is not None and self.retired_at <= now:
            return "retired"
        return "active"

    def published(self, now: datetime, retention: timedelta) -> bool:
        return self.retired_at is None or now < self.retired_at + retention

    def info(self, now: datetime, retention: timedelta) -> SigningKeyInfo:
        status = self.status(now)
        return SigningKeyInfo(
            kid=self.kid,
            alg=self.alg,
            generation=self.record.generation,
            created_at=self.record.created_at,
            activates_at=self.record.activates_at,
            retired_at=self.retired_at if status == "retired" else None,
            status=status,
            published=self.published(now, retention),
        )


@dataclass(frozen=True)
class _Snapshot:
    """Every opened key, by kid and per alg in generation order (immutable)."""

    by_kid: Mapping[str, _Entry]
    by_alg: Mapping[str, tuple[_Entry, ...]]

    @classmethod
    def build(cls, entries: Iterable[_Entry]) -> _Snapshot:
        grouped: dict[str, list[_Entry]] = {}
        for entry in entries:
            grouped.setdefault(entry.alg, []).append(entry)
        by_alg: dict[str, tuple[_Entry, ...]] = {}
        for alg, group in grouped.items():
            group.sort(key=lambda e: e.record.generation)
            timeline: list[_Entry] = []
            takeover: datetime | None = None  # earliest activation among newer generations
            for entry in reversed(group):
                retired_at = None if takeover is None else max(entry.record.activates_at, takeover)
                timeline.append(_with_retirement(entry, retired_at))
                act = entry.record.activates_at
                takeover = act if takeover is None else min(takeover, act)
            by_alg[alg] = tuple(reversed(timeline))
        by_kid = {entry.kid: entry for group in by_alg.values() for entry in group}
        return cls(by_kid=by_kid, by_alg=by_alg)

    def active(self, alg: str, now: datetime) -> _Entry | None:
        for entry in reversed(self.by_alg.get(alg, ())):
            if entry.record.activates_at <= now:
                return entry
        return None


def _with_retirement(entry: _Entry, retired_at: datetime | None) -> _Entry:
    return _Entry(
        record=entry.record,
        jwk=entry.jwk,
        signing_key=entry.signing_key,
        verification_key=entry.verification_key,
        retired_at=retired_at,
    )


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@lru_cache(maxsize=32)
def _registry(algorithms: frozenset[str]) -> JWSRegistry:
    return jws_registry(sorted(algorithms))


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None:
        msg = "now must be a timezone-aware instant"
        raise ValueError(msg)
    return now


class Keyring:
    """Signing keys of one process, backed by a shared ``KeyStore``."""

    def __init__(
        self,
        store: KeyStore,
        kek: KeyEncryptionKey,
        *,
        retention: timedelta,
        miss_refresh_interval: timedelta = DEFAULT_MISS_REFRESH_INTERVAL,
    ) -> None:
        if retention <= timedelta(0):
            msg = "the retention period must be positive"
            raise ValueError(msg)
        self._store = store
        self._kek = kek
        self.retention = retention
        self.miss_refresh_interval = miss_refresh_interval
        self._snapshot = _Snapshot.build(())
        self._refresh_lock = threading.Lock()
        self._last_refresh_attempt: datetime | None = None
        self._raw_signers: dict[str, Callable[[bytes], bytes]] = {}

    @classmethod
    def open(cls, settings: Settings, database: Database | None) -> Keyring:
        """The keyring these settings describe, loaded.

        Embedded: ``<data_dir>/signing-keys.json`` (``database`` may be None), with the
        generated KEK file when no KEK is configured. PostgreSQL: the ``signing_keys``
        table through ``database``; the KEK must be configured.
        """
        store = open_store(settings, database)
        # Never generate a fresh KEK next to keys sealed with a lost one: refuse instead.
        create_kek = not (isinstance(store, FileKeyStore) and store.exists())
        kek = load_kek(settings, create=create_kek)
        keyring = cls(store, kek, retention=timedelta(days=settings.signing_key_retention_days))
        keyring.refresh()
        return keyring

    def callback_secret(self, task_id: str) -> str:
        """The HMAC secret of one access request's callbacks (derived from the KEK:
        ``ledger.signing.callbacks``)."""
        return callback_secret(self._kek, task_id)

    # ------------------------------------------------------------------ loading

    def refresh(self) -> None:
        """Reload the store; keys already opened are reused, new ones are unsealed.

        Raises (and keeps the previous snapshot) when a key cannot be opened, e.g.
        under a wrong key-encryption key.
        """
        with self._refresh_lock:
            self._refresh_locked()

    def refresh_if_stale(self, now: datetime, *, max_age: timedelta) -> bool:
        """Refresh unless a refresh was attempted less than ``max_age`` before ``now``.

        Concurrent callers wait for one refresh instead of each doing one. Returns
        whether this call refreshed.
        """
        _aware(now)
        with self._refresh_lock:
            if not self._is_stale(now, max_age):
                return False
            self._last_refresh_attempt = now  # failures back off too
            self._refresh_locked()
            return True

    def is_stale(self, now: datetime, *, max_age: timedelta) -> bool:
        return self._is_stale(_aware(now), max_age)

    def _is_stale(self, now: datetime, max_age: timedelta) -> bool:
        last = self._last_refresh_attempt
        # A clock that moved backwards counts as stale.
        return last is None or not (timedelta(0) <= now - last < max_age)

    def _refresh_locked(self) -> None:
        records = self._store.load()
        current = self._snapshot.by_kid
        entries: list[_Entry] = []
        for record in records:
            known = current.get(record.kid)
            entries.append(
                known if known is not None and known.record == record else self._open(record)
            )
        self._snapshot = _Snapshot.build(entries)

    def _open(self, record: StoredKey) -> _Entry:
        if record.alg not in SUPPORTED_ALGS:
            msg = f"signing key {record.kid} has unsupported alg {record.alg!r}"
            raise KeyStoreError(msg)
        der = unseal(self._kek, record.sealed_private_key, kid=record.kid, alg=record.alg)
        try:
            private = load_private_key(der, record.alg)
        except ValueError as error:
            msg = f"signing key {record.kid}: {error}"
            raise KeyStoreError(msg) from error
        jwk = public_jwk(private, record.alg)
        if jwk["kid"] != record.kid or dict(record.public_jwk) != jwk:
            msg = (
                f"signing key {record.kid}: the stored public key or kid does not match "
                "the sealed private key"
            )
            raise KeyStoreError(msg)
        return _Entry(
            record=record,
            jwk=jwk,
            signing_key=jose_signing_key(private, jwk),
            verification_key=jose_verification_key(jwk),
        )

    # ------------------------------------------------------------------ lifecycle

    def ensure(self, alg: str, now: datetime) -> SigningKeyInfo:
        """The active ``alg`` key at ``now``, creating one (active at once) if there is none.

        Safe when several processes start together: the store creates at most one.
        """
        check_alg(alg)
        _aware(now)
        if self._snapshot.active(alg, now) is None:
            self.refresh()
        if self._snapshot.active(alg, now) is None:
            self._store.insert(self._new_key(alg, now, now), unless_active_at=now)
            self.refresh()
        return self.active(alg, now)

    def rotate(
        self, alg: str, now: datetime, *, activation_delay: timedelta = timedelta(0)
    ) -> SigningKeyInfo:
        """Add a new ``alg`` key, published now and active from ``now + activation_delay``.

        The current key keeps signing until then and is retired at that instant.
        """
        check_alg(alg)
        _aware(now)
        if activation_delay < timedelta(0):
            msg = "the activation delay cannot be negative"
            raise ValueError(msg)
        stored = self._store.insert(self._new_key(alg, now, now + activation_delay))
        assert stored is not None  # an unconditional insert always stores
        self.refresh()
        return self._snapshot.by_kid[stored.kid].info(now, self.retention)

    def _new_key(self, alg: str, created_at: datetime, activates_at: datetime) -> NewKey:
        private = generate_private_key(alg)
        jwk = public_jwk(private, alg)
        sealed = seal(self._kek, private_key_to_der(private), kid=jwk["kid"], alg=alg)
        return NewKey(
            kid=jwk["kid"],
            alg=alg,
            created_at=created_at,
            activates_at=activates_at,
            sealed_private_key=sealed,
            public_jwk=jwk,
        )

    # ------------------------------------------------------------------ reads

    def active(self, alg: str, now: datetime) -> SigningKeyInfo:
        """The key that signs ``alg`` at ``now``; ``NoActiveSigningKey`` when none does."""
        return self._active_entry(alg, now).info(now, self.retention)

    def _active_entry(self, alg: str, now: datetime) -> _Entry:
        check_alg(alg)
        entry = self._snapshot.active(alg, _aware(now))
        if entry is None:
            msg = f"no {alg} signing key is active at {now.isoformat()}"
            raise NoActiveSigningKey(msg)
        return entry

    def infos(self, now: datetime) -> list[SigningKeyInfo]:
        """Every stored key (published or not) with its status at ``now``, by alg and age."""
        _aware(now)
        return [
            entry.info(now, self.retention)
            for alg in sorted(self._snapshot.by_alg)
            for entry in self._snapshot.by_alg[alg]
        ]

    def jwks(self, now: datetime) -> dict[str, list[dict[str, str]]]:
        """The JWK Set at ``now``: public members, ``kid``, ``use: sig`` and ``alg`` of every
        pending, active and retained key; newest first within each ``alg``."""
        _aware(now)
        snapshot = self._snapshot
        keys = [
            dict(entry.jwk)
            for alg in SUPPORTED_ALGS
            for entry in reversed(snapshot.by_alg.get(alg, ()))
            if entry.published(now, self.retention)
        ]
        return {"keys": keys}

    def public_jwks(self, kids: Iterable[str]) -> dict[str, list[dict[str, str]]]:
        """A JWK Set of the public keys named by ``kids``, whether or not they are still
        published (evidence keeps verifying after a key's retention ends); unknown kids
        are left out. Sorted by kid."""
        return public_key_set((e.record for e in self._snapshot.by_kid.values()), kids)

    # ------------------------------------------------------------------ JWS

    def _protected(
        self, header: Mapping[str, Any], alg: str, now: datetime
    ) -> tuple[_Entry, dict[str, Any]]:
        """The active ``alg`` key at ``now`` and the protected header: the caller's members
        (e.g. ``typ``) plus ``alg`` and ``kid``, which only the keyring sets."""
        clash = {"alg", "kid"} & set(header)
        if clash:
            msg = f"the keyring sets {', '.join(sorted(clash))} itself; leave it out of the header"
            raise ValueError(msg)
        entry = self._active_entry(alg, now)
        return entry, {**header, "alg": alg, "kid": entry.kid}

    def sign_compact(
        self, header: Mapping[str, Any], payload: bytes, *, alg: str, now: datetime
    ) -> str:
        """A compact JWS of ``payload`` by the active ``alg`` key at ``now``.

        The keyring sets ``alg`` and ``kid``; the caller supplies the rest (e.g. ``typ``).
        """
        entry, protected = self._protected(header, alg, now)
        return serialize_compact(
            protected, payload, entry.signing_key, registry=_registry(frozenset({alg}))
        )

    def sign_compact_many(
        self,
        header: Mapping[str, Any],
        payloads: Sequence[bytes],
        *,
        alg: str,
        now: datetime,
    ) -> list[str]:
        """``sign_compact`` of each payload under one protected header, for a batch.

        The header is encoded once and each signature is made by ``_raw_signer``
        (``cryptography`` directly), skipping the per-call header checks and encoding of
        ``serialize_compact`` and joserfc's per-call key lookups.
        The compact form is RFC 7515 section 7.1: ``b64(header).b64(payload).b64(sig)``.
        (Threads do not help: the GIL-bound Python around each signature dominates.)
        """
        entry, protected = self._protected(header, alg, now)
        prefix = _b64(json.dumps(protected, separators=(",", ":")).encode()) + b"."
        sign = self._raw_signer(entry, alg)
        tokens = []
        for payload in payloads:
            signing_input = prefix + _b64(payload)
            tokens.append((signing_input + b"." + _b64(sign(signing_input))).decode("ascii"))
        return tokens

    def compact_signer(self, alg: str) -> Callable[[Mapping[str, Any], bytes, datetime], str]:
        """``sign_compact`` for a hot path that signs one token at a time under a few fixed
        headers (the PDP's binding tokens): the encoded protected header is kept per active
        key and header, so each call only encodes the payload and signs (the signature is
        the whole cost left: ~40 us for ES256 here)."""
        prefixes: dict[tuple[str, tuple[tuple[str, Any], ...]], bytes] = {}

        def sign(header: Mapping[str, Any], payload: bytes, now: datetime) -> str:
            entry = self._active_entry(alg, now)
            cache_key = (entry.kid, tuple(header.items()))
            prefix = prefixes.get(cache_key)
            if prefix is None:
                if len(prefixes) > 64:  # rotated keys leave entries behind: start afresh
                    prefixes.clear()
                _, protected = self._protected(header, alg, now)
                prefix = _b64(json.dumps(protected, separators=(",", ":")).encode()) + b"."
                prefixes[cache_key] = prefix
            signing_input = prefix + _b64(payload)
            signature = self._raw_signer(entry, alg)(signing_input)
            return (signing_input + b"." + _b64(signature)).decode("ascii")

        return sign

    def _raw_signer(self, entry: _Entry, alg: str) -> Callable[[bytes], bytes]:
        """The JWS signature (RFC 7518 form) of a signing input by ``entry``'s key, made by
        ``cryptography`` directly (joserfc's algorithm object would fetch the key and
        re-derive the curve size on every call), kept per key."""
        cached = self._raw_signers.get(entry.kid)
        if cached is not None:
            return cached
        private = entry.signing_key.get_op_key("sign")
        sign: Callable[[bytes], bytes]
        if alg == "ES256" and isinstance(private, ec.EllipticCurvePrivateKey):
            ecdsa = ec.ECDSA(hashes.SHA256())
            ec_key = private

            def sign(data: bytes) -> bytes:
                r, s = decode_dss_signature(ec_key.sign(data, ecdsa))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        elif alg == "EdDSA" and isinstance(private, Ed25519PrivateKey):
            sign = private.sign
        else:
            model = _registry(frozenset({alg})).get_alg(alg)
            key = entry.signing_key

            def sign(data: bytes) -> bytes:
                return bytes(model.sign(data, key))

        self._raw_signers[entry.kid] = sign
        return sign

    def verify_compact(
        self, token: str, *, algorithms: Collection[str], now: datetime
    ) -> tuple[dict[str, Any], bytes]:
        """Verify a compact JWS against the key its ``kid`` names among the keys published
        at ``now``, accepting only ``algorithms``. Returns the protected header and payload.

        ``algorithms`` may only name supported algorithms (``none`` and HMAC raise
        ``UnsupportedAlgorithm``). Every verification failure raises ``SignatureInvalid``.
        """
        _aware(now)
        if isinstance(algorithms, str):
            msg = "algorithms is a collection of names, not one string"
            raise TypeError(msg)
        registry = _registry(frozenset(check_alg(alg) for alg in algorithms))
        try:
            compact = extract_compact(token.encode("ascii"), registry=registry)
            header = compact.headers()
        except (JoseError, ValueError, TypeError) as error:
            msg = f"not a well-formed compact JWS ({error})"
            raise SignatureInvalid(msg) from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in algorithms:
            msg = f"alg {alg!r} is not accepted here (accepted: {', '.join(sorted(algorithms))})"
            raise SignatureInvalid(msg)
        if not isinstance(kid, str) or not kid:
            msg = "the JWS header names no kid"
            raise SignatureInvalid(msg)
        entry = self._published_entry(kid, now)
        if entry is None and self._refresh_on_miss(now):
            entry = self._published_entry(kid, now)
        if entry is None:
            msg = f"kid {kid!r} is not a published signing key"
            raise SignatureInvalid(msg)
        if entry.alg != alg:
            msg = f"kid {kid!r} is a {entry.alg} key, but the header says {alg}"
            raise SignatureInvalid(msg)
        try:
            valid = validate_compact(compact, entry.verification_key, registry=registry)
        except JoseError as error:
            msg = f"the JWS cannot be verified ({error})"
            raise SignatureInvalid(msg) from None
        if not valid:
            msg = f"the signature does not verify with key {kid}"
            raise SignatureInvalid(msg)
        return dict(header), compact.payload

    def _published_entry(self, kid: str, now: datetime) -> _Entry | None:
        entry = self._snapshot.by_kid.get(kid)
        if entry is None or not entry.published(now, self.retention):
            return None
        return entry

    def _refresh_on_miss(self, now: datetime) -> bool:
        try:
            return self.refresh_if_stale(now, max_age=self.miss_refresh_interval)
        except Exception:  # fail closed: the token is rejected, the cause is logged
            log.exception("reloading the signing keys after an unknown kid failed")
            return False


def rotate_signing_key(
    settings: Settings, *, alg: str, activate_in: timedelta, now: datetime
) -> SigningKeyInfo:
    """``mission-ledger keys rotate-signing``: add a new ``alg`` key to the configured store,
    active ``activate_in`` after ``now``. Running servers pick it up on their next refresh."""
    check_alg(alg)
    if settings.embedded:
        return Keyring.open(settings, None).rotate(alg, now, activation_delay=activate_in)
    # Imported here: ledger.persistence.store opens the whole application, which may
    # one day depend on this module.
    from ledger.persistence.store import open_ledger  # noqa: PLC0415

    ledger = open_ledger(settings)
    try:
        keyring = Keyring.open(settings, ledger.database)
        return keyring.rotate(alg, now, activation_delay=activate_in)
    finally:
        ledger.close()
