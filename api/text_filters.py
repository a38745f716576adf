"""Query parameters compared with stored text (ids, client ids, subjects): printable text
only, else 422 naming the parameter. PostgreSQL cannot compare a text holding NUL (the
query failed with a server error), and no stored id or name holds a control character."""

from __future__ import annotations

from typing import Any

from fastapi import Query

from api.schemas import PRINTABLE


def text_filter(max_length: int, *, alias: str | None = None) -> Any:
    """A ``Query`` of at most ``max_length`` printable characters."""
    return Query(max_length=max_length, pattern=PRINTABLE, alias=alias)
