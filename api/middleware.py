"""ASGI middleware: a hard cap on request bodies, enforced before anything parses them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 65_536


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413 problem+json.

    A declared ``Content-Length`` over the limit is refused without reading; otherwise
    the body is read (never more than ``limit`` + one chunk) and handed to the app
    from memory, so a chunked upload cannot slip past the cap.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = 0
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _too_large(send, "invalid Content-Length", status=400)
                    return
                if declared > self.limit:
                    await _too_large(send, self._detail())
                    return
            elif name == b"transfer-encoding":
                chunked = True
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and not declared and not chunked:
            # No body: hand the stream over untouched (SSE watches it for the disconnect).
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self._detail())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _detail(self) -> str:
        return f"request bodies are limited to {self.limit} bytes"


async def _too_large(send: Send, detail: str, *, status: int = 413) -> None:
    code = "payload_too_large" if status == 413 else "invalid_request"
    body = json.dumps(
        {
            "type": "urn:mission-ledger:problem:" + code,
            "title": "Payload too large" if status == 413 else "Invalid request",
            "status": status,
            "detail": detail,
            "code": code,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestId:
    """Echo ``X-Request-ID`` on every response (AuthZEN requires it; everyone benefits in
    logs). The outermost middleware, so answers other middleware gives early echo it too;
    the server's own header-size limit bounds its length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next(
            (value for name, value in scope.get("headers", []) if name == b"x-request-id"), None
        )
        if request_id is None:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                headers.append((b"x-request-id", request_id))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
