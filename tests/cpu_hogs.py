"""Processes that keep every CPU of this machine busy: the neighbour that starves a writer
under ``SCHED_IDLE`` (decision 0025)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

#: A hog says it is about to spin (one byte on its stdout), then spins.
_HOG = "import sys; sys.stdout.write('.'); sys.stdout.flush()\nwhile True: pass"


@contextlib.contextmanager
def every_cpu_busy() -> Iterator[None]:
    """One busy-looping process of normal priority per CPU, for the ``with`` block: the
    block starts once every hog is spinning (a hog's interpreter takes a while to start on
    a loaded machine, and a test that began before would see no neighbour at all)."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", _HOG], stdout=subprocess.PIPE)
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        for hog in hogs:
            assert hog.stdout is not None
            if hog.stdout.read(1) != b".":
                raise RuntimeError("a CPU hog ended before it began to spin")
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
            if hog.stdout is not None:
                hog.stdout.close()
