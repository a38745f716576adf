"""Credential use cases: API keys are ledger aggregates (issued, revoked, reinstated)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.application.base import MAX_ATTEMPTS, LedgerBase
from ledger.domain.actors import Actor
from ledger.domain.apikeys import ApiKey, api_key_id
from ledger.domain.errors import Conflict
from ledger.domain.roles import Role

BOOTSTRAP_KEY_NAME = "admin"


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str
    position: int


class CredentialUseCases(LedgerBase):
    # ------------------------------------------------------------------ API keys

    def issue_api_key(self, *, name: str, role: Role, actor: Actor) -> IssuedKey:
        """Create (or reinstate a revoked) named key; the secret is returned once."""
        key_id = secrets.token_urlsafe(9)
        secret = secrets.token_urlsafe(32)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        aggregate_id = api_key_id(name)
        for _ in range(MAX_ATTEMPTS):
            now = self.clock.now()
            try:
                key: ApiKey = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                key = ApiKey.create(
                    name=name,
                    role=role,
                    key_id=key_id,
                    secret_sha256=digest,
                    actor=actor,
                    now=now,
                )
            else:
                key.reinstate(role=role, key_id=key_id, secret_sha256=digest, actor=actor, now=now)
            try:
                recordings = self.save(key)
            except IntegrityError:
                continue
            return IssuedKey(
                key=key, secret=f"mlk_{key_id}.{secret}", position=recordings[-1].notification.id
            )
        raise Conflict("the key changed concurrently; try again")

    def issue_bootstrap_key(self, *, actor: Actor) -> IssuedKey | None:
        """An admin key named ``admin`` on the first start of an empty store, else None.

        A store that holds any event never gets one, even when every admin key has been
        revoked: recovery is an explicit ``keys create --role admin`` by someone with access
        to the store, never a secret printed to whoever reads the logs. Two servers starting
        together on an empty store mint one key between them.
        """
        if self.head_position() != 0:
            return None
        try:
            return self.issue_api_key(name=BOOTSTRAP_KEY_NAME, role=Role.ADMIN, actor=actor)
        except Conflict:
            return None  # another process minted it a moment ago

    def revoke_api_key(self, *, name: str, actor: Actor, reason: str | None = None) -> int | None:
        key = self._get(ApiKey, api_key_id(name), "API key")
        if not key.revoke(reason=reason, actor=actor, now=self.clock.now()):
            return None
        return self.save(key)[-1].notification.id
