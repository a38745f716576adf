"""In-memory directory of API keys, following the log (a live consumer).

Authentication looks keys up here, so it never touches the database; a key
revoked through any replica or the CLI disappears as soon as this process has
read the revocation from the log.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass

from ledger.application import Ledger
from ledger.domain.apikeys import ApiKey
from projections.aggregate_tables import event_topics
from projections.follower import Item


@dataclass(frozen=True)
class KeyEntry:
    name: str
    role: str
    key_id: str
    secret_sha256: str


class KeyDirectory:
    name = "key_directory"  # for the follower's per-read-model metrics
    topics = event_topics(ApiKey)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key_id: dict[str, KeyEntry] = {}
        self._by_name: dict[str, KeyEntry] = {}

    def bootstrap(self, ledger: Ledger) -> int:
        position = 0
        head = ledger.head_position()
        while True:
            notifications = ledger.recorder.select_notifications(
                start=position,
                limit=500,
                stop=head,
                topics=sorted(self.topics),
                inclusive_of_start=False,
            )
            for notification in notifications:
                event = ledger.mapper.to_domain_event(notification)
                self._apply_event(event)
                position = notification.id
            if len(notifications) < 500:
                return head

    def apply(self, item: Item) -> None:
        if item.topic in self.topics:
            self._apply_event(item.event)

    def _apply_event(self, event: object) -> None:
        with self._lock:
            if isinstance(event, ApiKey.Created | ApiKey.Reinstated):
                name = event.name if isinstance(event, ApiKey.Created) else self._name_of(event)
                if name is None:
                    return
                old = self._by_name.pop(name, None)
                if old is not None:
                    self._by_key_id.pop(old.key_id, None)
                entry = KeyEntry(
                    name=name,
                    role=event.role,
                    key_id=event.key_id,
                    secret_sha256=event.secret_sha256,
                )
                self._by_name[name] = entry
                self._by_key_id[entry.key_id] = entry
            elif isinstance(event, ApiKey.Revoked):
                name = self._name_of(event)
                if name is None:
                    return
                old = self._by_name.pop(name, None)
                if old is not None:
                    self._by_key_id.pop(old.key_id, None)

    @staticmethod
    def _name_of(event: ApiKey.Event) -> str | None:
        prefix = "apikey:"
        oid = event.originator_id
        return oid[len(prefix) :] if oid.startswith(prefix) else None

    def verify(self, presented: str) -> KeyEntry | None:
        """The entry for a presented ``mlk_<key_id>.<secret>`` key, or None."""
        if not presented.startswith("mlk_") or "." not in presented:
            return None
        key_id, _, secret = presented[4:].partition(".")
        entry = self._by_key_id.get(key_id)
        if entry is None:
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if not hmac.compare_digest(digest, entry.secret_sha256):
            return None
        return entry

    def current(self, key_id: str) -> KeyEntry | None:
        """The live entry of ``key_id`` (None once revoked or replaced)."""
        with self._lock:
            return self._by_key_id.get(key_id)

    def knows(self, presented: str) -> bool:
        key_id = presented[4:].partition(".")[0] if presented.startswith("mlk_") else ""
        return key_id in self._by_key_id

    def entries(self) -> list[KeyEntry]:
        with self._lock:
            return sorted(self._by_name.values(), key=lambda e: e.name)

    def has_role(self, role: str) -> bool:
        with self._lock:
            return any(e.role == role for e in self._by_name.values())
