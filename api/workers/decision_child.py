"""The decision log writer process (``DECISION_LOG_WRITER=process``, the default; decision
0017, "A writer process").

Started by the server (``decision_process.ProcessDecisionWriter``) as
``python -m api.workers.decision_child FRAMES_FD ACKS_FD`` with its configuration in the
environment (``decision_frames.CONFIG_ENV``). It reads the records of each answer from the
frames pipe (``decision_frames``), turns them into rows (the JCS digest of each request,
the JSON of its members: the work that would otherwise share the server's interpreter lock
with the decision path), and stores them in batches: a batch is taken once its first record
has waited a quarter of the flush window (at once in sync mode, or once it is full),
written with the retries of ``decision_writer.store_batch``, and acknowledged.

It ends when the frames pipe ends (the server closed it at shutdown, or died), after
writing everything it has read. Interrupts and termination requests are the server's to
handle (a Ctrl-C or a ``systemctl stop`` reaches the whole process group): the writer
ignores them and finishes what the server sent. A server that died leaves it at most
``ABANDON_SECONDS`` to reach an unreachable store before it gives up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from api.workers.children import child_started
from api.workers.decision_frames import (
    CONFIG_ENV,
    FAILED,
    FrameReader,
    committed,
    enlarge,
)
from api.workers.decision_writer import BATCH_SIZE, LINGER_SHARE, store_batch
from ledger.persistence.database import open_database
from projections.decision_log import DecisionLog, Row, decode_wires, row_of

log = logging.getLogger("mission_ledger.decision_log")

#: Once the server is gone, the writer gives up on an unreachable store after this long.
ABANDON_SECONDS = 30.0
READ_SIZE = 1 << 20


@dataclass
class _Batch:
    rows: list[Row] = field(default_factory=list)
    through: int = 0  # the sequence number of its last answer
    repeated: bool = False
    since: float = 0.0  # when its first record arrived (time.monotonic())


class ChildWriter:
    def __init__(
        self, store: DecisionLog, frames: int, acks: int, *, linger: float, batch_size: int
    ) -> None:
        self._store = store
        self._frames = frames
        self._acks = acks
        self._linger = linger
        self._batch_size = batch_size
        self._reader = FrameReader()
        self._batch = _Batch()
        self._ended_at: float | None = None  # when the frames pipe ended
        self._parent = os.getppid()

    def run(self) -> int:
        """Write until the frames pipe ends; the exit status (0: everything written)."""
        while True:
            if self._ended_at is None:
                select.select([self._frames], [], [])  # the first answer of a batch, or the end
            self._read()
            # Let the batch gather for the linger without reading meanwhile (the pipe holds
            # what arrives): one wake-up per batch rather than one per send.
            deadline = self._batch.since + self._linger
            while (
                self._ended_at is None
                and len(self._batch.rows) < self._batch_size
                and (left := deadline - time.monotonic()) > 0
            ):
                time.sleep(left)
                self._read()
            batch, self._batch = self._batch, _Batch()
            if batch.through:  # (its rows may be none: frames it could not read)
                if not store_batch(
                    self._store, batch.rows, repeated=batch.repeated, failed=self._failed
                ):
                    log.error(
                        "decision log writer: %d records not written (the server is gone and "
                        "the store unreachable for %.0f s)",
                        len(batch.rows),
                        ABANDON_SECONDS,
                    )
                    return 1
                self._say(committed(batch.through, len(batch.rows)))
            elif self._ended_at is not None:
                return 0

    def _read(self) -> None:
        """Take every frame the pipe holds (without waiting) into the batch."""
        while self._ended_at is None:
            try:
                data = os.read(self._frames, READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                self._ended_at = time.monotonic()
                if self._reader.partial:
                    log.error("decision log writer: the server's last frame was cut short")
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        batch = self._batch
        for frame in self._reader.feed(data):
            if not batch.rows:
                batch.since = time.monotonic()
            try:
                batch.rows.extend(row_of(wire) for wire in decode_wires(frame.payload))
            except Exception:  # a frame this writer cannot read: say so, go on
                log.exception("decision log writer: answer %d has no readable records", frame.seq)
            batch.through = frame.seq
            batch.repeated = batch.repeated or frame.repeated

    def _failed(self, pause: float) -> bool:
        self._say(FAILED)
        time.sleep(pause)
        if self._ended_at is None and os.getppid() != self._parent:
            self._ended_at = time.monotonic()  # the server died meanwhile
        return self._ended_at is not None and time.monotonic() - self._ended_at > ABANDON_SECONDS

    def _say(self, message: bytes) -> None:
        with contextlib.suppress(OSError):  # the server is gone: write what is left anyway
            os.write(self._acks, message)


def main(argv: list[str]) -> int:
    child_started("writer process")
    frames, acks = int(argv[0]), int(argv[1])
    config: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
    enlarge(frames)
    os.set_blocking(frames, False)
    database = open_database(config["store"])
    linger = 0.0 if config["mode"] == "sync" else config["flush_ms"] / 1000 * LINGER_SHARE
    try:
        return ChildWriter(
            DecisionLog(database, shares_interpreter=False),
            frames,
            acks,
            linger=linger,
            batch_size=int(config.get("batch_size", BATCH_SIZE)),
        ).run()
    finally:
        database.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
