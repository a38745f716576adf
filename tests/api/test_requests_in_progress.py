"""Which decisions are alone (api/requests_in_progress.py): the HTTP server's requests in
progress, open event streams not counted, nothing known without a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from api.requests_in_progress import RequestsInProgress


def test_without_an_http_server_no_request_is_alone() -> None:
    assert RequestsInProgress().alone() is False


def test_a_request_is_alone_when_it_is_the_only_one_in_progress() -> None:
    requests, tasks = RequestsInProgress(), {"this"}
    requests.attach(tasks)
    assert requests.alone() is True
    tasks.add("another")  # the collection is read live
    assert requests.alone() is False


def test_open_event_streams_are_not_work_in_progress() -> None:
    requests, tasks = RequestsInProgress(), {"this", "a stream"}
    requests.attach(tasks)
    with requests.streaming():
        assert requests.alone() is True
    assert requests.alone() is False


def test_a_stream_counts_while_its_events_flow_and_closes_them_when_cut_short() -> None:
    requests, tasks = RequestsInProgress(), {"this", "the stream"}
    requests.attach(tasks)
    closed: list[bool] = []

    async def events() -> AsyncIterator[int]:
        try:
            for n in range(10):
                yield n
        finally:
            closed.append(True)

    async def scenario() -> None:
        stream = requests.stream(events())
        assert await anext(stream) == 0
        assert requests.alone() is True  # the stream's request is not counted
        await stream.aclose()
        assert closed == [True]
        assert requests.alone() is False

    asyncio.run(scenario())
