"""Export evidence bundles from the live store (``GET /v1/audit/export``, ``mission-ledger
audit export``); the format is ``ledger.evidence.bundle`` (``docs/evidence.md``).

Two scopes:

* **A Mission**: every event of the Mission, of the proposal it was approved from, of its
  Mandate tree and of every Mandate issued or delegated under it, in position order. They
  are not contiguous in the log, so each line carries its predecessor's position and link
  hash: each link is recomputed on its own, links between bundled events are checked, and
  each aggregate's versions must run without a gap (``ledger.evidence.verify``).
* **A time range** ``[from, to)``: the contiguous run of positions from the first event
  recorded at or after ``from`` up to (not including) the first event after it recorded
  at or after ``to``. Contiguous, so each line chains from the one before it, and the
  first from the range's ``after_position``/``after_hash``. (Events are recorded in time
  order up to clock differences between replicas; the run ends at the first event that
  says ``to`` has come.)

With the events: the Mandate tokens of every Mandate version they made (re-signed with
the claims as issued, by the key that was active at issuance, which is how the holder got
them), the SETs still in the signal log that they caused, the checkpoints at their
positions plus the first one after the last, and the decision records a
``DecisionRecordSource`` supplies (none until the decision log is wired in).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Protocol, cast

import orjson

from api.views import decision_record_view
from ledger.application import Ledger
from ledger.domain.errors import InvalidRequest
from ledger.domain.instants import format_instant
from ledger.domain.mandate_claims import MANDATE_TYP, mandate_claims
from ledger.domain.mandate_tree import tree_id
from ledger.domain.mandates import ExecutionMandate
from ledger.evidence.bundle import (
    CHECKPOINTS,
    DECISIONS,
    EVENTS,
    JWKS,
    MANDATES,
    MANIFEST_TYP,
    RANGE_MISSION,
    RANGE_TIME,
    SETS,
    BundleWriter,
    EvidenceEvent,
)
from ledger.persistence.chain import GENESIS, ChainRow
from ledger.persistence.checkpoints import CheckpointStore, StoredCheckpoint, kid_of
from ledger.signing.keyring import Keyring, NoActiveSigningKey
from projections.decision_log import DecisionFilter, DecisionLog
from projections.signals import sets_caused_between

#: Mandate events after which the token has a new version (the ones a holder received).
_TOKEN_TOPICS = frozenset(
    cls.TOPIC
    for cls in (ExecutionMandate.Issued, ExecutionMandate.Delegated, ExecutionMandate.Narrowed)
)


@dataclass(frozen=True)
class ExportScope:
    """What to export: one Mission, or the events recorded in ``[start, end)``."""

    mission_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        timed = self.start is not None or self.end is not None
        if self.mission_id is not None and timed:
            raise InvalidRequest("export one mission, or a time range (from, to): not both")
        if self.mission_id is None:
            if self.start is None or self.end is None:
                raise InvalidRequest("export one mission, or a time range: give both from and to")
            if self.end <= self.start:
                raise InvalidRequest.at("/to", "to must be after from")


@dataclass(frozen=True)
class EventRange:
    """The positions an export covers (None for an empty time range)."""

    first: int | None
    last: int | None
    count: int


@dataclass
class _Written:
    """What the events of a bundle were, as they were written."""

    aggregates: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)  # each aggregate's last
    token_versions: list[tuple[str, int]] = field(default_factory=list)  # Mandate, version
    after: tuple[int, bytes] | None = None  # the first event's predecessor

    def add(self, event: EvidenceEvent) -> None:
        if self.after is None:
            self.after = (event.chain_prev, event.prev_hash)
        self.positions.append(event.position)
        self.versions[event.originator_id] = event.version
        if event.topic in _TOKEN_TOPICS:
            self.token_versions.append((event.originator_id, event.version))

    @property
    def range(self) -> EventRange:
        positions = self.positions
        return EventRange(
            first=positions[0] if positions else None,
            last=positions[-1] if positions else None,
            count=len(positions),
        )

    def manifest_range(self, scope: ExportScope) -> dict[str, Any]:
        covered = self.range
        claims: dict[str, Any] = {
            "first_position": covered.first,
            "last_position": covered.last,
            "events": covered.count,
        }
        if scope.mission_id is not None:
            return claims | {
                "kind": RANGE_MISSION,
                "mission": scope.mission_id,
                # Each aggregate's last version: a cut tail of any of them shows.
                "aggregates": {a: self.versions[a] for a in self.aggregates if a in self.versions},
            }
        assert scope.start is not None
        assert scope.end is not None
        return claims | {
            "kind": RANGE_TIME,
            "from": format_instant(scope.start),
            "to": format_instant(scope.end),
            "after_position": None if self.after is None else self.after[0],
            "after_hash": None if self.after is None else self.after[1].hex(),
        }


class DecisionRecordSource(Protocol):
    """Supplies the decision records (SPEC 7.4 decision log) an export includes: those
    about the scope's Mission, or recorded within its time range. Each record is a JSON
    object, written as one line of ``decisions.jsonl``. The decision log wires its reader
    in here (``Services.decision_records``); until then ``no_decision_records``."""

    def __call__(self, scope: ExportScope, events: EventRange) -> Iterable[Mapping[str, Any]]: ...


def no_decision_records(scope: ExportScope, events: EventRange) -> Iterable[Mapping[str, Any]]:
    """A ``DecisionRecordSource`` with none (a service built without a decision log)."""
    del scope, events
    return ()


def decision_log_records(log: DecisionLog, *, page: int = 1000) -> DecisionRecordSource:
    """The ``DecisionRecordSource`` of the decision log: the records about the scope's
    Mission, or made within its time range, in decision order, as ``GET /v1/audit/decisions``
    shows them."""

    def records(scope: ExportScope, events: EventRange) -> Iterator[Mapping[str, Any]]:
        del events
        where = DecisionFilter(mission=scope.mission_id, since=scope.start, until=scope.end)
        cursor: str | None = None
        while True:
            found, cursor = log.page(where, cursor=cursor, limit=page)
            yield from (decision_record_view(record) for record in found)
            if cursor is None:
                return

    return records


class EvidenceExporter:
    def __init__(
        self,
        ledger: Ledger,
        keyring: Keyring,
        *,
        issuer: str,
        alg: str,
        decisions: DecisionRecordSource = no_decision_records,
    ) -> None:
        self._ledger = ledger
        self._keyring = keyring
        self._issuer = issuer
        self._alg = alg
        self._decisions = decisions
        self._checkpoints = CheckpointStore(ledger.database, ledger.event_log)
        self._transcoder = ledger.mapper.transcoder

    def export(self, scope: ExportScope, out: IO[bytes]) -> dict[str, Any]:
        """Write the bundle of ``scope`` to ``out``; returns its manifest's claims.
        ``NotFound`` for an unknown Mission."""
        now = self._ledger.clock.now()
        manifest_kid = self._keyring.active(self._alg, now).kid
        with BundleWriter() as writer:
            written = self._write_events(scope, writer)
            kids = {manifest_kid, *self._write_signed(scope, written, writer)}
            writer.add_lines(DECISIONS, (dict(r) for r in self._decisions(scope, written.range)))
            writer.set_document(JWKS, self._keyring.public_jwks(kids))

            def sign(payload: bytes) -> str:
                token = self._keyring.sign_compact(
                    {"typ": MANIFEST_TYP}, payload, alg=self._alg, now=now
                )
                if kid_of(token) != manifest_kid:  # a rotation took effect meanwhile
                    msg = "the signing key changed during the export; export again"
                    raise RuntimeError(msg)
                return token

            range_ = written.manifest_range(scope)
            return writer.finish(out, issuer=self._issuer, created_at=now, range_=range_, sign=sign)

    def _write_events(self, scope: ExportScope, writer: BundleWriter) -> _Written:
        written = _Written()
        if scope.mission_id is not None:
            written.aggregates = self._mission_aggregates(scope.mission_id)
            events = self._mission_events(written.aggregates)
        else:
            assert scope.start is not None
            assert scope.end is not None
            events = self._range_events(scope.start, scope.end)
        for event in events:
            written.add(event)
            writer.add_lines(EVENTS, (event.to_json(),))
        return written

    def _write_signed(
        self, scope: ExportScope, written: _Written, writer: BundleWriter
    ) -> set[str]:
        """Mandate tokens, SETs and checkpoints; the kids of the keys that signed them."""
        kids: set[str] = set()
        for line in self._mandate_tokens(written.token_versions):
            kids.add(kid_of(line["token"]))
            writer.add_lines(MANDATES, (line,))
        for line in self._sets(scope, written.range, written.positions):
            kids.add(kid_of(line["set"]))
            writer.add_lines(SETS, (line,))
        for checkpoint in self._covering_checkpoints(scope, written.range, written.positions):
            kids.add(checkpoint.kid)
            writer.add_lines(CHECKPOINTS, (_checkpoint_line(checkpoint),))
        return kids

    # ------------------------------------------------------------------ events

    def _mission_aggregates(self, mission_id: str) -> list[str]:
        """The Mission's proposal, the Mission, its Mandate tree and every Mandate in it."""
        mission = self._ledger.get_mission(mission_id)
        tree = self._ledger.get_tree(mission_id)
        mandates = [] if tree is None else list(tree.mandate_ids)
        ids = [mission.submission_id, mission.id]
        if tree is not None:
            ids.append(tree_id(mission_id))
        return ids + sorted(mandates)

    def _mission_events(self, aggregates: list[str]) -> Iterator[EvidenceEvent]:
        for row, prev_hash in self._ledger.event_log.linked_rows(aggregates):
            yield self._evidence(row, prev_hash)

    def _range_events(self, start: datetime, end: datetime) -> Iterator[EvidenceEvent]:
        prev_hash = GENESIS
        started = False
        for row in self._ledger.event_log.chain_rows():
            event = self._evidence(row, prev_hash)
            prev_hash = event.chain_hash
            recorded = event.recorded_at
            if not started:
                started = recorded is not None and recorded >= start
            if started:
                if recorded is not None and recorded >= end:
                    return
                yield event

    def _evidence(self, row: ChainRow, prev_hash: bytes) -> EvidenceEvent:
        if (
            row.originator_id is None
            or row.version is None
            or row.topic is None
            or row.state is None
            or row.chain_hash is None
            or row.chain_prev is None
        ):
            msg = (
                f"the log is broken at position {row.position} (run `mission-ledger audit "
                "verify`): it cannot be exported as evidence"
            )
            raise RuntimeError(msg)
        recorded_at, actor = self._decoded(row.state)
        return EvidenceEvent(
            position=row.position,
            chain_prev=row.chain_prev,
            prev_hash=prev_hash,
            chain_hash=row.chain_hash,
            originator_id=row.originator_id,
            version=row.version,
            topic=row.topic,
            state=row.state,
            recorded_at=recorded_at,
            actor=actor,
        )

    def _decoded(self, state: bytes) -> tuple[datetime | None, Mapping[str, Any] | None]:
        """The instant and actor the stored event names. Fast path: the JSON the store's
        transcoder writes (``timestamp`` as its ``datetime_iso`` object), read with orjson;
        anything else goes through the transcoder itself."""
        try:
            stored = orjson.loads(state)
            stamp = stored["timestamp"]
            if stamp["_type_"] == "datetime_iso":
                actor = stored.get("actor")
                return (
                    datetime.fromisoformat(stamp["_data_"]),
                    actor if isinstance(actor, dict) else None,
                )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        try:
            decoded = self._transcoder.decode(state)
        except ValueError:
            return None, None
        if not isinstance(decoded, dict):
            return None, None
        timestamp, actor = decoded.get("timestamp"), decoded.get("actor")
        return (
            timestamp if isinstance(timestamp, datetime) else None,
            actor if isinstance(actor, dict) else None,
        )

    # ------------------------------------------------------------------ signed things

    def _mandate_tokens(self, made: list[tuple[str, int]]) -> Iterator[dict[str, Any]]:
        """For each (Mandate, version) whose event made a new token version: the token."""
        by_mandate: dict[str, set[int]] = {}
        for mandate_id, version in made:
            by_mandate.setdefault(mandate_id, set()).add(version)
        for mandate_id in sorted(by_mandate):
            wanted = by_mandate[mandate_id]
            mandate: ExecutionMandate | None = None
            for logged in self._ledger.history(mandate_id):
                mandate = cast("ExecutionMandate | None", logged.event.mutate(mandate))
                if logged.event.originator_version not in wanted or mandate is None:
                    continue
                yield {
                    "mandate_id": mandate_id,
                    "mandate_version": mandate.token_version,
                    "position": logged.position,
                    "token": self._sign_mandate(mandate),
                }

    def _sign_mandate(self, mandate: ExecutionMandate) -> str:
        payload = json.dumps(
            mandate_claims(mandate), separators=(",", ":"), ensure_ascii=False
        ).encode()
        alg = self._ledger.mandate_alg
        try:
            return self._keyring.sign_compact(
                {"typ": MANDATE_TYP}, payload, alg=alg, now=mandate.token_issued_at
            )
        except NoActiveSigningKey:  # no key of that alg was active then: today's signs
            return self._keyring.sign_compact(
                {"typ": MANDATE_TYP}, payload, alg=alg, now=self._ledger.clock.now()
            )

    def _sets(
        self, scope: ExportScope, covered: EventRange, positions: list[int]
    ) -> Iterator[dict[str, Any]]:
        if covered.first is None or covered.last is None:
            return iter(())
        only = set(positions) if scope.mission_id is not None else None
        return sets_caused_between(
            self._ledger.database, covered.first, covered.last, positions=only
        )

    def _covering_checkpoints(
        self, scope: ExportScope, covered: EventRange, positions: list[int]
    ) -> list[StoredCheckpoint]:
        """Checkpoints at the bundle's positions, and the first one after its last event."""
        if covered.first is None or covered.last is None:
            return []
        if scope.mission_id is not None:
            found = self._checkpoints.at(positions)
        else:
            found = self._checkpoints.between(covered.first, covered.last)
        after = self._checkpoints.first_after(covered.last + 1)
        return found + ([] if after is None else [after])


def _checkpoint_line(stored: StoredCheckpoint) -> dict[str, Any]:
    checkpoint = stored.checkpoint
    return {
        "position": checkpoint.position,
        "chain_hash": checkpoint.chain_hash.hex(),
        "events": checkpoint.events,
        "issued_at": format_instant(checkpoint.issued_at),
        "jws": stored.jws,
    }
