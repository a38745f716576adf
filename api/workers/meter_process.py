"""The Meter writer's store half in a process of its own (``METER_WRITER=process``; decision
0019, "A writer process").

``MeterWriter`` (``ledger.application.metering``) keeps its queue, its groups and the leases
the decision path draws from in the server. What it hands this backend is a whole group;
the group is sent to the Meter writer process (``meter_child``) over one pipe
(``meter_frames``), applied and saved there by a ``MeterBook`` on a Ledger of its own
(same store), and its ``Applied`` (outcomes, leases granted, costs) comes back over a
second pipe with the positions the save took. The writer thread waits for that answer
without holding the interpreter lock, so the book's work (the Meters' rules, encoding
events, the hash chain, the store's statements) no longer takes turns with the decision
path.

* The positions the child saved, and their events' topics, are announced to this process's
  commit listeners, as the recorder does after a save of its own (the log follower wakes
  only if one of its read models reads one of those topics: none reads a Meter's).
* **A child that dies** (or cannot be started) fails the group it held with ``Unavailable``,
  as a store failure does on the writer thread: its futures answer 503; its draws, answered
  already, go unrecorded (the "holder crashed" case of decision 0019: their lease's slice
  comes back when it expires); a group that was saved before the child died was saved (a
  usage report retried is answered as replayed). The next group starts a new child.
* **A starved child** (decision 0025): under ``SCHED_IDLE``, a group not answered within
  ``GROUP_BEHIND`` has its child looked at (``starvation``); one that waited runnable for
  most of the time is retired once it answers (its pipe closed: it exits), and the next
  group starts a child under ``nice`` alone, as every later one is.
* ``close`` (at shutdown, after the writer thread recorded its last draws and returned its
  leases) closes the pipe: the child, which has answered every group, exits; one that has
  not within ``children.EXIT_GRACE_SECONDS`` (kept off the CPU under ``SCHED_IDLE``) is
  killed.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from api.workers.children import end_child, start_child
from api.workers.meter_frames import MessageReader, decode_reply, encode_group, write_message
from api.workers.starvation import STARVED_AFTER, StarvationWatch
from ledger.application.base import LedgerBase
from ledger.application.meter_operations import Applied, Operation
from ledger.domain.errors import Unavailable
from ledger.writer_priority import SERVER_PRIORITY, WriterPriority

log = logging.getLogger("mission_ledger.metering")

#: The environment variable that carries the child's configuration (JSON).
CONFIG_ENV = "MISSION_LEDGER_METER_WRITER_CONFIG"
#: A group not answered within this is late (a save takes a few milliseconds): the child is
#: looked at for starvation (under ``SCHED_IDLE``).
GROUP_BEHIND = 0.05


def child_config(
    store: dict[str, str],
    *,
    holder: str,
    lease_seconds: float,
    issuer: str,
    policy_version: str,
) -> dict[str, Any]:
    """What the child needs: the ``eventsourcing`` environment of the store
    (``persistence_env``), the replica's lease holder id and lease lifetime, and the
    Ledger's identity (its events name the issuer and policy version)."""
    return {
        "store": store,
        "holder": holder,
        "lease_seconds": lease_seconds,
        "issuer": issuer,
        "policy_version": policy_version,
    }


class ProcessMeterBook:
    """A ``MeterBackend`` whose groups are applied by the Meter writer process."""

    def __init__(
        self,
        ledger: LedgerBase,
        config: dict[str, Any],
        *,
        priority: WriterPriority = SERVER_PRIORITY,
    ) -> None:
        self._ledger = ledger  # the server's: its commit listeners hear the child's saves
        self._config = config
        self._priority = priority  # how far below the server's priority the child runs
        self._child: subprocess.Popen[bytes] | None = None
        self._pipes: _Pipes | None = None
        self._lock = threading.Lock()  # ``apply`` (writer thread) against ``close``
        self._closed = False
        self.restarts = 0  # children started after the first (one died)
        self.starved = 0  # children retired because they were starved
        self._retired: list[subprocess.Popen[bytes]] = []  # starved, exiting

    @property
    def priority(self) -> WriterPriority:
        """How the next child runs (``idle`` off once one was starved)."""
        return self._priority

    @property
    def pid(self) -> int | None:
        """The child's process id (while one runs)."""
        return None if self._child is None else self._child.pid

    def start(self) -> ProcessMeterBook:
        """Start the child now (else with the first group)."""
        with self._lock:
            self._spawn()
        return self

    def apply(self, operations: Sequence[Operation]) -> Applied:
        with self._lock:
            if self._closed:
                raise Unavailable("the service is shutting down; try again")
            if self._pipes is None:
                if self._child is not None:
                    self.restarts += 1
                self._spawn()
            pipes = self._pipes
            assert pipes is not None
            try:
                write_message(pipes.requests, encode_group(operations))
                starved = self._priority.idle and self._starved_meanwhile(pipes)
                reply = pipes.replies.read()
            except (OSError, EOFError) as error:
                code = self._hang_up()
                log.error("the Meter writer process ended (exit status %s) during a group", code)
                msg = "the Meter writer process ended before the group was confirmed"
                raise Unavailable(msg) from error
            if starved:
                self._retire_starved()
        applied, positions, topics, failure = decode_reply(reply)
        if positions:
            self._ledger.commit_listeners.fire(positions, topics)
        if failure is not None:
            raise failure
        assert isinstance(applied, Applied)
        return applied

    def close(self) -> None:
        """Let the child exit (it does when its pipe ends); kill it if it does not soon."""
        with self._lock:
            self._closed = True
            child = self._child
            self._close_pipes()
        # Every group it was sent was answered (``apply`` waits for the answer): it has
        # only to exit, as have the starved ones retired before.
        for ending in [*self._retired, *([] if child is None else [child])]:
            end_child(ending, "the Meter writer process")
        self._retired.clear()

    # ------------------------------------------------------------------ starvation

    def _starved_meanwhile(self, pipes: _Pipes) -> bool:
        """Wait for the child's answer to be there, looking at the child once it is
        ``GROUP_BEHIND`` late and every ``STARVED_AFTER`` after: whether it was starved
        meanwhile."""
        assert self._child is not None
        if pipes.answered(GROUP_BEHIND):
            return False
        watch = StarvationWatch(self._child.pid)
        watch.starved(time.monotonic())  # where it stands
        while not pipes.answered(STARVED_AFTER):
            if watch.starved(time.monotonic()):
                return True
        return False

    def _retire_starved(self) -> None:
        """Close the starved child's pipes (it exits) and run the next under ``nice``
        alone."""
        child = self._child
        assert child is not None
        self.starved += 1
        self._priority = self._priority._replace(idle=False)
        log.warning(
            "the Meter writer process (SCHED_IDLE) was starved by other work; the next one "
            "runs under nice alone for the rest of this run"
        )
        self._close_pipes()
        self._child = None
        self._retired = [*(c for c in self._retired if c.poll() is None), child]

    # ------------------------------------------------------------------ the child

    def _spawn(self) -> None:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        try:
            self._child = start_child(
                "api.workers.meter_child",
                requests_read,
                replies_write,
                env={CONFIG_ENV: json.dumps(self._config)},
                priority=self._priority,
            )
        except OSError as error:
            os.close(requests_write)
            os.close(replies_read)
            raise Unavailable("the Meter writer process could not be started") from error
        self._pipes = _Pipes(requests_write, replies_read)

    def _hang_up(self) -> int | None:
        """Forget a child that stopped answering (killed if it still runs)."""
        self._close_pipes()
        child = self._child
        if child is None:
            return None
        if child.poll() is None:
            child.kill()
        return child.wait()

    def _close_pipes(self) -> None:
        if self._pipes is not None:
            self._pipes.close()
            self._pipes = None


class _Pipes:
    """The server's ends of a child's two pipes: groups are written to ``requests``, and
    answers read from ``replies``, waited for with one ``poll`` object."""

    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = MessageReader(replies)
        self._poll = select.poll()
        self._poll.register(replies, select.POLLIN)

    def answered(self, timeout: float) -> bool:
        """Whether the reply pipe has something to read (or ended) within ``timeout``
        seconds."""
        return bool(self._poll.poll(timeout * 1000))

    def close(self) -> None:
        os.close(self.requests)
        os.close(self.replies.fd)
