"""How far below the server a background writer process runs (``WRITER_PROCESS_NICE``,
``WRITER_PROCESS_IDLE``): plain data, importable by the writer processes without the
settings' dependencies."""

from __future__ import annotations

from typing import NamedTuple


class WriterPriority(NamedTuple):
    """The default is the server's own priority."""

    nice: int = 0  # steps of Unix ``nice`` below the server
    idle: bool = False  # the Linux ``SCHED_IDLE`` policy


#: A writer that runs as the server does (answers wait for it).
SERVER_PRIORITY = WriterPriority()
