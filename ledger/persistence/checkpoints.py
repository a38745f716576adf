"""The stored checkpoints (``ledger_checkpoints``, ``migrations/*/0007``): this module alone
reads and writes that table.

``issue`` is the election: every replica may call it, and within one interval exactly one
call signs. Under one write transaction (a transaction advisory lock on PostgreSQL, the
database write lock on SQLite, taken by ``BEGIN IMMEDIATE``) it reads the newest stored
checkpoint; when that is younger than the interval, or already signs the log's head,
nothing is signed. Otherwise it reads the head (position, link hash, and the events since
the previous checkpoint, so ``events`` costs a count of the new events only), signs it and
inserts it before the lock is released, so the next replica to look sees it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from ledger.domain.checkpoints import Checkpoint
from ledger.persistence.database import Cursor, Database, Dialect
from ledger.persistence.eventlog import EventLog
from ledger.signing.store import from_micros, to_micros

_ADVISORY_LOCK_KEY: Final = 0x4D4C_636B  # "MLck"
_COLUMNS: Final = "position, chain_hash, events, issued_at, issuer, kid, jws"

#: Signs a checkpoint payload: returns the compact JWS (``typ: ledger-checkpoint+jwt``).
SignPayload = Callable[[bytes], str]


class CheckpointError(RuntimeError):
    """The log cannot be checkpointed as it stands (its head is behind a signed checkpoint)."""


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    kid: str
    jws: str

    @property
    def position(self) -> int:
        return self.checkpoint.position

    @property
    def file_name(self) -> str:
        """Its name in a witness directory."""
        return f"{self.checkpoint.position}.jwt"


class Outcome(StrEnum):
    ISSUED = "issued"
    NOT_DUE = "not_due"  # the newest checkpoint is younger than the interval
    UNCHANGED = "unchanged"  # the newest checkpoint already signs the head
    EMPTY = "empty"  # no event yet


@dataclass(frozen=True)
class IssueResult:
    outcome: Outcome
    #: The newest checkpoint after the call (the one just issued, when one was).
    latest: StoredCheckpoint | None


def kid_of(jws: str) -> str:
    """The ``kid`` in a compact JWS's protected header ('' when there is none)."""
    segment = jws.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError:
        return ""
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else ""


class CheckpointStore:
    def __init__(self, database: Database, event_log: EventLog) -> None:
        self._db = database
        self._log = event_log

    def issue(
        self,
        *,
        now: datetime,
        issuer: str,
        sign: SignPayload,
        interval: timedelta | None,
    ) -> IssueResult:
        """Sign and store a checkpoint of the head unless one was issued less than
        ``interval`` before ``now`` (None: at shutdown, whatever the interval) or the newest
        one already signs the head."""
        with self._db.transaction() as cur:
            if self._db.dialect is Dialect.POSTGRES:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            latest = self._latest(cur)
            due = (
                latest is None or interval is None or now >= latest.checkpoint.issued_at + interval
            )
            if not due:
                return IssueResult(Outcome.NOT_DUE, latest)
            after = 0 if latest is None else latest.position
            head = self._log.head_link(cur, counted_after=after)
            if head is None:
                return IssueResult(Outcome.EMPTY, latest)
            if latest is not None and head.position <= after:
                if head.position == after:
                    return IssueResult(Outcome.UNCHANGED, latest)
                msg = (
                    f"the log's head (position {head.position}) is behind the newest signed "
                    f"checkpoint (position {after}): run `mission-ledger audit verify`"
                )
                raise CheckpointError(msg)
            checkpoint = Checkpoint(
                issuer=issuer,
                position=head.position,
                chain_hash=head.chain_hash,
                events=head.counted + (0 if latest is None else latest.checkpoint.events),
                issued_at=now,
            )
            jws = sign(checkpoint.payload())
            stored = StoredCheckpoint(checkpoint=checkpoint, kid=kid_of(jws), jws=jws)
            cur.execute(
                f"INSERT INTO ledger_checkpoints ({_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    checkpoint.position,
                    checkpoint.chain_hash,
                    checkpoint.events,
                    to_micros(now),
                    issuer,
                    stored.kid,
                    jws,
                ),
            )
        return IssueResult(Outcome.ISSUED, stored)

    def latest(self) -> StoredCheckpoint | None:
        with self._db.transaction(write=False) as cur:
            return self._latest(cur)

    def newest(self, limit: int) -> list[StoredCheckpoint]:
        """The ``limit`` newest checkpoints, newest first (the console's checkpoint status)."""
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM ledger_checkpoints "  # noqa: S608 - constant
            "ORDER BY position DESC LIMIT %s",
            (limit,),
        )
        return [self._stored(row) for row in rows]

    def count(self) -> int:
        row = self._db.fetchone("SELECT count(*) AS n FROM ledger_checkpoints")
        return 0 if row is None else int(row["n"])

    def between(self, first: int, last: int) -> list[StoredCheckpoint]:
        """Checkpoints at positions ``first`` to ``last`` (inclusive), in position order."""
        rows = self._db.fetchall(
            f"SELECT {_COLUMNS} FROM ledger_checkpoints "  # noqa: S608 - constant
            "WHERE position >= %s AND position <= %s ORDER BY position",
            (first, last),
        )
        return [self._stored(row) for row in rows]

    def first_after(self, position: int) -> StoredCheckpoint | None:
        """The oldest checkpoint at or after ``position``: the first to cover it."""
        row = self._db.fetchone(
            f"SELECT {_COLUMNS} FROM ledger_checkpoints "  # noqa: S608 - constant
            "WHERE position >= %s ORDER BY position LIMIT 1",
            (position,),
        )
        return None if row is None else self._stored(row)

    def at(self, positions: Iterable[int]) -> list[StoredCheckpoint]:
        """Checkpoints at exactly these positions, in position order."""
        wanted = sorted(set(positions))
        found: list[StoredCheckpoint] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("%s" for _ in chunk)
            rows = self._db.fetchall(
                f"SELECT {_COLUMNS} FROM ledger_checkpoints "  # noqa: S608 - placeholders only
                f"WHERE position IN ({marks}) ORDER BY position",
                chunk,
            )
            found += [self._stored(row) for row in rows]
        return found

    def _latest(self, cur: Cursor) -> StoredCheckpoint | None:
        cur.execute(
            f"SELECT {_COLUMNS} FROM ledger_checkpoints "  # noqa: S608 - constant
            "ORDER BY position DESC LIMIT 1"
        )
        row = cur.fetchone()
        return None if row is None else self._stored(row)

    @staticmethod
    def _stored(row: Mapping[str, Any]) -> StoredCheckpoint:
        return StoredCheckpoint(
            checkpoint=Checkpoint(
                issuer=str(row["issuer"]),
                position=int(row["position"]),
                chain_hash=bytes(row["chain_hash"]),
                events=int(row["events"]),
                issued_at=from_micros(int(row["issued_at"])),
            ),
            kid=str(row["kid"]),
            jws=str(row["jws"]),
        )
