"""The in-memory evaluation index: every live Mission and Mandate of this process.

A live consumer of the log follower. Decisions read only this index (no database
access on the hot path). It is bootstrapped from the durable read models (the
mission board and the mandate register, read in one consistent snapshot) and then
kept current event by event; an event at or below the version already held is
skipped, so overlapping the bootstrap with the log is harmless.

Missions are held as their aggregates (the domain computes their effective state
and authority); Mandates, which are far more numerous, as slim records whose
Authority Sets are interned: identical grants share one compiled tuple.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ledger.application import Ledger
from ledger.domain.authority import (
    CompiledContainment,
    CompiledEntry,
    compile_containment,
    compile_entries,
    parse_authority_set,
)
from ledger.domain.canonical import jcs
from ledger.domain.events import LedgerCreated, LedgerEvent
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.metering import Bounds, bounds_of
from ledger.domain.missions import Mission
from ledger.persistence.snapshots import StateCodec
from projections.aggregate_tables import event_topics
from projections.follower import Item

MANDATE_TOPICS = event_topics(ExecutionMandate)
MISSION_TOPICS = event_topics(Mission)


class MandateEntry:
    """What a decision needs to know about one Mandate (a ``MandateWindow`` for the
    domain's validity rule)."""

    __slots__ = (
        "client_id",
        "entries",
        "expires_ts",
        "instance_id",
        "issuer",
        "jkt",
        "mandate_id",
        "mission_id",
        "not_before_ts",
        "parent_id",
        "state",
        "token_version",
        "version",
    )

    def __init__(
        self,
        *,
        mandate_id: str,
        mission_id: str,
        parent_id: str | None,
        client_id: str,
        instance_id: str | None,
        issuer: str,
        jkt: str | None,
        entries: tuple[CompiledEntry, ...],
        expires_ts: float,
        not_before_ts: float,
        state: str,
        token_version: int,
        version: int,
    ) -> None:
        self.mandate_id = mandate_id
        self.mission_id = mission_id
        self.parent_id = parent_id
        self.client_id = client_id
        self.instance_id = instance_id
        self.issuer = issuer
        self.jkt = jkt
        self.entries = entries
        self.expires_ts = expires_ts
        self.not_before_ts = not_before_ts
        self.state = state
        self.token_version = token_version
        self.version = version


@dataclass(frozen=True)
class MissionEntry:
    """A Mission with its compiled Effective Authority (rebuilt on each Mission event)."""

    mission: Mission
    entries: tuple[CompiledEntry, ...]
    contained: tuple[CompiledContainment, ...]
    #: What the Mission's controls meter (``None``: nothing; SPEC 7.3).
    bounds: Bounds | None = None

    @property
    def version(self) -> int:
        return self.mission.version

    @property
    def expires_ts(self) -> float:
        return self.mission.expires_at.timestamp()


class EvaluationIndex:
    """Missions and Mandates by id, plus each agent's Mandates (for the search APIs)."""

    name = "evaluation_index"  # for the follower's per-read-model metrics

    def __init__(self, codec: StateCodec) -> None:
        self._codec = codec
        self._lock = threading.Lock()
        self.missions: dict[str, MissionEntry] = {}
        self.mandates: dict[str, MandateEntry] = {}
        self.by_client: dict[str, set[str]] = {}
        self._interned: dict[bytes, tuple[CompiledEntry, ...]] = {}
        self.position = 0

    # ------------------------------------------------------------------ reads

    def mission(self, mission_id: str) -> MissionEntry | None:
        return self.missions.get(mission_id)

    def mandate(self, mandate_id: str) -> MandateEntry | None:
        return self.mandates.get(mandate_id)

    def mandates_of(self, client_id: str) -> list[MandateEntry]:
        ids = self.by_client.get(client_id, ())
        return [m for m in (self.mandates.get(i) for i in list(ids)) if m is not None]

    def chain(self, mandate: MandateEntry) -> Iterable[MandateEntry | None]:
        """Ancestors, parent first (None marks a parent this index does not hold)."""
        parent_id = mandate.parent_id
        while parent_id is not None:
            parent = self.mandates.get(parent_id)
            yield parent
            if parent is None:
                return
            parent_id = parent.parent_id

    # ------------------------------------------------------------------ bootstrap

    def bootstrap(self, ledger: Ledger) -> int:
        """Load every live Mission and Mandate from the durable read models, consistently."""
        db = ledger.database
        with db.snapshot() as cur:
            cur.execute(
                "SELECT projection, position FROM projection_tracking "
                "WHERE projection IN ('mission_board', 'mandate_register')"
            )
            tracked = {row["projection"]: int(row["position"]) for row in cur.fetchall()}
            cur.execute("SELECT snapshot FROM mission_board WHERE state IN ('active', 'suspended')")
            missions = [bytes(row["snapshot"]) for row in cur.fetchall()]
            cur.execute("SELECT snapshot FROM mandate_register WHERE state = 'active'")
            mandates = [bytes(row["snapshot"]) for row in cur.fetchall()]
        for blob in missions:
            mission = self._codec.thaw(blob)
            assert isinstance(mission, Mission)
            self._put_mission(mission)
        for blob in mandates:
            mandate = self._codec.thaw(blob)
            assert isinstance(mandate, ExecutionMandate)
            self._put_mandate(mandate)
        position = min(tracked.get("mission_board", 0), tracked.get("mandate_register", 0))
        self.position = position
        return position

    # ------------------------------------------------------------------ following

    #: The events it reads (the log follower reads only those some read model reads).
    topics = MANDATE_TOPICS | MISSION_TOPICS

    def apply(self, item: Item) -> None:
        if item.topic in MANDATE_TOPICS:
            self._apply_mandate(item.event)
        elif item.topic in MISSION_TOPICS:
            self._apply_mission(item.event)
        self.position = item.position

    def end_batch(self, end: int) -> None:
        """Every event up to ``end`` it reads is applied: it holds the ledger up to there."""
        self.position = max(self.position, end)

    def _apply_mission(self, event: LedgerEvent) -> None:
        current = self.missions.get(event.originator_id)
        if isinstance(event, LedgerCreated):
            if current is not None:
                return
            created = cast("Mission | None", event.mutate(None))
            assert isinstance(created, Mission)
            self._put_mission(created)
            return
        if current is None or event.originator_version <= current.version:
            return
        mission = _copy(current.mission)
        event.mutate(mission)
        if mission.state in {"active", "suspended"}:
            self._put_mission(mission)
        else:
            self.missions.pop(mission.id, None)

    def _apply_mandate(self, event: LedgerEvent) -> None:
        current = self.mandates.get(event.originator_id)
        if isinstance(event, ExecutionMandate.Issued):
            if current is None:
                mandate = cast("ExecutionMandate | None", event.mutate(None))
                assert isinstance(mandate, ExecutionMandate)
                self._put_mandate(mandate)
            return
        if current is None or event.originator_version <= current.version:
            return
        if isinstance(event, ExecutionMandate.Narrowed):
            current.entries = self._intern(event.authorization_details)
            current.token_version += 1
            current.version = event.originator_version
            return
        self._drop_mandate(current)

    # ------------------------------------------------------------------ internals

    def _put_mission(self, mission: Mission) -> None:
        self.missions[mission.id] = MissionEntry(
            mission=mission,
            entries=self._intern(mission.effective_authority()),
            contained=compile_containment(mission.contained_capabilities()),
            bounds=bounds_of(mission.intent.get("controls")),
        )

    def _put_mandate(self, mandate: ExecutionMandate) -> None:
        if not mandate.is_live():
            return
        client_id = _intern_str(str(mandate.holder.get("client_id")))
        instance_id = mandate.holder.get("instance_id")
        entry = MandateEntry(
            mandate_id=mandate.id,
            mission_id=_intern_str(mandate.mission_id),
            parent_id=mandate.parent_mandate_id,
            client_id=client_id,
            instance_id=None if instance_id is None else _intern_str(str(instance_id)),
            issuer=_intern_str(mandate.issuer),
            jkt=_jkt(mandate.cnf),
            entries=self._intern(mandate.authorization_details),
            expires_ts=mandate.expires_ts,
            not_before_ts=mandate.not_before_ts,
            state=mandate.state,
            token_version=mandate.token_version,
            version=mandate.version,
        )
        with self._lock:
            self.mandates[mandate.id] = entry
            self.by_client.setdefault(client_id, set()).add(mandate.id)

    def _drop_mandate(self, entry: MandateEntry) -> None:
        with self._lock:
            self.mandates.pop(entry.mandate_id, None)
            holders = self.by_client.get(entry.client_id)
            if holders is not None:
                holders.discard(entry.mandate_id)
                if not holders:
                    self.by_client.pop(entry.client_id, None)

    def _intern(self, raw: Sequence[Mapping[str, Any]]) -> tuple[CompiledEntry, ...]:
        key = jcs(list(raw))
        compiled = self._interned.get(key)
        if compiled is None:
            compiled = compile_entries(parse_authority_set(list(raw))) if raw else ()
            self._interned[key] = compiled
        return compiled

    def stats(self) -> dict[str, int]:
        return {
            "missions": len(self.missions),
            "mandates": len(self.mandates),
            "distinct_authority_sets": len(self._interned),
            "position": self.position,
        }


_STRINGS: dict[str, str] = {}


def _jkt(cnf: Mapping[str, Any]) -> str | None:
    value = cnf.get("jkt")
    return value if isinstance(value, str) else None


def _intern_str(value: str) -> str:
    return _STRINGS.setdefault(value, value)


def _copy(mission: Mission) -> Mission:
    clone = Mission.__new__(Mission)
    clone.__dict__.update(mission.__dict__)
    for key in ("contained", "nonces", "authority_set"):
        value = clone.__dict__.get(key)
        if isinstance(value, list | dict):
            clone.__dict__[key] = type(value)(value)
    clone.__dict__["_pending_events"] = []
    return clone
