"""Worker processes of the server's own (the decision log writer, the DPoP checker): started
with this interpreter as ``python -m MODULE READ_FD WRITE_FD``, talking over two pipes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ledger.writer_priority import SERVER_PRIORITY, WriterPriority

#: The directory that holds the ``api`` package (a child imports it from there).
_ROOT = str(Path(__file__).resolve().parents[2])
#: What a child ignores: the server shuts down on them (a Ctrl-C or ``systemctl stop``
#: reaches the process group), then ends the child by closing its pipe (the decision log
#: writer first stores what the server sent it).
SHUTDOWN_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})

#: How long a child that has nothing left to do (every record or group it was sent is
#: acknowledged) is given to exit on its own once its pipe is closed, before it is killed. One
#: under ``SCHED_IDLE`` beside busy CPUs gets a sliver of a CPU: its interpreter's exit alone
#: would hold the server's shutdown for tens of seconds, and it has nothing to lose.
EXIT_GRACE_SECONDS = 2.0

log = logging.getLogger("mission_ledger.children")


def start_child(
    module: str,
    read_fd: int,
    write_fd: int,
    env: Mapping[str, str] | None = None,
    *,
    priority: WriterPriority = SERVER_PRIORITY,
) -> subprocess.Popen[bytes]:
    """Start ``module`` with the child's ends of its two pipes (closed here once it has
    them, or once it failed to start; OSError then). ``env``: more environment;
    ``priority``: how far below this process's scheduling priority the child runs
    (``lower_priority``).

    The child starts with interrupts and termination requests blocked (a blocked signal
    mask is inherited across exec) and ignores them once running: one sent to the process
    group while its interpreter is still starting must not end it. The server handles them,
    then closes its end of the pipe: the child's signal to finish."""
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join([_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
    try:
        child = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, str(read_fd), str(write_fd)],
            pass_fds=(read_fd, write_fd),
            stdin=subprocess.DEVNULL,
            env=environment,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        os.close(read_fd)
        os.close(write_fd)
    lower_priority(child.pid, priority)
    return child


def lower_priority(pid: int, priority: WriterPriority) -> None:
    """Run the process ``pid`` ``priority.nice`` steps of ``nice`` below this one (at most
    19), and with ``priority.idle`` under the ``SCHED_IDLE`` policy (Linux): a background
    writer yields a shared core to the server's event loop. Both are set on the child's
    main thread as soon as it exists, while its interpreter is still starting: the writers
    start their threads (a database pool's) later, and each inherits both. Where the system
    refuses, or has no such policy, the child keeps this process's priority or policy
    (logged)."""
    if priority.nice:
        try:
            own = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, pid, min(19, own + priority.nice))
        except OSError:
            log.warning("could not lower the priority of process %d", pid, exc_info=True)
    if priority.idle:
        if not hasattr(os, "SCHED_IDLE"):
            log.warning("this system has no SCHED_IDLE policy: process %d keeps its own", pid)
            return
        try:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            log.warning("could not run process %d under SCHED_IDLE", pid, exc_info=True)


def child_started(label: str) -> None:
    """A child's first step: shutdown signals left to the server, and its log lines on
    stderr (which it shares with the server) marked ``[label]``."""
    ignore_shutdown_signals()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s [{label}] %(message)s",
    )


def ignore_shutdown_signals() -> None:
    """In a child, first: leave interrupts and termination requests to the server. (It
    started the child with them blocked: one that arrived meanwhile is pending, and now
    discarded.)"""
    for shutdown in SHUTDOWN_SIGNALS:
        signal.signal(shutdown, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)


def read_what_is_there(fd: int) -> bytes | None:
    """What the non-blocking ``fd`` holds now: None when nothing, ``b""`` when the pipe has
    ended (the other end closed, or reading failed)."""
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def write_what_fits(fd: int, out: bytearray) -> bool:
    """Write as much of ``out`` to the non-blocking ``fd`` as it takes now (removed from
    ``out``). False when the pipe is gone (``out`` is cleared: the reading end's closing
    says so too)."""
    while out:
        try:
            written = os.write(fd, out)
        except BlockingIOError:
            return True
        except OSError:
            out.clear()
            return False
        del out[:written]
    return True


def end_child(child: subprocess.Popen[bytes], label: str) -> int:
    """Wait ``EXIT_GRACE_SECONDS`` for ``child`` (its pipe closed, nothing left to do) to
    exit, then kill it; its exit status (negative: the signal that ended it)."""
    try:
        return child.wait(EXIT_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        log.info(
            "%s had not exited %.0f s after its last work; ending it", label, EXIT_GRACE_SECONDS
        )
        child.kill()
        return child.wait()
