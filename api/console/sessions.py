"""Server-side console sessions, and the sign-in attempts that precede them, in the database
(this module owns the tables ``console_sessions`` and ``console_signin_attempts``, migration
0009; decision record 0022).

The browser holds only a random token (256 bits) in an ``HttpOnly`` cookie; the row is keyed
by the token's SHA-256, so the table (or a backup of it) holds no usable cookie. The row
keeps the person (principal), the session's CSRF token, how it signed in, when it was opened
and last used, and when it ends at the latest. Every replica reads the same rows: a session
survives a restart and works behind any replica, without sticky sessions.

A session ends on sign-out (its row is deleted), after ``idle`` without a request,
``lifetime`` after sign-in, or (for one opened with an API key) as soon as that key is
revoked (checked by the caller on every request). ``last_seen`` is written at most once per
``touch_every`` (a minute, or a quarter of the idle time if shorter), so page loads do not
each write: the idle timeout is kept to within that much. Expired rows are deleted when
found and, all of them, on every sign-in.

A sign-in attempt holds what the OpenID redirect needs (``state``, ``nonce``, the PKCE
verifier, where to return) and the CSRF token of the sign-in form, for ten minutes, and is
used once (deleted): the provider may send the browser back to another replica.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api.auth import Principal
from ledger.domain.roles import Role
from ledger.persistence.database import Database

ATTEMPT_LIFETIME = timedelta(minutes=10)
TOUCH_EVERY = timedelta(minutes=1)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _micros(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def _instant(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


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
    #: The SHA-256 of the session's token (the row's key; never the token itself).
    id: str = ""


@dataclass
class Attempt:
    csrf: str
    created_at: datetime
    state: str = field(default_factory=new_token)
    nonce: str = field(default_factory=new_token)
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    next_path: str = "/console/"


def _principal_json(principal: Principal) -> str:
    return json.dumps(
        {
            "kind": principal.kind,
            "name": principal.name,
            "roles": sorted(r.value for r in principal.roles),
            "client_id": principal.client_id,
            "issuer": principal.issuer,
            "acr": principal.acr,
        },
        separators=(",", ":"),
    )


def _principal_of(text: str) -> Principal:
    value: dict[str, Any] = json.loads(text)
    return Principal(
        kind=str(value["kind"]),
        name=str(value["name"]),
        roles=frozenset(Role(r) for r in value["roles"]),
        client_id=value.get("client_id"),
        issuer=value.get("issuer"),
        acr=value.get("acr"),
    )


class SessionStore:
    def __init__(self, db: Database, *, idle: timedelta, lifetime: timedelta) -> None:
        self.db = db
        self.idle = idle
        self.lifetime = lifetime
        self.touch_every = min(TOUCH_EVERY, idle / 4)

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
        before sign-in); returns the token for the cookie. Expired sessions are purged."""
        token = new_token()
        at = _micros(now)
        with self.db.transaction() as cur:
            self._purge(cur, now)
            cur.execute(
                "INSERT INTO console_sessions (session_hash, principal, csrf, method, key_id, "
                "display_name, created_at, last_seen, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    _digest(token),
                    _principal_json(principal),
                    new_token(),
                    method,
                    key_id,
                    display_name or principal.name,
                    at,
                    at,
                    _micros(now + self.lifetime),
                ),
            )
        return token

    def _purge(self, cur: Any, now: datetime) -> None:
        cur.execute(
            "DELETE FROM console_sessions WHERE expires_at <= %s OR last_seen <= %s",
            (_micros(now), _micros(now - self.idle)),
        )
        cur.execute(
            "DELETE FROM console_signin_attempts WHERE created_at <= %s",
            (_micros(now - ATTEMPT_LIFETIME),),
        )

    def find(self, token: str, *, now: datetime, touch: bool = False) -> Session | None:
        """The live session of ``token`` (an idle or expired one ends here); ``touch``: this
        request counts as activity (recorded at most once per ``touch_every``)."""
        digest = _digest(token)
        row = self.db.fetchone("SELECT * FROM console_sessions WHERE session_hash = %s", (digest,))
        if row is None:
            return None
        last_seen = _instant(int(row["last_seen"]))
        if now - last_seen >= self.idle or now >= _instant(int(row["expires_at"])):
            self.end(token)
            return None
        if touch and now - last_seen >= self.touch_every:
            self.db.execute(
                "UPDATE console_sessions SET last_seen = %s WHERE session_hash = %s",
                (_micros(now), digest),
            )
            last_seen = now
        return Session(
            principal=_principal_of(str(row["principal"])),
            csrf=str(row["csrf"]),
            created_at=_instant(int(row["created_at"])),
            last_seen=last_seen,
            method=str(row["method"]),
            key_id=row["key_id"],
            display_name=str(row["display_name"]),
            id=digest,
        )

    def end(self, token: str) -> None:
        self.db.execute("DELETE FROM console_sessions WHERE session_hash = %s", (_digest(token),))

    @property
    def open_sessions(self) -> int:
        row = self.db.fetchone("SELECT count(*) AS n FROM console_sessions")
        return 0 if row is None else int(row["n"])

    # ------------------------------------------------------------------ sign-in attempts

    def begin(self, *, now: datetime, next_path: str) -> tuple[str, Attempt]:
        """A new sign-in attempt returning to ``next_path``; its token for the cookie."""
        token = new_token()
        attempt = Attempt(csrf=new_token(), created_at=now, next_path=next_path)
        value = {**asdict(attempt), "created_at": None}
        self.db.execute(
            "INSERT INTO console_signin_attempts (attempt_hash, attempt, created_at) "
            "VALUES (%s, %s, %s)",
            (_digest(token), json.dumps(value), _micros(now)),
        )
        return token, attempt

    def attempt(self, token: str, *, now: datetime) -> Attempt | None:
        row = self.db.fetchone(
            "SELECT attempt, created_at FROM console_signin_attempts WHERE attempt_hash = %s",
            (_digest(token),),
        )
        if row is None:
            return None
        created_at = _instant(int(row["created_at"]))
        if now - created_at >= ATTEMPT_LIFETIME:
            return None
        value = json.loads(str(row["attempt"]))
        return Attempt(**{**value, "created_at": created_at})

    def finish(self, token: str) -> None:
        """An attempt is used once."""
        self.db.execute(
            "DELETE FROM console_signin_attempts WHERE attempt_hash = %s", (_digest(token),)
        )
