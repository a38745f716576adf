"""Signed checkpoints, made on the scheduler's tick and at shutdown, and their witnesses.

Every replica runs a ``Checkpointer``; the store's election (``ledger.persistence.
checkpoints``) lets one of them sign per ``checkpoint_interval_seconds``, and none while
the log has not moved. The replica that signed hands the checkpoint to the witnesses
outside the database:

* ``checkpoint_dir``: ``<position>.jwt`` holding the compact JWS, written atomically (a
  reader sees the whole file or none). With several replicas the directory must be shared
  (whichever replica signs writes it), or rely on the HTTP witness;
* ``checkpoint_witness_url``: ``POST`` with ``Content-Type: application/jwt``, from a
  background thread with a bounded queue, so a slow or dead witness never holds up the
  scheduler (or shutdown beyond a few seconds). Failures, HTTP or file, are logged and
  counted (``mission_ledger_checkpoint_witness_failures``), never retried: the next
  checkpoint signs a later head, which covers everything this one did.

A replica paces its own attempts by the clock: after a checkpoint (its own or another
replica's) it next tries one interval after that checkpoint was issued; when the log had
not moved, one interval later.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ledger.clock import Clock
from ledger.domain.checkpoints import CHECKPOINT_TYP, MalformedCheckpoint, parse_checkpoint_payload
from ledger.persistence.chain import Anchor
from ledger.persistence.checkpoints import CheckpointStore, Outcome, StoredCheckpoint, kid_of
from ledger.persistence.private_files import write_atomically
from ledger.signing.jwks import JwksVerifier, JwsRejected
from ledger.signing.keyring import Keyring

log = logging.getLogger("mission_ledger.checkpoints")

JWT_MEDIA_TYPE = "application/jwt"
WITNESS_QUEUE_SIZE = 64
WITNESS_FILE_MODE = 0o644  # checkpoints are public evidence, not secrets


class HttpWitness:
    """POSTs checkpoints to a URL from its own thread; ``offer`` never blocks."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, client: httpx.Client | None = None
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._client = client
        self._queue: queue.Queue[StoredCheckpoint | None] = queue.Queue(WITNESS_QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="checkpoint-http-witness", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Let queued checkpoints go out (for at most ``timeout`` seconds), then stop."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("checkpoint witness %s: stopping with checkpoints undelivered", self.url)
        self._thread.join(timeout=timeout)
        self._thread = None

    def offer(self, checkpoint: StoredCheckpoint) -> bool:
        """Queue ``checkpoint`` for delivery; False (logged, counted) when the queue is full."""
        try:
            self._queue.put_nowait(checkpoint)
        except queue.Full:
            self.failed += 1
            log.error(
                "checkpoint witness %s: queue full, checkpoint %s not sent",
                self.url,
                checkpoint.position,
            )
            return False
        return True

    def send(self, checkpoint: StoredCheckpoint) -> bool:
        """POST one checkpoint now; True on a 2xx answer."""
        client = self._client
        if client is None:
            client = self._client = httpx.Client(follow_redirects=False)
        try:
            response = client.post(
                self.url,
                content=checkpoint.jws.encode("ascii"),
                headers={"Content-Type": JWT_MEDIA_TYPE},
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if response.is_success:
                self.delivered += 1
                return True
            problem = f"HTTP {response.status_code}"
        self.failed += 1
        log.error(
            "checkpoint witness %s: checkpoint %s not accepted (%s)",
            self.url,
            checkpoint.position,
            problem,
        )
        return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self.send(item)
            except Exception:  # never let the witness thread die
                self.failed += 1
                log.exception("checkpoint witness %s failed", self.url)


class Checkpointer:
    """Signs checkpoints for this replica when due, and writes them to the witnesses."""

    def __init__(
        self,
        store: CheckpointStore,
        keyring: Keyring,
        clock: Clock,
        *,
        issuer: str,
        alg: str,
        interval: timedelta,
        directory: Path | None = None,
        http: HttpWitness | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._issuer = issuer
        self._alg = alg
        self._interval = interval
        self._directory = directory
        self._http = http
        self._lock = threading.Lock()
        self._next_attempt: datetime | None = None
        #: Checkpoints this process signed, and those it could not write to the directory.
        self.issued = 0
        self.dir_failures = 0

    @property
    def directory(self) -> Path | None:
        return self._directory

    def start(self) -> None:
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
        if self._http is not None:
            self._http.start()

    def stop(self) -> StoredCheckpoint | None:
        """At shutdown: sign the head if it moved since the newest checkpoint (whatever the
        interval), then let the HTTP witness finish."""
        try:
            return self._attempt(self._clock.now(), interval=None)
        finally:
            if self._http is not None:
                self._http.stop()

    def tick(self) -> StoredCheckpoint | None:
        """On the scheduler's tick: sign a checkpoint if one is due (see the module doc)."""
        now = self._clock.now()
        if self._next_attempt is not None and now < self._next_attempt:
            return None
        return self._attempt(now, interval=self._interval)

    def _attempt(self, now: datetime, *, interval: timedelta | None) -> StoredCheckpoint | None:
        with self._lock:
            # Whatever happens, the next attempt waits an interval (no retry every tick).
            self._next_attempt = now + self._interval
            result = self._store.issue(
                now=now, issuer=self._issuer, sign=self._sign(now), interval=interval
            )
            latest = result.latest
            if result.outcome in (Outcome.ISSUED, Outcome.NOT_DUE) and latest is not None:
                self._next_attempt = latest.checkpoint.issued_at + self._interval
            if result.outcome is not Outcome.ISSUED:
                return None
            assert latest is not None
            self.issued += 1
        log.info(
            "checkpoint signed: position %d, %d events, chain hash %s",
            latest.position,
            latest.checkpoint.events,
            latest.checkpoint.chain_hash.hex(),
        )
        self._witness(latest)
        return latest

    def _sign(self, now: datetime) -> Callable[[bytes], str]:
        def sign(payload: bytes) -> str:
            return self._keyring.sign_compact(
                {"typ": CHECKPOINT_TYP}, payload, alg=self._alg, now=now
            )

        return sign

    def _witness(self, checkpoint: StoredCheckpoint) -> None:
        if self._directory is not None:
            try:
                write_checkpoint_file(self._directory, checkpoint)
            except OSError as error:
                self.dir_failures += 1
                log.error(
                    "checkpoint %s not written to %s: %s",
                    checkpoint.position,
                    self._directory,
                    error,
                )
        if self._http is not None:
            self._http.offer(checkpoint)  # counts and logs its own failures

    def counters(self) -> dict[str, int]:
        return {
            "issued": self.issued,
            "dir_failures": self.dir_failures,
            "http_failures": 0 if self._http is None else self._http.failed,
            "http_delivered": 0 if self._http is None else self._http.delivered,
        }


def write_checkpoint_file(directory: Path, checkpoint: StoredCheckpoint) -> Path:
    """``<directory>/<position>.jwt`` holding the compact JWS and a newline, atomically."""
    path = directory / checkpoint.file_name
    write_atomically(path, checkpoint.jws.encode("ascii") + b"\n", mode=WITNESS_FILE_MODE)
    return path


@dataclass(frozen=True)
class WitnessFile:
    """One ``<position>.jwt`` of a witness directory: the anchor it signs, or why it cannot
    be used (a bad signature, a malformed payload, a name that is not its position)."""

    path: Path
    anchor: Anchor | None
    problem: str | None = None


def read_witness_directory(
    directory: Path, key_set: Callable[[set[str]], Mapping[str, Any]]
) -> list[WitnessFile]:
    """Every ``*.jwt`` in ``directory`` (in position order), its signature verified against
    the public keys ``key_set`` returns for the kids the files name."""
    paths = sorted(directory.glob("*.jwt"), key=lambda p: (len(p.stem), p.stem))
    tokens = {path: path.read_text(encoding="utf-8", errors="replace").strip() for path in paths}
    verifier = JwksVerifier(key_set({kid_of(token) for token in tokens.values()}))
    found = []
    for path, token in tokens.items():
        try:
            _, payload = verifier.verify(token, typ=CHECKPOINT_TYP)
            checkpoint = parse_checkpoint_payload(payload)
        except (JwsRejected, MalformedCheckpoint) as error:
            found.append(WitnessFile(path, None, f"not a valid checkpoint: {error}"))
            continue
        if path.name != f"{checkpoint.position}.jwt":
            problem = f"it signs position {checkpoint.position}, not the one its name says"
            found.append(WitnessFile(path, None, problem))
            continue
        anchor = Anchor(
            position=checkpoint.position,
            chain_hash=checkpoint.chain_hash,
            events=checkpoint.events,
            source=str(path),
        )
        found.append(WitnessFile(path, anchor))
    return found
