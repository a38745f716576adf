"""A tiny ASGI test driver (no Starlette): call an app once, collect the response."""

from __future__ import annotations

import json
from typing import Any


class Recorder:
    """The protected app: records whether it was called."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str = "/invoices/7", method: str = "GET") -> dict[str, Any]:
    scope = {"type": "http", "method": method, "path": path, "headers": [(b"x-agent", b"a1")]}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    parsed = json.loads(body) if headers.get("content-type") == "application/problem+json" else body
    return {"status": start["status"], "headers": headers, "body": parsed}
