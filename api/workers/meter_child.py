"""The Meter writer process (``METER_WRITER=process``; decision 0019, "A writer process").

Started by the server (``meter_process.ProcessMeterBook``) as ``python -m
api.workers.meter_child REQUESTS_FD REPLIES_FD`` with its configuration in the environment
(``meter_process.CONFIG_ENV``). It opens a Ledger on the server's store, and for each group
it reads (its metering operations, ``meter_frames``) applies it with a ``MeterBook`` and sends
back ``(Applied, positions saved, their topics, failure)``: ``failure`` is the
``LedgerError`` every operation of the group is answered with when the group could not be
written.

It ends when the requests pipe ends (the server closed it at shutdown, or died).
Interrupts and termination requests are the server's to handle: the child ignores them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from api.workers.children import child_started
from api.workers.meter_frames import MessageReader, decode_group, encode_reply, write_message
from api.workers.meter_process import CONFIG_ENV
from ledger.application.base import LedgerBase
from ledger.application.meter_book import MeterBook
from ledger.application.meter_operations import write_failure
from ledger.clock import SystemClock
from ledger.domain.errors import LedgerError

log = logging.getLogger("mission_ledger.metering")


def serve(book: MeterBook, ledger: LedgerBase, requests: MessageReader, replies: int) -> int:
    """Apply every group the server sends until its pipe ends; the exit status."""
    saved: list[int] = []
    topics: set[str] = set()

    def heard(positions: Sequence[int], written: frozenset[str]) -> None:
        saved.extend(positions)
        topics.update(written)

    ledger.commit_listeners.add(heard)
    while True:
        try:
            data = requests.read()
        except EOFError:
            return 0
        saved.clear()
        topics.clear()
        operations = decode_group(data)
        failure: LedgerError | None = None
        applied = None
        try:
            applied = book.apply(operations)
        except Exception as error:  # the store failed: the server answers the whole group
            log.warning("metering group of %d failed", len(operations), exc_info=True)
            failure = write_failure(error)
        try:
            write_message(replies, encode_reply(applied, saved, frozenset(topics), failure))
        except OSError:
            return 0  # the server is gone


def main(argv: list[str]) -> int:
    child_started("meter writer process")
    config: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
    requests = MessageReader(int(argv[0]))
    replies = int(argv[1])
    ledger = LedgerBase(
        config["store"],
        clock=SystemClock(),
        issuer=config["issuer"],
        proposal_ttl=timedelta(0),  # no proposals are written here
        policy_version=config["policy_version"],
    )
    try:
        book = MeterBook(
            ledger, holder=config["holder"], lease_seconds=float(config["lease_seconds"])
        )
        return serve(book, ledger, requests, replies)
    finally:
        ledger.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
