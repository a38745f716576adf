"""DPoP signatures checked by a process of its own while the event loop decides
(``PROOF_VERIFIER=auto``, the default, and ``process``; decision 0023).

A decision on a request with a DPoP proof: the route has the proof read (header and
claims, ``DecisionPoint.read_proof``), hands its signature to ``check`` and decides while the
checker process (``proof_child``) verifies it; then it awaits the verdict and
``DecisionPoint.confirm`` turns the decision into the answer (a ``key_mismatch`` denial
unless the signature verifies and the proof is used the first time). The signature check
(an ECDSA verification, the most expensive step of such a decision) no longer takes the
server's interpreter, and it runs at the same time as the decision.

In ``auto`` mode a check is made here, on the loop, when its decision is the only request
in progress (``alone``): nothing else could use the loop while the decision waited for the
verdict, and the round trip to the checker (two wake-ups, often of an idle CPU) takes
longer than the check. The checker takes the checks made while other requests wait, and
is started at the first of them (in ``process`` mode, at the first proof).

The checker only ever takes work off the event loop; no answer needs it. Every check it
cannot give is made here, on the loop, as without it: before it has said it is ready,
once it has ended (it is started again after a pause), for a check it could not make, and
for every check it has not answered within ``STALL_SECONDS`` (it is then ended). Checks
are sent together once per turn of the event loop; everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import subprocess
import time
from collections.abc import Callable
from typing import Final, Literal

from api.workers.children import read_what_is_there, start_child, write_what_fits
from ledger.signing.dpop import ReadProof, signature_verifies

log = logging.getLogger("mission_ledger.proofs")

#: One check: its number, then the lengths of the header segment, signature, signing input.
REQUEST: Final = struct.Struct("<IHHI")
#: One verdict: the check's number and one of the three below.
VERDICT: Final = struct.Struct("<IB")
INVALID: Final = 0
VALID: Final = 1
CHECK_FAILED: Final = 2  # the checker could not check it: the server does
#: A checker that leaves a check unanswered this long is ended (its checks made here).
STALL_SECONDS: Final = 1.0
#: Pauses before the checker is started again after it ended (doubling up to the last).
RESTART_FIRST: Final = 1.0
RESTART_LAST: Final = 30.0


class _Check:
    __slots__ = ("future", "proof", "sent")

    def __init__(self, proof: ReadProof, future: asyncio.Future[bool], sent: float) -> None:
        self.proof = proof
        self.future = future
        self.sent = sent


Mode = Literal["auto", "process", "inline"]


def _never() -> bool:
    return False


class ProofVerifier:
    """Signature checks of DPoP proofs: by the checker process when it runs, else here.

    ``mode``: ``auto`` checks here when ``alone()`` says the decision is the only request in
    progress; ``process`` leaves every check to the checker while it runs; ``inline`` never
    starts it."""

    def __init__(self, *, mode: Mode = "process", alone: Callable[[], bool] = _never) -> None:
        self._use_process = mode != "inline"
        self._alone = alone if mode == "auto" else _never
        self._loop: asyncio.AbstractEventLoop | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._requests = -1  # the write end of the requests pipe (-1: closed)
        self._verdicts = -1  # the read end of the verdicts pipe
        self._ready = False
        self._in = bytearray()  # verdict bytes not yet whole
        self._out = bytearray()  # checks not yet written to the pipe
        self._draining = False
        self._flush_scheduled = False
        self._watching = False
        self._checks: dict[int, _Check] = {}
        self._seq = 0
        self._start_after = 0.0  # time.monotonic() before which the checker is not started
        self._restart_pause = RESTART_FIRST
        self._closed = False
        #: Checks answered by the checker process, made here instead, and made here because
        #: their decision was the only request in progress (for metrics).
        self.checked_apart = 0
        self.checked_here = 0
        self.checked_alone = 0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        """The checker process's id (while it runs)."""
        return None if self._child is None else self._child.pid

    def check(self, proof: ReadProof) -> asyncio.Future[bool]:
        """Whether ``proof``'s signature verifies (called on the event loop)."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if self._alone():
            self.checked_alone += 1
            future.set_result(
                signature_verifies(proof.header_segment, proof.signing_input, proof.signature)
            )
            return future
        if not self._available():
            future.set_result(self._here(proof))
            return future
        self._seq = seq = self._seq % 0xFFFF_FFFF + 1
        header = proof.header_segment.encode("ascii")
        self._out += REQUEST.pack(seq, len(header), len(proof.signature), len(proof.signing_input))
        self._out += header
        self._out += proof.signature
        self._out += proof.signing_input
        self._checks[seq] = _Check(proof, future, time.monotonic())
        if len(self._checks) == 1 and not self._draining:
            self._flush()  # the only one: sent at once, checked while the caller decides
        elif not self._flush_scheduled and not self._draining:
            self._flush_scheduled = True  # sent with the others of this turn of the loop
            loop.call_soon(self._flush)
        if not self._watching:
            self._watching = True
            loop.call_later(STALL_SECONDS, self._watch)
        return future

    async def wait_ready(self, timeout: float = 10.0) -> bool:
        """Start the checker unless it runs, and wait until it is ready (False: not within
        ``timeout``, or it is not to be used)."""
        self._loop = self._loop or asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while not self._available():
            if not self._use_process or self._closed or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def close(self) -> None:
        """End the checker; checks still open are made here."""
        self._closed = True
        self._ended("closed", kill=True)

    # ------------------------------------------------------------------ checks made here

    def _here(self, proof: ReadProof) -> bool:
        self.checked_here += 1
        return signature_verifies(proof.header_segment, proof.signing_input, proof.signature)

    def _available(self) -> bool:
        if not self._use_process or self._closed:
            return False
        if self._child is None and time.monotonic() >= self._start_after:
            self._spawn()
        return self._ready

    def _answer_here(self) -> None:
        """Make every open check here (the checker is gone)."""
        checks, self._checks = self._checks, {}
        for check in checks.values():
            if not check.future.done():
                check.future.set_result(self._here(check.proof))

    # ------------------------------------------------------------------ the pipes

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._requests < 0 or not write_what_fits(self._requests, self._out):
            return  # no checker (its checks are made here)
        if self._out and not self._draining and self._loop is not None:
            self._draining = True
            self._loop.add_writer(self._requests, self._drain)

    def _drain(self) -> None:
        if self._loop is not None:
            self._loop.remove_writer(self._requests)
        self._draining = False
        self._flush()

    def _on_verdicts(self) -> None:
        data = read_what_is_there(self._verdicts)
        if data is None:
            return
        if not data:
            self._ended("ended", kill=False)
            return
        self._in += data
        whole = len(self._in) - len(self._in) % VERDICT.size
        for seq, verdict in VERDICT.iter_unpack(self._in[:whole]):
            if seq == 0:
                self._ready = True
                self._restart_pause = RESTART_FIRST
                continue
            check = self._checks.pop(seq, None)
            if check is None or check.future.done():
                continue
            if verdict == CHECK_FAILED:
                check.future.set_result(self._here(check.proof))
            else:
                self.checked_apart += 1
                check.future.set_result(verdict == VALID)
        del self._in[:whole]

    def _watch(self) -> None:
        """End a checker that leaves a check unanswered for ``STALL_SECONDS``."""
        self._watching = False
        if not self._checks or self._loop is None:
            return
        oldest = min(check.sent for check in self._checks.values())
        if time.monotonic() - oldest >= STALL_SECONDS:
            self._ended("stalled", kill=True)
            return
        self._watching = True
        self._loop.call_later(STALL_SECONDS, self._watch)

    # ------------------------------------------------------------------ the process

    def _spawn(self) -> None:
        loop = self._loop
        assert loop is not None
        requests_read, requests_write = os.pipe()
        verdicts_read, verdicts_write = os.pipe()
        try:
            self._child = start_child("api.workers.proof_child", requests_read, verdicts_write)
        except OSError:
            log.exception("DPoP proofs: the checker process could not start; checked here")
            self._child = None
            os.close(requests_write)
            os.close(verdicts_read)
            self._pause_restart()
            return
        os.set_blocking(requests_write, False)
        os.set_blocking(verdicts_read, False)
        self._requests, self._verdicts = requests_write, verdicts_read
        self._ready = False
        self._in.clear()
        loop.add_reader(verdicts_read, self._on_verdicts)

    def _pause_restart(self) -> None:
        self._start_after = time.monotonic() + self._restart_pause
        self._restart_pause = min(self._restart_pause * 2, RESTART_LAST)

    def _ended(self, why: str, *, kill: bool) -> None:
        """Close both pipes, end the checker (``kill``: if still running) and make every
        open check here."""
        loop = self._loop
        if self._requests >= 0:
            if self._draining and loop is not None:
                loop.remove_writer(self._requests)
            self._draining = False
            os.close(self._requests)
            self._requests = -1
        if self._verdicts >= 0:
            if loop is not None:
                loop.remove_reader(self._verdicts)
            os.close(self._verdicts)
            self._verdicts = -1
        self._out.clear()
        self._ready = False
        child, self._child = self._child, None
        if child is not None:
            if kill and child.poll() is None:
                child.kill()
            try:
                status = child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                status = child.wait()
            if not self._closed:
                self.restarts += 1
                log.error(
                    "DPoP proofs: the checker process %s (status %s) with %d checks open; "
                    "they are made here, and it is started again",
                    why,
                    status,
                    len(self._checks),
                )
                self._pause_restart()
        self._answer_here()
