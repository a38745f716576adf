"""The DPoP signature checker process (``api/workers/proof_process.py``, decision 0023):
its verdicts are the signatures' own, and every check it cannot give is made by the server
(it has not started, it was killed, it stalls, it could not check one)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable

from joserfc import jws
from joserfc.jwk import ECKey

from api.workers import proof_process
from api.workers.proof_child import verdicts
from api.workers.proof_process import CHECK_FAILED, INVALID, REQUEST, VALID, VERDICT, ProofVerifier
from ledger.signing.dpop import ReadProof, read_dpop

HTU = "https://erp.example.com/invoices/7"
NOW = 1_800_000_000.0
KEY = ECKey.generate_key("P-256")


def read(jti: str = "j-1") -> ReadProof:
    header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": KEY.as_dict(private=False)}
    claims = {"htm": "POST", "htu": HTU, "iat": int(NOW), "jti": jti}
    token = jws.serialize_compact(header, json.dumps(claims).encode(), KEY)
    return read_dpop(token, htm="POST", htu=HTU, now=NOW)


def forged(jti: str = "j-2") -> ReadProof:
    """A proof whose signature is another proof's (of the same key)."""
    proof, other = read(jti), read("other")
    return ReadProof(
        token=proof.token,
        header_segment=proof.header_segment,
        signing_input=proof.signing_input,
        signature=other.signature,
        proof=proof.proof,
    )


def running(verifier: ProofVerifier) -> int | None:
    """The checker's process id (a function: each call reads it anew)."""
    return verifier.pid


def with_checker(
    scenario: Callable[[ProofVerifier], Awaitable[None]],
    make: Callable[[], ProofVerifier] = ProofVerifier,
) -> None:
    """Run ``scenario`` on an event loop with a verifier (``make``) whose checker is ready."""

    async def run() -> None:
        checker = make()
        assert await checker.wait_ready()
        try:
            await scenario(checker)
        finally:
            checker.close()

    asyncio.run(run())


def test_the_checker_gives_each_signatures_verdict() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        assert await verifier.check(read()) is True
        assert await verifier.check(forged()) is False
        assert (verifier.checked_apart, verifier.checked_here) == (2, 0)

    with_checker(scenario)


def test_checks_sent_together_get_their_own_verdicts() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        proofs = [read(f"a{n}") if n % 3 else forged(f"b{n}") for n in range(30)]
        results = await asyncio.gather(*(verifier.check(p) for p in proofs))
        assert results == [n % 3 != 0 for n in range(30)]
        assert verifier.checked_apart == 30

    with_checker(scenario)


def test_checks_open_when_the_checker_is_killed_are_made_by_the_server() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        pid = verifier.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the checks stay open until it is killed
        checks = [verifier.check(read()), verifier.check(forged())]
        await asyncio.sleep(0.05)
        assert not any(check.done() for check in checks)
        os.kill(pid, signal.SIGKILL)
        assert await asyncio.gather(*checks) == [True, False]
        assert (verifier.checked_here, verifier.restarts) == (2, 1)

    with_checker(scenario)


def test_a_checker_that_stalls_is_ended_and_its_checks_made_by_the_server() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        pid = verifier.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        assert await asyncio.wait_for(verifier.check(forged()), 5) is False
        assert time.monotonic() - started >= proof_process.STALL_SECONDS * 0.9
        assert (verifier.checked_here, verifier.restarts) == (1, 1)
        assert verifier.pid is None

    with_checker(scenario)


def test_the_checker_is_started_again_after_a_pause() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        first = verifier.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        while running(verifier) is not None:  # the server notices (its verdicts pipe ends)
            await asyncio.sleep(0.01)
        assert await verifier.check(read()) is True  # during the pause: checked by the server
        assert verifier.checked_here == 1
        assert await verifier.wait_ready()
        assert running(verifier) not in (None, first)
        assert await verifier.check(read()) is True
        assert verifier.checked_apart == 1

    with_checker(scenario)


def test_without_the_process_every_check_is_made_by_the_server() -> None:
    async def scenario() -> None:
        verifier = ProofVerifier(mode="inline")
        assert await verifier.wait_ready() is False
        assert await verifier.check(read()) is True
        assert await verifier.check(forged()) is False
        assert (verifier.checked_here, verifier.pid) == (2, None)

    asyncio.run(scenario())


def _request(seq: int, header: bytes, signature: bytes, signing_input: bytes) -> bytes:
    lengths = REQUEST.pack(seq, len(header), len(signature), len(signing_input))
    return lengths + header + signature + signing_input


def test_a_check_the_checker_cannot_make_is_answered_as_such() -> None:
    good, bad = read(), forged()
    buffer = bytearray(
        _request(1, good.header_segment.encode(), good.signature, good.signing_input)
        + _request(2, "é".encode(), bad.signature, bad.signing_input)
        + _request(3, bad.header_segment.encode(), bad.signature, bad.signing_input)
    )
    answers = [VERDICT.unpack(verdict) for verdict in verdicts(buffer)]
    assert answers == [(1, VALID), (2, CHECK_FAILED), (3, INVALID)]
    assert buffer == b""


def test_a_request_not_yet_whole_waits_for_the_rest() -> None:
    good = read()
    whole = _request(7, good.header_segment.encode(), good.signature, good.signing_input)
    buffer = bytearray(whole[:-5])
    assert list(verdicts(buffer)) == []
    buffer += whole[-5:]
    assert [VERDICT.unpack(verdict) for verdict in verdicts(buffer)] == [(7, VALID)]
    assert buffer == b""


def verifier_in(mode: proof_process.Mode, *, alone: bool) -> Callable[[], ProofVerifier]:
    return lambda: ProofVerifier(mode=mode, alone=lambda: alone)


def test_in_auto_mode_a_decision_alone_has_its_signature_checked_by_the_server() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        assert await verifier.check(read()) is True
        assert await verifier.check(forged()) is False
        assert (verifier.checked_alone, verifier.checked_apart, verifier.checked_here) == (2, 0, 0)

    with_checker(scenario, verifier_in("auto", alone=True))


def test_in_auto_mode_a_decision_among_others_has_its_signature_checked_by_the_checker() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        assert await verifier.check(read()) is True
        assert await verifier.check(forged()) is False
        assert (verifier.checked_alone, verifier.checked_apart) == (0, 2)

    with_checker(scenario, verifier_in("auto", alone=False))


def test_in_process_mode_the_checker_checks_even_a_decision_alone() -> None:
    async def scenario(verifier: ProofVerifier) -> None:
        assert await verifier.check(read()) is True
        assert (verifier.checked_alone, verifier.checked_apart) == (0, 1)

    with_checker(scenario, verifier_in("process", alone=True))
