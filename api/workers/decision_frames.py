"""What the server and its decision log writer process say to each other over their two
pipes (``decision_process`` is the server's side, ``decision_child`` the writer's).

Server to writer, one frame per answer: a header (``>QBI``: the answer's sequence number,
flags, payload length) and the payload, ``projections.decision_log.encode_wires`` of the
answer's records. Flag ``REPEATED``: the frame was sent to a writer that died before
acknowledging it; its records may be stored already.

Writer to server, one acknowledgement per event (``>QII``): after a commit, the sequence
number of the last answer in it (every answer up to it is stored: frames are written in
order), the rows in the commit and 0; after a failed attempt to write, 0, 0 and 1.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct(">QBI")
ACK = struct.Struct(">QII")
REPEATED = 1
#: The environment variable that carries the writer's configuration (JSON).
CONFIG_ENV = "MISSION_LEDGER_DECISION_WRITER_CONFIG"
#: The writer asks for pipes this large (Linux: ``F_SETPIPE_SZ``; at most the system's
#: ``pipe-max-size``): a second of records at a few thousand decisions a second.
PIPE_SIZE = 1 << 20


def frame(seq: int, payload: bytes, *, repeated: bool = False) -> bytes:
    return HEADER.pack(seq, REPEATED if repeated else 0, len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    repeated: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    through: int  # 0: no commit (a failed attempt)
    rows: int
    failures: int


def committed(through: int, rows: int) -> bytes:
    return ACK.pack(through, rows, 0)


FAILED = ACK.pack(0, 0, 1)


class _Reader:
    """Bytes in, whole messages out (a pipe delivers any number of bytes at a time)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def _feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def partial(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buffer)


class FrameReader(_Reader):
    def feed(self, data: bytes) -> Iterator[Frame]:
        self._feed(data)
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            seq, flags, length = HEADER.unpack_from(buffer, offset)
            end = offset + HEADER.size + length
            if len(buffer) < end:
                break
            yield Frame(seq, bool(flags & REPEATED), bytes(buffer[offset + HEADER.size : end]))
            offset = end
        del buffer[:offset]


class AckReader(_Reader):
    def feed(self, data: bytes) -> Iterator[Ack]:
        self._feed(data)
        buffer = self._buffer
        whole = len(buffer) - len(buffer) % ACK.size
        for offset in range(0, whole, ACK.size):
            yield Ack(*ACK.unpack_from(buffer, offset))
        del buffer[:whole]


def enlarge(fd: int) -> None:
    """Ask for a ``PIPE_SIZE`` pipe (best effort: Linux only, bounded by the system)."""
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):
        pass
