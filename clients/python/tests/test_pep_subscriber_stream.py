"""The subscriber over a (mock) SSE stream: cursor persisted after delivery, resumed with
``Last-Event-ID``, nothing delivered twice, ``resync`` handed to the hook, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
from mission_ledger_pep import SignalSubscriber
from mission_ledger_pep.cursor import CursorStore
from pep_keys import AUDIENCE, ISSUER, JWKS_URL, Jwks, new_key, revoked_set


class Stream:
    """Serves ``frames`` after the ``Last-Event-ID`` it is sent, then closes."""

    def __init__(self, frames: list[tuple[int, str, str]]) -> None:
        self.frames = frames
        self.last_event_ids: list[str | None] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        last = request.headers.get("last-event-id")
        self.last_event_ids.append(last)
        after = int(last) if last else 0
        body = "retry: 10\n\n" + "".join(
            f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"
            for seq, kind, data in self.frames
            if seq > after or kind == "resync"
        )
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def run_for(subscriber: SignalSubscriber, connections: int) -> None:
    async def main() -> None:
        task = asyncio.create_task(subscriber.run())
        while subscriber.connections < connections:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


def subscriber_for(stream: Stream, cursor: Path, seen: list[Any], **kw: Any) -> SignalSubscriber:
    key = kw.pop("key")
    return SignalSubscriber(
        "https://ledger.test",
        "key",
        "s1",
        cursor_path=cursor,
        on_mandate_revoked=seen.append,
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=JWKS_URL,
        jwks_http=Jwks(key).client(),
        transport=httpx.MockTransport(stream.handler),
        backoff_initial=0.01,
        **kw,
    )


def test_restart_resumes_from_the_persisted_cursor_and_delivers_none_twice(
    tmp_path: Path,
) -> None:
    key = new_key("k1")
    stream = Stream([(1, "set", revoked_set(key, "mdt_1", jti="a"))])
    seen: list[Any] = []
    run_for(subscriber_for(stream, tmp_path / "cursor", seen, key=key), 1)
    assert CursorStore(tmp_path / "cursor").load() == "1"
    assert stream.last_event_ids[0] is None
    first_run = len(stream.last_event_ids)
    stream.frames.append((2, "set", revoked_set(key, "mdt_2", jti="b")))
    run_for(subscriber_for(stream, tmp_path / "cursor", seen, key=key), 1)
    assert stream.last_event_ids[first_run] == "1"
    assert [c["sub_id"]["session"]["id"] for c in seen] == ["mdt_1", "mdt_2"]


def test_reconnect_skips_ids_already_delivered(tmp_path: Path) -> None:
    key = new_key("k1")
    stream = Stream([(1, "set", revoked_set(key, "mdt_1"))])
    original = stream.handler

    def replaying(request: httpx.Request) -> httpx.Response:  # ignores Last-Event-ID
        return original(httpx.Request("GET", request.url))

    seen: list[Any] = []
    subscriber = subscriber_for(stream, tmp_path / "cursor", seen, key=key)
    subscriber._transport = httpx.MockTransport(replaying)
    run_for(subscriber, 3)
    assert len(seen) == 1


def test_resync_calls_the_hook(tmp_path: Path) -> None:
    key = new_key("k1")
    stream = Stream([(4, "resync", '{"reason": "cursor 1 is not in the retained log"}')])
    resyncs: list[Any] = []
    subscriber = subscriber_for(
        stream, tmp_path / "c.sqlite", [], key=key, on_resync=resyncs.append
    )
    run_for(subscriber, 1)
    assert resyncs[0]["reason"].startswith("cursor 1")
    assert CursorStore(tmp_path / "c.sqlite").load() == "4"


def test_sqlite_cursor_round_trips(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "cursor.db")
    assert store.load() is None
    store.save("12")
    assert CursorStore(tmp_path / "cursor.db").load() == "12"


def test_wrong_content_type_is_not_read_as_a_stream(tmp_path: Path) -> None:
    key = new_key("k1")
    answers = httpx.MockTransport(lambda request: httpx.Response(401, json={"title": "no"}))
    seen: list[Any] = []
    subscriber = subscriber_for(Stream([]), tmp_path / "cursor", seen, key=key)
    subscriber._transport = answers

    async def main() -> None:
        task = asyncio.create_task(subscriber.run())
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert subscriber.connections == 0
    assert "401" in (subscriber.last_error or "")


def test_poll_mode_acknowledges_delivered_sets_and_reports_rejected_ones(tmp_path: Path) -> None:
    key = new_key("k1")
    polls: list[dict[str, Any]] = []
    pending = {"good": revoked_set(key, "mdt_1"), "bad": revoked_set(new_key("x"), "mdt_2")}

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(json.loads(request.content))
        sets = dict(pending)
        pending.clear()
        return httpx.Response(200, json={"sets": sets})

    seen: list[Any] = []
    subscriber = subscriber_for(Stream([]), tmp_path / "cursor", seen, key=key, delivery="poll")
    subscriber._transport = httpx.MockTransport(handler)
    run_for(subscriber, 2)
    assert [c["sub_id"]["session"]["id"] for c in seen] == ["mdt_1"]
    assert polls[1]["ack"] == ["good"]
    assert polls[1]["setErrs"]["bad"]["err"] == "invalid_key"
    assert subscriber.rejected["unknown_key"] == 1
