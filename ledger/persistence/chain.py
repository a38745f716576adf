"""The hash chain over the ledger, and its verifier.

Each stored event carries ``hash(n)``::

    SHA-256( hash(prev) ‖ int8be(position) ‖ len32be(oid) ‖ oid ‖ int8be(version)
             ‖ len32be(topic) ‖ topic ‖ len32be(state) ‖ state )

where ``prev`` is the previous committed event in position order (positions may
skip numbers: failed inserts burn sequence values), ``oid`` and ``topic`` are
UTF-8, ``state`` is the stored bytes, and the genesis predecessor hash is 32 zero
bytes. Each link also records its predecessor's position, so a deletion is told
apart from a normal gap.

PostgreSQL computes links in a ``BEFORE INSERT`` trigger (``migrations/postgres``);
SQLite computes them in the recorder (``ledger.persistence.sqlite``). Both are
checked by the one verifier below, which reads rows in position order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

GENESIS = bytes(32)


_QI = struct.Struct(">qi")
_I = struct.Struct(">i")


def link_hash(
    prev: bytes, position: int, originator_id: str, version: int, topic: str, state: bytes
) -> bytes:
    oid = originator_id.encode("utf-8")
    top = topic.encode("utf-8")
    # One buffer, one hash call: the verifier spends most of its time here.
    return hashlib.sha256(
        b"".join(
            (
                prev,
                _QI.pack(position, len(oid)),
                oid,
                _QI.pack(version, len(top)),
                top,
                _I.pack(len(state)),
                state,
            )
        )
    ).digest()


class ChainRow(NamedTuple):
    """One position of the log as stored: the event (if present) and its link (if present).
    (A named tuple: the verifier makes one per event, and a tuple is the cheapest to make.)"""

    position: int
    originator_id: str | None
    version: int | None
    topic: str | None
    state: bytes | None
    chain_prev: int | None
    chain_hash: bytes | None


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a verification. ``first_bad`` is None when the chain is intact."""

    checked: int
    head_position: int
    head_hash: bytes
    first_bad: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.first_bad is None


def verify_chain(rows: Iterable[ChainRow]) -> ChainReport:
    """Walk the log in position order and report the first position that breaks the chain."""
    prev_position = 0
    prev_hash = GENESIS
    checked = 0
    link = link_hash
    for position, oid, version, topic, state, chain_prev, chain_hash in rows:
        if oid is None or topic is None or state is None or version is None:
            return _bad(checked, prev_position, prev_hash, position, "event missing")
        if chain_hash is None or chain_prev is None:
            return _bad(checked, prev_position, prev_hash, position, "event has no chain link")
        if chain_prev != prev_position:
            if prev_position < chain_prev < position:
                return _bad(
                    checked,
                    prev_position,
                    prev_hash,
                    chain_prev,
                    f"event missing (position {position} chains from {chain_prev}, "
                    "which is not in the log)",
                )
            return _bad(
                checked,
                prev_position,
                prev_hash,
                position,
                f"event out of order or inserted (it chains from {chain_prev}, "
                f"but the previous event is {prev_position})",
            )
        if link(prev_hash, position, oid, version, topic, state) != chain_hash:
            return _bad(
                checked,
                prev_position,
                prev_hash,
                position,
                "content does not match its chain hash (altered, reordered or replaced)",
            )
        prev_position = position
        prev_hash = chain_hash
        checked += 1
    return ChainReport(checked=checked, head_position=prev_position, head_hash=prev_hash)


def _bad(
    checked: int, head_position: int, head_hash: bytes, position: int, problem: str
) -> ChainReport:
    return ChainReport(
        checked=checked,
        head_position=head_position,
        head_hash=head_hash,
        first_bad=position,
        problem=problem,
    )


@dataclass(frozen=True)
class Anchor:
    """A chain head signed earlier (a checkpoint): the store's chain must still hold
    ``chain_hash`` at ``position``, with ``events`` events up to it. ``source`` names where
    the anchor came from (a checkpoint file), for the report."""

    position: int
    chain_hash: bytes
    events: int
    source: str


@dataclass(frozen=True)
class AnchorFailure:
    anchor: Anchor
    problem: str


class _Recorder:
    """Passes chain rows through while noting, at each anchored position, the stored link
    hash and the number of events up to it."""

    def __init__(self, rows: Iterable[ChainRow], positions: set[int]) -> None:
        self._rows = iter(rows)
        self._wanted = positions
        self._last_wanted = max(positions, default=0)
        self.events = 0
        self.last_position = 0
        self.seen: dict[int, tuple[bytes | None, int]] = {}

    def __iter__(self) -> Iterator[ChainRow]:
        wanted = self._wanted
        for row in self._rows:
            if row.originator_id is not None:
                self.events += 1
            self.last_position = row.position
            if row.position in wanted:
                self.seen[row.position] = (row.chain_hash, self.events)
            yield row

    def drain(self) -> None:
        """Read on past where the verifier stopped, up to the last anchored position."""
        if self.last_position < self._last_wanted:
            for _ in self:
                if self.last_position >= self._last_wanted:
                    return


def verify_chain_against(
    rows: Iterable[ChainRow], anchors: Iterable[Anchor]
) -> tuple[ChainReport, list[AnchorFailure]]:
    """``verify_chain``, and each anchor checked against the stored chain: a truncated tail
    or a recomputed chain keeps the chain itself intact, but loses the anchored link."""
    anchored = list(anchors)
    if not anchored:
        return verify_chain(rows), []
    recorder = _Recorder(rows, {a.position for a in anchored})
    report = verify_chain(recorder)
    recorder.drain()
    failures = []
    for anchor in anchored:
        problem = _anchor_problem(anchor, recorder.seen.get(anchor.position))
        if problem is not None:
            failures.append(AnchorFailure(anchor, problem))
    return report, failures


def _anchor_problem(anchor: Anchor, seen: tuple[bytes | None, int] | None) -> str | None:
    stored_hash, events = (None, 0) if seen is None else seen
    if stored_hash is None:
        return (
            f"the store's chain has no event at position {anchor.position}, which the "
            "checkpoint signed: the log was truncated or that event removed"
        )
    if stored_hash != anchor.chain_hash:
        return (
            f"the store's chain hash at position {anchor.position} is {stored_hash.hex()}, "
            f"the checkpoint signed {anchor.chain_hash.hex()}: the chain was rewritten since"
        )
    if events != anchor.events:
        return (
            f"the store holds {events} events up to position {anchor.position}, the "
            f"checkpoint signed {anchor.events}: events were removed or inserted"
        )
    return None
