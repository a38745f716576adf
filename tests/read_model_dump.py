"""Dump every durable read model in a comparable form (for rebuild and crash tests)."""

from __future__ import annotations

import base64
import json
import sqlite3
from typing import Any

import psycopg

from ledger.settings import Settings

QUERIES = {
    "proposal_board": "SELECT * FROM proposal_board ORDER BY proposal_id",
    "mission_board": "SELECT * FROM mission_board ORDER BY mission_id",
    "mandate_register": "SELECT * FROM mandate_register ORDER BY mandate_id",
    "access_request_board": "SELECT * FROM access_request_board ORDER BY task_id",
    "ssf_streams": "SELECT * FROM ssf_streams ORDER BY stream_id",
    "signal_state": "SELECT * FROM signal_state ORDER BY aggregate_id",
    "set_log": "SELECT stream_id, seq, jti, event_type, cause_position, created_at, set_jwt "
    "FROM set_log ORDER BY stream_id, seq",
}


def _normalise(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    values = {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}
    if table == "set_log":
        # ES256 signatures are randomised: compare the signed header and claims instead.
        header, claims = str(values["set_jwt"]).split(".")[:2]
        values["set_jwt"] = (_decoded(header), _decoded(claims))
    return tuple(sorted(values.items()))


def _decoded(part: str) -> str:
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return json.dumps(json.loads(raw), sort_keys=True)


def dump(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    if settings.embedded:
        conn = sqlite3.connect(settings.sqlite_path)
        conn.row_factory = sqlite3.Row
        try:
            for table, sql in QUERIES.items():
                out[table] = [_normalise(table, dict(r)) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()
        return out
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        for table, sql in QUERIES.items():
            cur = conn.execute(sql)
            names = [d.name for d in cur.description or []]
            out[table] = [_normalise(table, dict(zip(names, r, strict=True))) for r in cur]
    return out
