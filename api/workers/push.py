"""SSF push delivery (RFC 8935): every push stream's SETs, in order, durably retried.

One ``PushDelivery`` per process. Its dispatcher thread looks for push streams that are
live, ``enabled`` and behind (``ssf_streams.next_seq - 1 > push_state.delivered_seq``)
and whose retry is due, and hands each to a small pool of delivery threads (at most one
per stream in this process). A delivery thread sends the stream's next SET — the
lowest ``seq`` above ``delivered_seq`` — as ``POST endpoint_url`` with ``Content-Type:
application/secevent+jwt``, ``Accept: application/json`` and the stream's
``authorization_header`` verbatim (when it has one), and goes on with the next only
after an HTTP **202**. Anything else (another status, 400 ``{"err"}`` included, a
connection error, a timeout) is a failure: ``push_state`` records ``attempts``,
``last_error`` and ``next_attempt_at`` = now + exponential backoff with jitter, and
nothing later of that stream is sent before it succeeds. A 400 is retried like the
rest (its ``err``/``description`` are logged and kept in ``last_error``): skipping the
SET would silently lose a revocation and break the order the receiver relies on, and
the usual causes (``invalid_key`` before the receiver refreshed our JWKS,
``authentication_failed`` until the authorization header is fixed) heal on their own or
with a configuration change; backoff caps the cost at one attempt a minute, and SETs
that leave the retained log are skipped.

Status: only ``enabled`` streams are delivered. A paused stream's SETs stay in the
log (the signal projection appends them) and go out in order from ``delivered_seq``
once it is enabled again; while disabled the projection appends nothing, so events
raised then never arrive. A pause or disable the transmitter initiated is pushed first:
its ``stream-updated`` SET, and every SET before it, still goes out
(``projections.signals.announced_through``).

Replicas: on PostgreSQL each attempt is one transaction that locks the stream's
``push_state`` row (``FOR UPDATE SKIP LOCKED``), re-reads ``delivered_seq``, the
backoff deadline, the stream's status and configuration under the lock, POSTs, and
records the outcome before committing. Another replica skips a locked stream, so one
SET is never in flight twice and the order holds across processes. SQLite is single
process: the in-process guard (one delivery thread per stream) serialises, and the
POST happens outside any transaction so the database is never held during I/O.
Delivery is at least once: a crash between the receiver's 202 and the commit sends
that SET again (receivers de-duplicate by ``jti``).

Time: ``next_attempt_at`` is compared with the injected clock (``ledger.clock``), so
tests move a ``MutableClock`` to make retries due; the dispatcher itself wakes on real
time: whenever the log follower applies a batch (new SETs), every ``interval`` seconds
for due retries, and on ``ring()``.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import httpx

from api.workers.dispatch import AppliesBatches, Dispatcher
from ledger.application import Ledger
from ledger.domain.streams import PUSH, STREAM_UPDATED, Stream, StreamStatus
from ledger.persistence.database import Cursor, Dialect
from ledger.persistence.snapshots import StateCodec
from projections.signals import announced_through

log = logging.getLogger("mission_ledger.push")

SET_MEDIA_TYPE = "application/secevent+jwt"
USER_AGENT = "mission-ledger-push/1"
ERROR_BODY_LIMIT = 4096
LAST_ERROR_LIMIT = 500

_SCAN = (
    "SELECT s.stream_id, p.delivered_seq FROM ssf_streams s "
    "LEFT JOIN push_state p ON p.stream_id = s.stream_id "
    "WHERE s.deleted = 0 AND s.method = %s "
    "AND s.next_seq - 1 > COALESCE(p.delivered_seq, 0) "
    # Enabled, or (paused/disabled) with a stream-updated SET not yet pushed.
    "AND (s.status = %s OR EXISTS (SELECT 1 FROM set_log l WHERE l.stream_id = s.stream_id "
    "AND l.event_type = %s AND l.seq > COALESCE(p.delivered_seq, 0))) "
    "AND COALESCE(p.next_attempt_at, 0) <= %s "
    "ORDER BY COALESCE(p.next_attempt_at, 0) LIMIT %s"
)
# One statement, so the stream's status and configuration and its next SET come from
# one snapshot. Without a SET above the cursor the LEFT JOIN yields one row of NULLs.
_NEXT = (
    "SELECT s.status, s.deleted, s.method, s.next_seq, s.snapshot, l.seq, l.jti, l.set_jwt "
    "FROM ssf_streams s LEFT JOIN set_log l ON l.stream_id = s.stream_id AND l.seq > %s "
    "WHERE s.stream_id = %s ORDER BY l.seq LIMIT 1"
)
_STATE = "SELECT delivered_seq, attempts, next_attempt_at FROM push_state WHERE stream_id = %s"


def backoff_seconds(
    attempts: int, *, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None
) -> float:
    """Delay before retry number ``attempts`` (1 = after the first failure): ``base``
    doubling up to ``cap``, with "equal jitter" (uniform in the upper half), so replicas
    and streams that failed together do not retry in lock-step."""
    ceiling = min(cap, base * (1 << min(max(attempts - 1, 0), 32)))
    return ceiling / 2 + (rng or _RNG).uniform(0, ceiling / 2)


_RNG = secrets.SystemRandom()


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


class Outcome(Enum):
    DELIVERED = "delivered"  # the receiver answered 202; delivered_seq advanced
    FAILED = "failed"  # a failed attempt; retry scheduled
    IDLE = "idle"  # nothing to send now (caught up, not enabled, or retry not yet due)
    BUSY = "busy"  # another replica holds the stream


@dataclass(frozen=True)
class _Job:
    stream_id: str
    delivered_seq: int
    attempts: int
    seq: int
    jti: str
    set_jwt: str
    endpoint_url: str
    authorization: str | None


@dataclass(frozen=True)
class _Skip:
    """The log no longer holds SETs ``delivered_seq + 1 .. to_seq`` (retention)."""

    stream_id: str
    delivered_seq: int
    to_seq: int


def _skip(cur: Cursor, skip: _Skip) -> None:
    cur.execute(
        "UPDATE push_state SET delivered_seq = %s, attempts = 0, next_attempt_at = 0, "
        "last_error = NULL WHERE stream_id = %s AND delivered_seq = %s",
        (skip.to_seq, skip.stream_id, skip.delivered_seq),
    )
    log.warning(
        "stream %s: SETs %d..%d left the log before push delivery",
        skip.stream_id,
        skip.delivered_seq + 1,
        skip.to_seq,
    )


class PushDelivery(Dispatcher):
    thread_name = "ssf-push"

    def __init__(
        self,
        ledger: Ledger,
        *,
        follower: AppliesBatches | None = None,
        interval: float = 0.5,
        timeout: float = 5.0,
        concurrency: int = 4,
        burst: int = 100,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
    ) -> None:
        super().__init__(
            follower=follower, interval=interval, timeout=timeout, concurrency=concurrency
        )
        self._db = ledger.database
        self._codec = StateCodec(ledger.mapper.transcoder)
        self._clock = ledger.clock
        self.burst = max(1, burst)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._client: httpx.Client | None = None
        #: SETs the receivers acknowledged with 202 (this process).
        self.delivered = 0
        #: Attempts that failed (non-202, connection error, timeout) (this process).
        self.failed_attempts = 0
        #: Attempts skipped because another replica held the stream (this process).
        self.busy = 0

    # ------------------------------------------------------------------ lifecycle

    def _http(self) -> httpx.Client:
        """The HTTP client, made with the first delivery: its TLS roots take ~50 ms to
        load, at every start otherwise (most deployments push nothing)."""
        with self._lock:
            if self._client is None:
                self._client = _new_client()
            return self._client

    def closed(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "delivered": self.delivered,
                "failed_attempts": self.failed_attempts,
                "busy": self.busy,
                "in_flight": len(self._inflight),
            }

    # ------------------------------------------------------------------ dispatch

    def due_streams(self, limit: int = 1000) -> list[tuple[str, bool]]:
        """(stream id, has a push_state row) of the push streams with a SET due now."""
        rows = self._db.fetchall(
            _SCAN,
            (PUSH, StreamStatus.ENABLED.value, STREAM_UPDATED, _micros(self._clock.now()), limit),
        )
        return [(str(r["stream_id"]), r["delivered_seq"] is not None) for r in rows]

    def due_work(self) -> list[tuple[str, Any]]:
        return list(self.due_streams())

    def work(self, key: str, argument: Any) -> bool:
        """Send the stream's due SETs, up to a burst; True when the burst ended with more
        to send (come back at once)."""
        if not argument:
            self._ensure_state(key)
        for _ in range(self.burst):
            if self._stopping.is_set():
                return False
            if self.attempt(key) is not Outcome.DELIVERED:
                return False
        return True

    def run_once(self) -> int:
        """Deliver synchronously on this thread whatever is due now (for tests and tools);
        returns how many SETs were delivered."""
        delivered = 0
        for stream_id, has_state in self.due_streams():
            if not self.claim(stream_id):
                continue
            try:
                if not has_state:
                    self._ensure_state(stream_id)
                for _ in range(self.burst):
                    if self.attempt(stream_id) is not Outcome.DELIVERED:
                        break
                    delivered += 1
            finally:
                self.release(stream_id)
        return delivered

    # ------------------------------------------------------------------ one attempt

    def _ensure_state(self, stream_id: str) -> None:
        self._db.execute(
            "INSERT INTO push_state (stream_id, delivered_seq, attempts, next_attempt_at, "
            "last_error) VALUES (%s, 0, 0, 0, NULL) ON CONFLICT (stream_id) DO NOTHING",
            (stream_id,),
        )

    def attempt(self, stream_id: str) -> Outcome:
        """Try to deliver the stream's next SET once (the caller serialises per stream in
        this process; on PostgreSQL a row lock serialises across processes)."""
        if self._db.dialect is Dialect.POSTGRES:
            with self._db.transaction() as cur:
                cur.execute(_STATE + " FOR UPDATE SKIP LOCKED", (stream_id,))
                state = cur.fetchone()
                if state is None:  # locked by another replica (or no row yet)
                    self._count(busy=1)
                    return Outcome.BUSY
                job = self._next_job(cur, stream_id, state)
                if isinstance(job, _Skip):
                    _skip(cur, job)
                if not isinstance(job, _Job):
                    return Outcome.IDLE
                error = self._post(job)
                self._record(cur, job, error)
            return self._counted(job, error)
        with self._db.transaction(write=False) as cur:
            cur.execute(_STATE, (stream_id,))
            state = cur.fetchone()
            job = None if state is None else self._next_job(cur, stream_id, state)
        if isinstance(job, _Skip):
            with self._db.transaction() as cur:
                _skip(cur, job)
        if not isinstance(job, _Job):
            return Outcome.IDLE
        error = self._post(job)
        with self._db.transaction() as cur:
            self._record(cur, job, error)
        return self._counted(job, error)

    def _next_job(
        self, cur: Cursor, stream_id: str, state: Mapping[str, Any]
    ) -> _Job | _Skip | None:
        if int(state["next_attempt_at"]) > _micros(self._clock.now()):
            return None
        delivered_seq = int(state["delivered_seq"])
        cur.execute(_NEXT, (delivered_seq, stream_id))
        row = cur.fetchone()
        if row is None or row["deleted"] or row["method"] != PUSH:
            return None
        through = announced_through(cur, stream_id, str(row["status"]))
        if through is not None and (row["seq"] is None or int(row["seq"]) > through):
            return None  # held
        if row["seq"] is None:
            behind = int(row["next_seq"]) - 1
            if behind > delivered_seq:
                # The SETs above the cursor left the retained log: nothing to send for them.
                return _Skip(stream_id, delivered_seq, behind)
            return None
        stream = self._codec.thaw(bytes(row["snapshot"]))
        assert isinstance(stream, Stream)
        delivery = stream.config.get("delivery", {})
        url = delivery.get("endpoint_url")
        if not isinstance(url, str):
            return None
        header = delivery.get("authorization_header")
        return _Job(
            stream_id=stream_id,
            delivered_seq=delivered_seq,
            attempts=int(state["attempts"]),
            seq=int(row["seq"]),
            jti=str(row["jti"]),
            set_jwt=str(row["set_jwt"]),
            endpoint_url=url,
            authorization=header if isinstance(header, str) else None,
        )

    def _post(self, job: _Job) -> str | None:
        """POST one SET; None on 202, else a short description of the failure."""
        client = self._http()
        headers = {"Content-Type": SET_MEDIA_TYPE, "Accept": "application/json"}
        if job.authorization is not None:
            headers["Authorization"] = job.authorization
        try:
            with client.stream(
                "POST",
                job.endpoint_url,
                content=job.set_jwt.encode("ascii"),
                headers=headers,
                timeout=self.timeout,
            ) as response:
                if response.status_code == 202:
                    return None
                body = _read_limited(response)
                return _describe(response.status_code, response.headers, body)
        except httpx.TimeoutException as error:
            return f"timeout after {self.timeout:g}s ({type(error).__name__})"
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"

    def _record(self, cur: Cursor, job: _Job, error: str | None) -> None:
        if error is None:
            cur.execute(
                "UPDATE push_state SET delivered_seq = %s, attempts = 0, next_attempt_at = 0, "
                "last_error = NULL WHERE stream_id = %s AND delivered_seq = %s",
                (job.seq, job.stream_id, job.delivered_seq),
            )
            return
        attempts = job.attempts + 1
        delay = backoff_seconds(attempts, base=self.backoff_base, cap=self.backoff_cap)
        due = _micros(self._clock.now()) + int(delay * 1_000_000)
        cur.execute(
            "UPDATE push_state SET attempts = %s, next_attempt_at = %s, last_error = %s "
            "WHERE stream_id = %s AND delivered_seq = %s",
            (attempts, due, error[:LAST_ERROR_LIMIT], job.stream_id, job.delivered_seq),
        )

    def _counted(self, job: _Job, error: str | None) -> Outcome:
        if error is None:
            self._count(delivered=1)
            log.debug("stream %s: pushed SET %d (%s)", job.stream_id, job.seq, job.jti)
            return Outcome.DELIVERED
        self._count(failed=1)
        log.warning(
            "stream %s: push of SET %d (%s) to %s failed (attempt %d): %s",
            job.stream_id,
            job.seq,
            job.jti,
            job.endpoint_url,
            job.attempts + 1,
            error,
        )
        return Outcome.FAILED

    def _count(self, *, delivered: int = 0, failed: int = 0, busy: int = 0) -> None:
        with self._lock:
            self.delivered += delivered
            self.failed_attempts += failed
            self.busy += busy


def _new_client() -> httpx.Client:
    return httpx.Client(follow_redirects=False, headers={"User-Agent": USER_AGENT})


def _read_limited(response: httpx.Response) -> bytes:
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return body[:ERROR_BODY_LIMIT]


def _describe(status: int, headers: httpx.Headers, body: bytes) -> str:
    """``HTTP <status>``, plus the RFC 8935 ``err`` / ``description`` of a JSON error."""
    text = f"HTTP {status}"
    if "json" not in headers.get("content-type", ""):
        return text
    try:
        parsed = json.loads(body)
    except ValueError:
        return text
    if isinstance(parsed, dict) and isinstance(parsed.get("err"), str):
        text += f" err={parsed['err']}"
        if isinstance(parsed.get("description"), str):
            text += f": {parsed['description']}"
    return text
