"""``SignalSubscriber``: one SSF stream over Server-Sent Events (or, with
``delivery="poll"``, RFC 8936 long polls that acknowledge what was acted on and report
rejected SETs in ``setErrs``), every SET verified.

* Each ``event: set`` is verified through the transmitter's JWKS (refetched once on an
  unknown ``kid``): signature, ``typ: secevent+jwt``, ``iss`` = the transmitter's issuer,
  ``aud`` = the stream's audience. A SET that fails is counted in ``rejected`` (by reason)
  and never reaches a callback or the guard.
* The cursor (the SSE ``id``) is persisted after the callbacks ran, so a restart resumes
  with ``Last-Event-ID`` and receives exactly what it had not finished; ids at or below
  the cursor are skipped (none twice).
* ``event: resync`` (the cursor fell out of retention: SETs may be missing) calls
  ``on_resync`` with its data: the hook should re-read the state it depends on.
* Disconnects reconnect with jittered exponential backoff (from the server's ``retry:``
  up to ``backoff_cap`` seconds); a dead connection is noticed by the read timeout
  (heartbeats arrive well within it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from mission_ledger_pep.cursor import CursorStore
from mission_ledger_pep.jwks import JwksCache
from mission_ledger_pep.mandates import MandateGuard
from mission_ledger_pep.sets import (
    LIFECYCLE_CHANGE,
    SESSION_REVOKED,
    event_type,
    mandate_id_of,
    verify_set,
)
from mission_ledger_pep.sse import Event, SseParser
from mission_ledger_pep.tokens import TokenRejected

log = logging.getLogger("mission_ledger_pep.subscriber")

Claims = dict[str, Any]
#: RFC 8936 ``setErrs`` codes for our rejection reasons.
POLL_ERRORS = {
    "unknown_key": "invalid_key",
    "bad_signature": "invalid_key",
    "wrong_iss": "invalid_issuer",
    "wrong_aud": "invalid_audience",
}
Callback = Callable[[Claims], object]


class SignalSubscriber:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        stream_id: str,
        *,
        cursor_path: str | os.PathLike[str],
        on_mandate_revoked: Callback | None = None,
        on_mission_changed: Callback | None = None,
        on_event: Callback | None = None,
        on_resync: Callable[[dict[str, Any]], object] | None = None,
        guard: MandateGuard | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        jwks_url: str | None = None,
        read_timeout: float = 45.0,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        jwks_http: httpx.Client | None = None,
        delivery: str = "sse",
    ) -> None:
        if delivery not in ("sse", "poll"):
            msg = "delivery must be 'sse' or 'poll'"
            raise ValueError(msg)
        self.delivery = delivery
        self.base_url = base_url.rstrip("/")
        self.stream_id = stream_id
        self._api_key = api_key
        self.cursor = CursorStore(cursor_path)
        self.on_mandate_revoked = on_mandate_revoked
        self.on_mission_changed = on_mission_changed
        self.on_event = on_event
        self.on_resync = on_resync
        self.guard = guard
        self.issuer = issuer
        self.audience = audience
        self.jwks = JwksCache(jwks_url, http=jwks_http) if jwks_url else None
        self._jwks_http = jwks_http
        self._read_timeout = read_timeout
        self._backoff = (backoff_initial, backoff_cap)
        self._transport = transport
        self.rejected: Counter[str] = Counter()
        self._acks: list[str] = []
        self._set_errs: dict[str, dict[str, str]] = {}
        self.accepted = 0
        self.connections = 0
        self.last_error: str | None = None
        self._last_id: int | None = None
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # -- public surface ---------------------------------------------------------------
    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the stream is open (the server accepted the subscription)."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Run in a background (daemon) thread with its own event loop."""
        if self._thread is not None:
            return
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._task = loop.create_task(self.run())
            ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
            loop.close()

        self._thread = threading.Thread(target=main, name="ssf-subscriber", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (the cursor is already persisted)."""
        if self._thread is None or self._loop is None or self._task is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already finished
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)
        self._thread = None
        self._connected.clear()

    async def run(self) -> None:
        """Subscribe until cancelled: connect, deliver, reconnect with backoff."""
        timeout = httpx.Timeout(10.0, read=self._read_timeout)
        async with httpx.AsyncClient(timeout=timeout, transport=self._transport) as http:
            try:
                await self._follow(http)
            finally:
                if self.jwks is not None:
                    self.jwks.close()

    async def _follow(self, http: httpx.AsyncClient) -> None:
        await self._discover(http)
        attempt = 0
        while True:
            retry_ms: int | None = None
            try:
                if self.delivery == "poll":
                    retry_ms, progressed = await self._poll_once(http)
                else:
                    retry_ms, progressed = await self._connect_once(http)
                if progressed:
                    attempt = 0
            except httpx.HTTPError as error:
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("signal stream %s: %s", self.stream_id, self.last_error)
            finally:
                self._connected.clear()
            delay = self._delay(attempt, retry_ms)
            attempt += 1
            await asyncio.sleep(delay)

    # -- internals --------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    async def _discover(self, http: httpx.AsyncClient) -> None:
        """Issuer and JWKS from the SSF metadata, audience from the stream, unless given."""
        while self.issuer is None or self.jwks is None or self.audience is None:
            try:
                if self.issuer is None or self.jwks is None:
                    meta = await http.get(self.base_url + "/.well-known/ssf-configuration")
                    meta.raise_for_status()
                    body = meta.json()
                    self.issuer = self.issuer or str(body["issuer"])
                    if self.jwks is None:
                        self.jwks = JwksCache(str(body["jwks_uri"]), http=self._jwks_http)
                if self.audience is None:
                    stream = await http.get(
                        self.base_url + "/ssf/streams",
                        params={"stream_id": self.stream_id},
                        headers=self._headers(),
                    )
                    stream.raise_for_status()
                    aud = stream.json()["aud"]
                    self.audience = str(aud[0] if isinstance(aud, list) else aud)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                self.last_error = f"discovery failed: {error}"
                log.warning("signal stream %s: %s", self.stream_id, self.last_error)
                await asyncio.sleep(self._delay(0, None))

    def _delay(self, attempt: int, retry_ms: int | None) -> float:
        initial, cap = self._backoff
        base = max(initial, (retry_ms or 0) / 1000) if attempt == 0 else initial
        ceiling = min(cap, base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter

    async def _connect_once(self, http: httpx.AsyncClient) -> tuple[int | None, bool]:
        headers = {**self._headers(), "Accept": "text/event-stream", "Cache-Control": "no-store"}
        saved = self.cursor.load()
        if saved is not None:
            headers["Last-Event-ID"] = saved
            saved_id = _event_id(saved)
            self._last_id = self._last_id if saved_id is None else saved_id
        url = f"{self.base_url}/ssf/streams/{self.stream_id}/events"
        parser = SseParser()
        progressed = False
        async with http.stream("GET", url, headers=headers) as response:
            media = response.headers.get("content-type", "").split(";")[0].strip()
            if response.status_code != 200 or media != "text/event-stream":
                self.last_error = f"the stream answered {response.status_code} {media}"
                log.warning("signal stream %s: %s", self.stream_id, self.last_error)
                return None, False
            self.connections += 1
            self._connected.set()
            async for chunk in response.aiter_text():
                for event in parser.feed(chunk):
                    self._handle(event)
                    progressed = True
        return parser.retry_ms, progressed

    async def _poll_once(self, http: httpx.AsyncClient) -> tuple[int | None, bool]:
        """RFC 8936 long polls until an error: acknowledge what was delivered, report what
        was rejected (``setErrs``), deliver what came back. The transmitter keeps
        unacknowledged SETs, so no local cursor is needed in this mode."""
        url = f"{self.base_url}/ssf/poll/{self.stream_id}"
        progressed = False
        first = True
        while True:
            body: dict[str, Any] = {"maxEvents": 100, "returnImmediately": first}
            first = False
            if self._acks:
                body["ack"] = list(self._acks)
            if self._set_errs:
                body["setErrs"] = dict(self._set_errs)
            response = await http.post(url, json=body, headers=self._headers())
            if response.status_code != 200:
                self.last_error = f"the poll answered {response.status_code}"
                log.warning("signal stream %s: %s", self.stream_id, self.last_error)
                return None, progressed
            self.connections += 1
            self._connected.set()
            self._acks, self._set_errs = [], {}
            sets = response.json().get("sets") or {}
            # a long poll answers empty only after waiting; never spin on one that does not
            await asyncio.sleep(0 if sets else 0.05)
            for jti, token in sets.items():
                error = self._deliver(str(token))
                if error is None:
                    self._acks.append(str(jti))
                else:
                    self._set_errs[str(jti)] = {
                        "err": POLL_ERRORS.get(error, "invalid_request"),
                        "description": error,
                    }
                progressed = True

    def _handle(self, event: Event) -> None:
        seq = _event_id(event.id)
        if event.type == "resync":
            self._resync(event)
        elif event.type == "set":
            if seq is not None and self._last_id is not None and seq <= self._last_id:
                return  # already delivered: never twice
            self._deliver(event.data)
        else:
            return
        if seq is not None:
            self._last_id = seq
            self.cursor.save(str(seq))

    def _resync(self, event: Event) -> None:
        try:
            data = json.loads(event.data)
        except ValueError:
            data = {"raw": event.data}
        self._call(self.on_resync, data if isinstance(data, dict) else {"raw": data})

    def _deliver(self, token: str) -> str | None:
        """Verify and act on one SET; the rejection code when it was not acted on."""
        jwks, issuer, audience = self.jwks, self.issuer, self.audience
        if jwks is None or issuer is None or audience is None:  # run() discovers them first
            self.rejected["not_configured"] += 1
            return "not_configured"
        try:
            claims = verify_set(token, jwks, issuer=issuer, audience=audience)
        except TokenRejected as rejected:
            self.rejected[rejected.code] += 1
            log.warning("signal stream %s: SET rejected (%s)", self.stream_id, rejected)
            return rejected.code
        self.accepted += 1
        kind = event_type(claims)
        if kind == SESSION_REVOKED:
            mandate_id = mandate_id_of(claims)
            if mandate_id is not None and self.guard is not None:
                self.guard.revoke(mandate_id)
            self._call(self.on_mandate_revoked, claims)
        elif kind == LIFECYCLE_CHANGE:
            payload = claims["events"][kind]
            mission = payload.get("mission", {}) if isinstance(payload, dict) else {}
            if self.guard is not None and isinstance(mission, dict) and "id" in mission:
                self.guard.mission_changed(str(mission["id"]), str(payload.get("state")))
            self._call(self.on_mission_changed, claims)
        self._call(self.on_event, claims)
        return None

    def _call(self, hook: Callable[[Any], object] | None, argument: Any) -> None:
        if hook is None:
            return
        try:
            hook(argument)
        except Exception:  # a failing hook must not stop the stream
            log.exception("signal stream %s: callback failed", self.stream_id)


def _event_id(text: str) -> int | None:
    """An SSE ``id`` (or a saved one) that is an event sequence number: ASCII digits, at most
    18 (``str.isdigit`` also takes superscripts, which ``int`` refuses)."""
    if 0 < len(text) <= 18 and text.isascii() and text.isdigit():
        return int(text)
    return None
