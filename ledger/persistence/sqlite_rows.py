"""Many rows in few SQLite statements, for writers that share the interpreter lock.

Python's ``sqlite3`` lets other threads run during each statement and takes the
interpreter lock back after it: ``executemany`` (or a loop of ``execute``) does that once
per row. In a server whose event loop is busy, each take-back waits for the loop to let go
of the lock, up to the switch interval (``api/switch_interval.py``): a writer thread saving
hundreds of rows then takes hundreds of those waits (the Meter writer's saves took about
0.34 s a group under metered load, most of it waiting), and every hand-over interrupts a
decision in progress. A few multi-row statements take the lock back a few times.

The statements have a few fixed sizes (``CHUNKS``: powers of two, largest first), so each
shape is prepared once and kept in the connection's statement cache
(``ledger.persistence.sqlite_connections``), and on SQLite 3.32 and later n rows of up to
63 parameters take at most n // 512 + 9 statements (30 rows: 16 + 8 + 4 + 2).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

#: Rows per statement, largest first. SQLite before 3.32 allows 999 parameters a statement.
CHUNKS = tuple(2**n for n in range(9 if sqlite3.sqlite_version_info >= (3, 32) else 6, -1, -1))
#: ``INSERT … RETURNING`` (SQLite 3.35 and later): a multi-row insert tells each row's rowid.
RETURNING = sqlite3.sqlite_version_info >= (3, 35)
#: The most parameters a statement of ``CHUNKS`` may carry (beyond it, smaller chunks).
MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999


def chunks(count: int, width: int) -> Iterator[tuple[int, int]]:
    """``(start, rows)`` of each statement for ``count`` rows of ``width`` parameters."""
    done = 0
    for size in CHUNKS:
        if size > 1 and size * width > MAX_PARAMETERS:
            continue
        while count - done >= size:
            yield done, size
            done += size


@functools.lru_cache(maxsize=256)
def values(rows: int, width: int, placeholder: str = "?") -> str:
    """``(?, ?), (?, ?)``: the VALUES list of ``rows`` rows of ``width`` parameters."""
    one = "(" + ", ".join([placeholder] * width) + ")"
    return ", ".join([one] * rows)


@functools.lru_cache(maxsize=256)
def in_list(count: int, placeholder: str = "?") -> str:
    """``(?, ?, ?)``: a list of ``count`` parameters (for ``IN``)."""
    return "(" + ", ".join([placeholder] * count) + ")"


def flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The parameters of ``rows``, row after row."""
    return [value for row in rows for value in row]
