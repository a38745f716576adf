"""Server-side console sessions, and the sign-in attempts that precede them.

The browser holds only a random token (256 bits) in an ``HttpOnly`` cookie; everything else
(the principal, its CSRF token, when it was last used) stays in this process, keyed by the
token's SHA-256, so a memory dump reveals no usable cookie. A session ends on sign-out,
after ``idle`` without a request, ``lifetime`` after sign-in, or (for one opened with an API
key) as soon as that key is revoked. A sign-in attempt holds what the OIDC redirect needs
(``state``, ``nonce``, the PKCE verifier, where to return) and the CSRF token of the sign-in
form, for ten minutes, and is used once.

Both live in memory, bounded: a replica restart signs everyone out, and behind several
replicas the load balancer keeps a browser on one replica (sticky sessions).
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from api.auth import Principal

ATTEMPT_LIFETIME = timedelta(minutes=10)
MAX_SESSIONS = 20_000
MAX_ATTEMPTS = 20_000

V = TypeVar("V")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Session:
    principal: Principal
    #: The synchroniser token every state-changing form of this session carries.
    csrf: str
    created_at: datetime
    last_seen: datetime
    #: How the person signed in: "oidc" or "api_key".
    method: str
    #: The API key that opened the session (its id), re-checked on every request.
    key_id: str | None = None
    #: What to call the person on the page (their ``name`` claim, else the principal).
    display_name: str = ""


@dataclass
class Attempt:
    csrf: str
    created_at: datetime
    state: str = field(default_factory=new_token)
    nonce: str = field(default_factory=new_token)
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    next_path: str = "/console/"


class _Bounded(Generic[V]):
    """A dict of at most ``capacity`` items keyed by token digest; the oldest goes first."""

    def __init__(self, capacity: int) -> None:
        self._items: collections.OrderedDict[str, V] = collections.OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def put(self, token: str, value: V) -> None:
        with self._lock:
            self._items[_digest(token)] = value
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def get(self, token: str) -> V | None:
        with self._lock:
            return self._items.get(_digest(token))

    def pop(self, token: str) -> V | None:
        with self._lock:
            return self._items.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._items)


class SessionStore:
    def __init__(self, *, idle: timedelta, lifetime: timedelta) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self._sessions: _Bounded[Session] = _Bounded(MAX_SESSIONS)
        self._attempts: _Bounded[Attempt] = _Bounded(MAX_ATTEMPTS)

    # ------------------------------------------------------------------ sessions

    def open(
        self,
        principal: Principal,
        *,
        now: datetime,
        method: str,
        key_id: str | None = None,
        display_name: str | None = None,
    ) -> str:
        """A new session (always a new token: a session id is never carried over from
        before sign-in); returns the token for the cookie."""
        token = new_token()
        self._sessions.put(
            token,
            Session(
                principal=principal,
                csrf=new_token(),
                created_at=now,
                last_seen=now,
                method=method,
                key_id=key_id,
                display_name=display_name or principal.name,
            ),
        )
        return token

    def find(self, token: str, *, now: datetime) -> Session | None:
        """The live session of ``token`` (an idle or expired one ends here)."""
        session = self._sessions.get(token)
        if session is None:
            return None
        if now - session.last_seen >= self.idle or now - session.created_at >= self.lifetime:
            self._sessions.pop(token)
            return None
        return session

    def end(self, token: str) -> None:
        self._sessions.pop(token)

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------ sign-in attempts

    def begin(self, *, now: datetime) -> tuple[str, Attempt]:
        token = new_token()
        attempt = Attempt(csrf=new_token(), created_at=now)
        self._attempts.put(token, attempt)
        return token, attempt

    def attempt(self, token: str, *, now: datetime) -> Attempt | None:
        attempt = self._attempts.get(token)
        if attempt is None or now - attempt.created_at >= ATTEMPT_LIFETIME:
            return None
        return attempt

    def finish(self, token: str) -> None:
        """An attempt is used once."""
        self._attempts.pop(token)
