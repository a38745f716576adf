"""What the server and its Meter writer process say to each other over their two pipes
(``meter_process`` is the server's side, ``meter_child`` the writer's).

Server to writer, one message per group: its operations, in order. Writer to server, one
per group: its ``Applied`` (or the failure every operation of the group is answered with),
the positions the save took and their events' topics. A message is its length (``>I``)
and its payload, written and read straight on the pipes' file descriptors: the server's
writer thread waits for the answer with one ``poll`` object kept for the child's life, and
reads it in one ``read`` (each Python-level step there is work done holding the
interpreter lock the decisions need).

Both are pickled (the two ends are one program, the bytes never leave the machine), but
the two operations that make up nearly every group, a ``Draw`` (a permit answered from this
replica's lease) and a ``Report`` (a usage report), cross as flat tuples of their fields
(strings, ``None``, a draw's expiry as a ``datetime``), and a ``Reported`` outcome as one
tuple: pickling a frozen dataclass goes through its
``__reduce_ex__`` and state dictionary, and the server pickles on its writer thread, which
shares the interpreter lock with the decisions (``bench/README.md``, "2026-12-07"). The
actors of a group's reports are sent once each. Every other operation and outcome (a
reservation the durable way, a lease returned or renewed, an expiry count, a refusal) is
rare and crosses as it is.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from typing import Any

from ledger.application.meter_operations import Applied, Draw, Operation, Report, Reported
from ledger.domain.actors import Actor
from ledger.domain.errors import LedgerError
from ledger.domain.metering import MeteredCall, Settlement

LENGTH = struct.Struct(">I")
#: How much a read asks for at once (a group's reply is a few KiB).
READ_SIZE = 1 << 16
#: The first item of a flat operation's tuple.
DRAW = 1
REPORT = 2

Reply = tuple[Applied | None, list[int], frozenset[str], LedgerError | None]


def encode_group(operations: Sequence[Operation]) -> bytes:
    actors: dict[Actor, int] = {}
    flat: list[object] = []
    for operation in operations:
        if isinstance(operation, Draw):  # an exact type: CPython's first, cheapest check
            call = operation.call
            flat.append(
                (
                    DRAW,
                    operation.mission_id,
                    operation.lease_id,
                    call.amount,
                    call.currency,
                    call.call_class,
                    operation.evaluation_id,
                    operation.mandate_id,
                    operation.expires_at,
                )
            )
        elif isinstance(operation, Report):
            actor = actors.setdefault(operation.actor, len(actors))
            flat.append(
                (
                    REPORT,
                    operation.mission_id,
                    operation.evaluation_id,
                    operation.outcome,
                    operation.amount,
                    actor,
                )
            )
        else:
            flat.append(operation)
    return pickle.dumps((flat, list(actors)), pickle.HIGHEST_PROTOCOL)


def decode_group(data: bytes) -> list[Operation]:
    flat, actors = pickle.loads(data)  # noqa: S301 - the server's own bytes
    operations: list[Operation] = []
    for item in flat:
        if type(item) is not tuple:
            operations.append(item)
        elif item[0] == DRAW:
            _, mission, lease, amount, currency, call_class, evaluation, mandate, expires = item
            call = MeteredCall(amount=amount, currency=currency, call_class=call_class)
            operations.append(Draw(mission, lease, call, evaluation, mandate, expires))
        else:
            _, mission, evaluation, outcome, amount, actor = item
            operations.append(Report(mission, evaluation, outcome, amount, actors[actor]))
    return operations


def encode_reply(
    applied: Applied | None,
    positions: Sequence[int],
    topics: frozenset[str],
    failure: LedgerError | None,
) -> bytes:
    body: tuple[Any, ...] | None = None
    if applied is not None:
        outcomes = [
            (o.settlement.outcome, o.settlement.units, o.settlement.amount, o.replayed)
            if type(o) is Reported
            else o
            for o in applied.outcomes
        ]
        body = (
            outcomes,
            applied.granted,
            applied.conflicts,
            applied.apply_seconds,
            applied.save_seconds,
        )
    return pickle.dumps((body, list(positions), topics, failure), pickle.HIGHEST_PROTOCOL)


def decode_reply(data: bytes) -> Reply:
    body, positions, topics, failure = pickle.loads(data)  # noqa: S301 - our child's
    if body is None:
        return None, positions, topics, failure
    flat, granted, conflicts, apply_seconds, save_seconds = body
    outcomes = [
        Reported(Settlement(o[0], o[1], o[2]), o[3]) if type(o) is tuple else o for o in flat
    ]
    return (
        Applied(outcomes, granted, conflicts, apply_seconds, save_seconds),
        positions,
        topics,
        failure,
    )


def write_message(fd: int, payload: bytes) -> None:
    """Write one message to the pipe ``fd`` (blocking, whole)."""
    data = memoryview(LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


class MessageReader:
    """Whole messages from the pipe ``fd`` (a pipe delivers any number of bytes at a
    time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def read(self) -> bytes:
        """The next message (blocking); ``EOFError`` when the pipe ends first."""
        buffer = self._buffer
        while True:
            wanted = LENGTH.size
            if len(buffer) >= LENGTH.size:
                wanted += LENGTH.unpack_from(buffer)[0]
                if len(buffer) >= wanted:
                    payload = bytes(buffer[LENGTH.size : wanted])
                    del buffer[:wanted]
                    return payload
            chunk = os.read(self.fd, max(READ_SIZE, wanted - len(buffer)))
            if not chunk:
                raise EOFError
            buffer += chunk
