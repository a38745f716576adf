"""The DPoP signature checker process (``PROOF_VERIFIER=process``, the default; decision
0023).

Started by the server (``proof_process.ProofVerifier``) as
``python -m api.workers.proof_child REQUESTS_FD VERDICTS_FD``. It reads signature checks
from the requests pipe (``proof_process.REQUEST``: a number, the proof's header segment,
its signature and its signing input), checks each (``ledger.signing.dpop``: the key of a
header is imported once) and writes back one verdict per check (``proof_process.VERDICT``).
Its first verdict, numbered 0, says it is ready.

It ends when the requests pipe ends (the server closed it, or died). Interrupts and
termination requests are the server's to handle: the checker ignores them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from api.workers.children import ignore_shutdown_signals
from api.workers.proof_process import CHECK_FAILED, INVALID, REQUEST, VALID, VERDICT
from ledger.signing.dpop import signature_verifies

READ_SIZE = 1 << 16


def verdicts(buffer: bytearray) -> Iterator[bytes]:
    """The verdict of each whole request at the start of ``buffer``, one at a time (each
    can be sent as soon as it is made); the requests answered are removed from ``buffer``
    once all are."""
    offset = 0
    while len(buffer) - offset >= REQUEST.size:
        seq, header_len, signature_len, input_len = REQUEST.unpack_from(buffer, offset)
        start = offset + REQUEST.size
        end = start + header_len + signature_len + input_len
        if len(buffer) < end:
            break
        header = bytes(buffer[start : start + header_len])
        signature = bytes(buffer[start + header_len : start + header_len + signature_len])
        signing_input = bytes(buffer[start + header_len + signature_len : end])
        try:
            valid = signature_verifies(header.decode("ascii"), signing_input, signature)
        except Exception:  # the server checks this one itself
            verdict = CHECK_FAILED
        else:
            verdict = VALID if valid else INVALID
        offset = end
        yield VERDICT.pack(seq, verdict)
    del buffer[:offset]


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    requests, answers = int(argv[1]), int(argv[2])
    ignore_shutdown_signals()
    _write(answers, VERDICT.pack(0, VALID))  # ready
    buffer = bytearray()
    while chunk := os.read(requests, READ_SIZE):
        buffer += chunk
        try:
            for verdict in verdicts(buffer):  # each sent at once: its decision waits on it
                _write(answers, verdict)
        except BrokenPipeError:
            return 0  # the server is gone
    with contextlib.suppress(OSError):
        os.close(answers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
