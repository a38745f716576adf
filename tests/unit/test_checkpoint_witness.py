"""The checkpoint witnesses outside the database: the directory file is written whole, and
the HTTP witness POSTs application/jwt from its own thread, so a failing or hanging
witness is counted and logged but never holds up the replica."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from api.workers.checkpoints import HttpWitness, write_checkpoint_file
from ledger.domain.checkpoints import Checkpoint
from ledger.persistence.checkpoints import StoredCheckpoint

URL = "https://witness.example/checkpoints"


def _checkpoint(position: int = 42) -> StoredCheckpoint:
    checkpoint = Checkpoint(
        issuer="https://ledger.example",
        position=position,
        chain_hash=bytes(range(32)),
        events=position,
        issued_at=datetime(2026, 11, 28, 12, tzinfo=UTC),
    )
    return StoredCheckpoint(checkpoint=checkpoint, kid="k1", jws=f"aGVhZA.cGF5bG9hZA.{position}")


def _witness(handler: httpx.MockTransport) -> HttpWitness:
    return HttpWitness(URL, timeout=1.0, client=httpx.Client(transport=handler))


def test_the_directory_witness_holds_one_file_per_checkpoint_named_by_its_position(
    tmp_path: Path,
) -> None:
    path = write_checkpoint_file(tmp_path, _checkpoint(42))
    assert path == tmp_path / "42.jwt"
    assert path.read_text() == "aGVhZA.cGF5bG9hZA.42\n"
    assert [p.name for p in tmp_path.iterdir()] == ["42.jwt"]  # no temporary file left


def test_the_http_witness_posts_the_compact_jws_as_application_jwt() -> None:
    received: list[httpx.Request] = []

    def accept(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(201)

    witness = _witness(httpx.MockTransport(accept))
    assert witness.send(_checkpoint()) is True
    [request] = received
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["content-type"] == "application/jwt"
    assert request.content == b"aGVhZA.cGF5bG9hZA.42"
    assert (witness.delivered, witness.failed) == (1, 0)


@pytest.mark.parametrize("failure", ["refused", "500"])
def test_a_failing_http_witness_is_counted_and_logged(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        if failure == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(500)

    witness = _witness(httpx.MockTransport(fail))
    assert witness.send(_checkpoint()) is False
    assert witness.failed == 1
    assert "checkpoint 42 not accepted" in caplog.text


def test_a_hanging_http_witness_does_not_hold_up_the_replica() -> None:
    release = threading.Event()
    posted = threading.Event()

    def hang(request: httpx.Request) -> httpx.Response:
        posted.set()
        release.wait(timeout=30)
        return httpx.Response(204)

    witness = _witness(httpx.MockTransport(hang))
    witness.start()
    try:
        assert witness.offer(_checkpoint(1)) is True  # returns while the POST hangs
        assert posted.wait(timeout=10)
        assert witness.offer(_checkpoint(2)) is True
    finally:
        release.set()
        witness.stop()
    assert (witness.delivered, witness.failed) == (2, 0)


def test_checkpoints_offered_to_a_full_queue_are_counted_as_failures() -> None:
    witness = _witness(httpx.MockTransport(lambda request: httpx.Response(204)))
    # Not started: nothing drains the queue.
    accepted = [witness.offer(_checkpoint(p)) for p in range(1, 70)]
    assert accepted.count(False) == 69 - 64
    assert witness.failed == 5
