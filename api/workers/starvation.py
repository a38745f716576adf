"""Whether a background writer process that has fallen behind is starved: runnable, yet kept
off the CPU by other work (decision 0025).

A writer under ``SCHED_IDLE`` (``WRITER_PROCESS_IDLE``) gets almost no CPU beside a process
of any other kind that keeps the same CPUs busy. The server's own load cannot starve it for
long (the decision log's backpressure and the Meter's draw-backlog rule slow the server
down, which frees the CPU), but a neighbour's can. A writer that is behind is looked at
every ``STARVED_AFTER``; it was starved between two looks when its main thread (Linux
``/proc/PID/schedstat`` and ``/proc/PID/stat``):

* waited on a run queue, runnable, for at least ``STARVED_SHARE`` of the time (Linux counts
  a wait when the wait ends: when the process gets the CPU), or
* was runnable at both looks and ran for less than ``RAN_SHARE`` of the time in between (a
  wait not yet counted).

Its owner then replaces it with one under ``nice`` alone. A writer behind because its store
is slow waits asleep in the database driver, not on a run queue, and is left alone unless
the CPUs are so busy that it is also starved whenever it wakes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

#: How long a writer is behind before it is looked at again.
STARVED_AFTER = 0.25
#: The share of that time a starved writer waited on a run queue (runnable, not running)...
STARVED_SHARE = 0.5
#: ... or the share it ran at most while runnable at both looks.
RAN_SHARE = 0.05


class Sample(NamedTuple):
    """What Linux says of a process's main thread at one look (seconds since it started)."""

    ran: float  # on a CPU
    waited: float  # on a run queue, runnable (counted when each wait ends)
    runnable: bool  # running or waiting to run now (state ``R``)


def sample(pid: int) -> Sample | None:
    """The process ``pid`` now; None where the system does not say (not Linux, no scheduler
    statistics, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as stats:
            ran, waited = stats.read().split()[:2]
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
        return Sample(int(ran) / 1e9, int(waited) / 1e9, state == b"R")
    except (OSError, IndexError, ValueError):
        return None


class StarvationWatch:
    """Looks at one writer process while it is behind (``starved``, called about
    ``STARVED_AFTER`` apart); ``caught_up`` once it is not."""

    def __init__(self, pid: int, look: Callable[[int], Sample | None] = sample) -> None:
        self._pid = pid
        self._look = look
        self._last: tuple[float, Sample] | None = None  # (when, what was seen)

    def caught_up(self) -> None:
        self._last = None

    def starved(self, now: float) -> bool:
        """Whether the process was starved since the last look of this spell behind
        (``now``: ``time.monotonic()``). The first look only notes where it stands; one
        less than half ``STARVED_AFTER`` after the last does nothing."""
        seen = self._look(self._pid)
        if seen is None:
            return False
        if self._last is None:
            self._last = (now, seen)
            return False
        since, before = self._last
        elapsed = now - since
        if elapsed < STARVED_AFTER / 2:
            return False
        self._last = (now, seen)
        if seen.waited - before.waited >= STARVED_SHARE * elapsed:
            return True
        return before.runnable and seen.runnable and seen.ran - before.ran < RAN_SHARE * elapsed
