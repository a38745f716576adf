"""Access-request callbacks (SPEC 7.1 "Signals"): each task state change POSTed, signed, to
the callback its request named, once, from one replica, retried like SSF push.

Where a notification comes from: ``projections.callbacks`` makes a row of the outbox
``due`` when a task with a callback reaches a terminal state (exactly once across replicas).

Delivery: a dispatcher thread (woken by the log follower's batches, every ``interval``
seconds, and by ``ring()``) hands each due row to a small pool. One attempt is one
transaction that claims the row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so another
replica skips it and a notification is never in flight twice), POSTs the stored body
(``Content-Type: application/json``, ``Signature: t=…,v1=…``: ``ledger.signing.callbacks``)
and records the outcome before committing. Any 2xx is success; anything else, a connection
error, a timeout or a refused address is a failed attempt, retried after
``api.workers.push.backoff_seconds`` (doubling with jitter, capped), until the change is
``give_up_after`` old (then ``abandoned``). At least once: a crash between the receiver's
2xx and the commit sends it again (the body's ``id`` lets receivers de-duplicate). SQLite is
single process: an in-process guard serialises, and the POST happens outside the
transaction.

SSRF: a callback host is resolved and every address it resolves to must be public
(``ledger.domain.callbacks.address_problem``) when the request is submitted
(``check_callback``) and again when it is called: the connection is made by
``GuardedBackend``, which resolves the name itself, refuses it if any address is not
public, and connects to an address it checked (so a DNS answer that changed in between,
rebinding, is caught). TLS still verifies the certificate for the host name.
``ACCESS_REQUEST_CALLBACK_ALLOW_PRIVATE=true`` lifts the address rule (tests, private
networks); https is always required.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore

from api.workers.dispatch import AppliesBatches, Dispatcher
from api.workers.push import backoff_seconds
from ledger.application import Ledger
from ledger.domain.callbacks import Callback, address_problem
from ledger.domain.errors import CallbackRefused
from ledger.persistence.database import Cursor, Dialect
from ledger.signing.callbacks import SIGNATURE_HEADER, signature
from projections import callbacks as outbox

log = logging.getLogger("mission_ledger.callbacks")

USER_AGENT = "mission-ledger-callbacks/1"

#: ``(host, port) -> addresses``: how names are resolved (replaceable in tests).
Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise CallbackRefused(f"callback host {host!r} does not resolve ({error})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve
) -> list[str]:
    """The addresses of ``host``, each one public (unless ``allow_private``), else
    ``CallbackRefused`` naming the first that is not."""
    host = host.strip("[]")
    addresses = resolver(host, port)
    if not addresses:
        raise CallbackRefused(f"callback host {host!r} does not resolve")
    if not allow_private:
        for address in addresses:
            problem = address_problem(address)
            if problem is not None:
                raise CallbackRefused(
                    f"callback host {host!r} resolves to {address}, a {problem} address: "
                    "callbacks go to public addresses only"
                )
    return addresses


def check_callback(callback: Callback, *, allow_private: bool, resolver: Resolver) -> None:
    """Refuse (``CallbackRefused``) a callback whose host is not public, at submission."""
    parts = urlsplit(callback.endpoint)  # its shape checked by parse_callback
    checked_addresses(
        parts.hostname or "", parts.port or 443, allow_private=allow_private, resolver=resolver
    )


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to addresses it resolved and checked itself (DNS rebinding)."""

    def __init__(self, *, allow_private: bool, resolver: Callable[[], Resolver]) -> None:
        self._allow_private = allow_private
        self._resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = checked_addresses(
            host, port, allow_private=self._allow_private, resolver=self._resolver()
        )
        error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failure:
                error = failure
        assert error is not None
        raise error


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """The public roots (certifi, as httpx uses), plus ``ca_file``'s when set."""
    context = ssl.create_default_context()
    import certifi  # noqa: PLC0415 - httpcore's own dependency, needed only here

    context.load_verify_locations(certifi.where())
    if ca_file is not None:
        context.load_verify_locations(str(ca_file))
    return context


class CallbackDelivery(Dispatcher):
    thread_name = "ar-callback"

    def __init__(
        self,
        ledger: Ledger,
        secret_of: Callable[[str], str],
        *,
        allow_private: bool = False,
        ca_file: Path | None = None,
        follower: AppliesBatches | None = None,
        interval: float = 0.5,
        timeout: float = 5.0,
        concurrency: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        give_up_after: timedelta = timedelta(hours=24),
    ) -> None:
        super().__init__(
            follower=follower, interval=interval, timeout=timeout, concurrency=concurrency
        )
        self._db = ledger.database
        self._clock = ledger.clock
        self._secret_of = secret_of
        self.allow_private = allow_private
        #: How names are resolved, at submission and at delivery (tests replace it).
        self.resolver: Resolver = resolve
        # The public roots take ~50 ms to load: with the first delivery, not at every start
        # (most deployments never deliver a callback). A CA file of one's own is loaded now,
        # so that a bad one stops the start rather than the first delivery.
        self._ca_file = ca_file
        self._ssl = None if ca_file is None else ssl_context(ca_file)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.give_up_after = give_up_after
        self._pool: httpcore.ConnectionPool | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.abandoned = 0

    def closed(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def check(self, callback: Callback) -> None:
        """Refuse a callback at submission (``CallbackRefused``), by the delivery rules."""
        check_callback(callback, allow_private=self.allow_private, resolver=self.resolver)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {
                "delivered": self.delivered,
                "failed_attempts": self.failed_attempts,
                "abandoned": self.abandoned,
                "in_flight": len(self._inflight),
            }

    def due_work(self) -> list[tuple[str, Any]]:
        return [(task_id, None) for task_id in outbox.due(self._db, self._clock.now())]

    def work(self, key: str, argument: Any) -> bool:  # noqa: ARG002 - no argument here
        self.attempt(key)
        return False

    # ------------------------------------------------------------------ one attempt

    def attempt(self, task_id: str) -> bool | None:
        """Try once to deliver the task's notification: True delivered, False failed, None
        nothing to do (not due, or held by another replica)."""
        if self._db.dialect is Dialect.POSTGRES:
            with self._db.transaction() as cur:
                job = outbox.claim(cur, task_id, self._clock.now())
                if job is None:
                    return None
                error = self._post(job)
                self._record(cur, job, error)
            return self._counted(job, error)
        with self._db.transaction(write=False) as cur:
            job = outbox.claim(cur, task_id, self._clock.now())
        if job is None:
            return None
        error = self._post(job)
        with self._db.transaction() as cur:
            self._record(cur, job, error)
        return self._counted(job, error)

    def _connection_pool(self) -> httpcore.ConnectionPool:
        with self._lock:
            return self._pool or self._new_pool()

    def _new_pool(self) -> httpcore.ConnectionPool:
        if self._ssl is None:
            self._ssl = ssl_context(self._ca_file)
        self._pool = httpcore.ConnectionPool(
            ssl_context=self._ssl,
            network_backend=GuardedBackend(
                allow_private=self.allow_private, resolver=lambda: self.resolver
            ),
            max_connections=self.concurrency * 2,
        )
        return self._pool

    def _post(self, job: outbox.Notification) -> str | None:
        """POST the notification; None on 2xx, else what went wrong."""
        sent_at = int(self._clock.now().timestamp())
        headers = [
            (b"Content-Type", b"application/json"),
            (b"User-Agent", USER_AGENT.encode()),
            (
                SIGNATURE_HEADER.encode(),
                signature(self._secret_of(job.task_id), job.body, sent_at).encode(),
            ),
        ]
        timeouts = {"connect": self.timeout, "read": self.timeout, "write": self.timeout}
        try:
            response = self._connection_pool().request(
                "POST",
                job.endpoint,
                headers=headers,
                content=job.body,
                extensions={"timeout": timeouts},
            )
        except CallbackRefused as refused:
            return f"refused: {refused.detail}"
        except httpcore.TimeoutException as error:
            return f"timeout after {self.timeout:g}s ({type(error).__name__})"
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
            return f"{type(e).__name__}: {e}"
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"

    def _record(self, cur: Cursor, job: outbox.Notification, error: str | None) -> None:
        now = self._clock.now()
        if error is None:
            outbox.record_delivered(cur, job, now)
            return
        delay = backoff_seconds(job.attempts + 1, base=self.backoff_base, cap=self.backoff_cap)
        retry_at: datetime | None = now + timedelta(seconds=delay)
        changed = datetime.fromtimestamp(job.changed_at / 1_000_000, tz=now.tzinfo)
        if retry_at is not None and retry_at - changed > self.give_up_after:
            retry_at = None
            with self._lock:
                self.abandoned += 1
        outbox.record_failure(cur, job, error, retry_at=retry_at)

    def _counted(self, job: outbox.Notification, error: str | None) -> bool:
        with self._lock:
            if error is None:
                self.delivered += 1
            else:
                self.failed_attempts += 1
        if error is None:
            return True
        log.warning(
            "callback of task %s to %s failed (attempt %d): %s",
            job.task_id,
            job.endpoint,
            job.attempts + 1,
            error,
        )
        return False
