"""Signed checkpoints of the hash chain (SPEC 7.4): what is signed, and how it is read back.

A chain alone cannot show that its newest events were cut off, or that someone with write
access recomputed every link after an edit (``reference/hash-chain-notes.md``). A
checkpoint anchors the chain outside the database: the ledger signs the head it sees,
``{iss, position, chain_hash, events, issued_at}``, as a compact JWS with ``typ:
ledger-checkpoint+jwt``, and hands it to witnesses. Any later store whose chain no longer
holds that (position, chain_hash), or holds another number of events up to it, was cut or
rewritten.

* ``position``: the log position of the head event;
* ``chain_hash``: that event's link hash, lowercase hex (as ``GET /v1/audit/log``);
* ``events``: how many events the log holds at positions up to ``position`` (positions
  skip numbers, so this is not ``position``);
* ``issued_at``: RFC 3339 UTC; ``iss``: the ledger's public issuer URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ledger.domain.instants import format_instant

CHECKPOINT_TYP: Final = "ledger-checkpoint+jwt"


class MalformedCheckpoint(ValueError):
    """A checkpoint payload that is not the JSON object described above."""


@dataclass(frozen=True)
class Checkpoint:
    """The claims of one checkpoint."""

    issuer: str
    position: int
    chain_hash: bytes
    events: int
    issued_at: datetime

    def claims(self) -> dict[str, Any]:
        return {
            "iss": self.issuer,
            "position": self.position,
            "chain_hash": self.chain_hash.hex(),
            "events": self.events,
            "issued_at": format_instant(self.issued_at),
        }

    def payload(self) -> bytes:
        """The JWS payload: the claims as compact JSON."""
        return json.dumps(self.claims(), separators=(",", ":")).encode("utf-8")


def checkpoint_from_claims(claims: object) -> Checkpoint:
    """Read checkpoint claims (already verified, or about to be compared) strictly."""
    if not isinstance(claims, dict):
        msg = "the checkpoint payload is not a JSON object"
        raise MalformedCheckpoint(msg)
    try:
        issuer, position, chain_hash = claims["iss"], claims["position"], claims["chain_hash"]
        events, issued_at = claims["events"], claims["issued_at"]
    except KeyError as missing:
        msg = f"the checkpoint has no {missing.args[0]!r}"
        raise MalformedCheckpoint(msg) from None
    if not isinstance(issuer, str):
        msg = "the checkpoint's iss is not a string"
        raise MalformedCheckpoint(msg)
    for name, value in (("position", position), ("events", events)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            msg = f"the checkpoint's {name} is not a positive integer"
            raise MalformedCheckpoint(msg)
    try:
        digest = bytes.fromhex(chain_hash) if isinstance(chain_hash, str) else b""
        instant = datetime.fromisoformat(issued_at) if isinstance(issued_at, str) else None
    except ValueError:
        digest, instant = b"", None
    if len(digest) != 32:
        msg = "the checkpoint's chain_hash is not 32 bytes of hex"
        raise MalformedCheckpoint(msg)
    if instant is None or instant.tzinfo is None:
        msg = "the checkpoint's issued_at is not an RFC 3339 instant"
        raise MalformedCheckpoint(msg)
    return Checkpoint(
        issuer=issuer, position=position, chain_hash=digest, events=events, issued_at=instant
    )


def parse_checkpoint_payload(payload: bytes) -> Checkpoint:
    try:
        claims = json.loads(payload)
    except ValueError:
        msg = "the checkpoint payload is not JSON"
        raise MalformedCheckpoint(msg) from None
    return checkpoint_from_claims(claims)
