"""Processes that keep every CPU of this machine busy: the neighbour that starves a writer
under ``SCHED_IDLE`` (decision 0025)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def every_cpu_busy() -> Iterator[None]:
    """One busy-looping process of normal priority per CPU, for the ``with`` block."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
