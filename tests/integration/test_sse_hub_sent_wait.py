"""A governance write waits, within a bound, until this process's SSE subscribers have been
sent its SETs (``SseHub.wait_sent``): it returns once every subscriber that was caught up
has taken them; a subscriber that does not read, or is already behind, holds a write only
up to the bound or not at all; with no subscriber, or a bound of 0, nothing waits."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from api.workers.sse_hub import DISABLED, NO_SUBSCRIBERS, SENT, TIMEOUT, SseHub
from ledger.application import Ledger
from ledger.domain.streams import SSE
from ledger.persistence.snapshots import StateCodec
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from projections.follower import LogFollower
from projections.signals import SignalLog
from tests.builders import OPERATOR
from tests.integration.test_signal_log import KEK, PEP
from tests.mandate_builders import delegable_authority, issue, mission_with

#: A bound no passing test comes near: reaching it makes the outcome ``timeout``.
LONG = 30.0


@dataclass
class Consumer:
    """An SSE connection that reads every frame the hub yields and records the SETs."""

    frames: AsyncGenerator[bytes, None]
    revoked: list[str] = field(default_factory=list)
    got_set: asyncio.Event = field(default_factory=asyncio.Event)
    stop_after: int | None = None  # stop reading (a stuck client) after this many SETs

    async def run(self) -> None:
        try:
            async for data in self.frames:
                if not data.startswith(b"id: "):
                    continue
                token = data.split(b"data: ")[1].strip().decode()
                payload = token.split(".")[1]
                claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                self.revoked.append(claims["sub_id"]["session"]["id"])
                self.got_set.set()
                if self.stop_after is not None and len(self.revoked) >= self.stop_after:
                    await asyncio.Event().wait()  # never asks for the next frame
        finally:  # the connection closes (as sse-starlette closes the body when sending fails)
            await self.frames.aclose()


class Replica:
    """A ledger, its follower (signal log and SSE hub trailing, as in the app) and streams."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        keyring = Keyring.open(
            settings.model_copy(update={"key_encryption_key": KEK}), ledger.database
        )
        keyring.ensure("ES256", ledger.clock.now())
        signals = SignalLog(StateCodec(ledger.mapper.transcoder), keyring, ledger.issuer)
        self.hub = SseHub(ledger.database, signals)
        self.follower = LogFollower(ledger, trailing_durable=[signals], trailing_live=[self.hub])
        self.mission = mission_with(ledger, delegable_authority())

    def stream(self) -> str:
        config = {"delivery": {"method": SSE}}
        return self.ledger.create_stream(
            actor=PEP, aud="pep-1", receiver_config=config
        ).value.stream_id

    def revoke_new_mandate(self) -> tuple[str, int]:
        """Issue a Mandate and revoke it: (its id, the revoke's position)."""
        mandate = issue(self.ledger, self.mission)
        written = self.ledger.revoke_mandate(actor=OPERATOR, mandate_id=mandate.id, reason="test")
        assert written.position is not None
        return mandate.id, written.position

    async def connect(self, stream_id: str, **kw: Any) -> tuple[Consumer, asyncio.Task[None]]:
        """A subscriber, caught up: it has taken one SET and waits for the next."""
        consumer = Consumer(self.hub.events(stream_id, None), **kw)
        task = asyncio.create_task(consumer.run())
        await asyncio.to_thread(self.revoke_new_mandate)
        await asyncio.wait_for(consumer.got_set.wait(), LONG)
        consumer.got_set.clear()
        return consumer, task


@pytest.fixture
def replica(ledger: Ledger, store_settings: Settings) -> Iterator[Replica]:
    made = Replica(ledger, store_settings)
    made.follower.start()
    yield made
    made.follower.stop()


def run(replica: Replica, scenario: Callable[[], Awaitable[None]]) -> None:
    async def attached() -> None:
        replica.hub.attach(asyncio.get_running_loop())
        await scenario()

    asyncio.run(attached())


def test_a_write_returns_once_every_caught_up_subscriber_was_sent_its_set(
    replica: Replica,
) -> None:
    first, second = replica.stream(), replica.stream()

    async def scenario() -> None:
        a, task_a = await replica.connect(first)
        b, task_b = await replica.connect(second)
        mandate_id, position = await asyncio.to_thread(replica.revoke_new_mandate)
        assert await replica.hub.wait_sent(position, LONG) == SENT
        assert a.revoked[-1] == b.revoked[-1] == mandate_id
        task_a.cancel()
        task_b.cancel()

    run(replica, scenario)


def test_a_subscriber_that_stops_reading_holds_a_write_only_until_the_bound(
    replica: Replica,
) -> None:
    stream_id = replica.stream()

    async def scenario() -> None:
        stuck, task = await replica.connect(stream_id, stop_after=2)
        mandate_id, position = await asyncio.to_thread(replica.revoke_new_mandate)
        # Its frame handed over (it read it), so the wait below counts it as owing that
        # frame. (Waiting before the hub handed it over — a slow follower under load — made
        # the wait below time out without marking the subscriber, and the later write then
        # waited for it up to the bound too.)
        await asyncio.wait_for(stuck.got_set.wait(), LONG)
        assert stuck.revoked[-1] == mandate_id
        # it got the frame but never asks for the next one: its connection did not take it
        assert await replica.hub.wait_sent(position, 0.05) == TIMEOUT
        _, later = await asyncio.to_thread(replica.revoke_new_mandate)
        # behind now: the next write does not wait for it
        assert await replica.hub.wait_sent(later, LONG) == SENT
        assert replica.hub.sent_waits.outcomes == {TIMEOUT: 1, SENT: 1}
        assert replica.hub.sent_waits.durations.count == 2
        task.cancel()

    run(replica, scenario)


def test_with_no_subscriber_a_write_does_not_wait(replica: Replica) -> None:
    async def scenario() -> None:
        never = replica.ledger.head_position() + 1_000  # no batch ever reaches it
        assert await replica.hub.wait_sent(never, LONG) == NO_SUBSCRIBERS
        assert replica.hub.sent_waits.durations.count == 0

    run(replica, scenario)


def test_a_bound_of_zero_answers_without_waiting(replica: Replica) -> None:
    stream_id = replica.stream()

    async def scenario() -> None:
        _, task = await replica.connect(stream_id)
        never = replica.ledger.head_position() + 1_000
        assert await replica.hub.wait_sent(never, 0) == DISABLED
        assert replica.hub.sent_waits.durations.count == 0
        task.cancel()

    run(replica, scenario)


def test_a_subscriber_that_leaves_no_longer_holds_a_write(replica: Replica) -> None:
    stream_id = replica.stream()

    async def scenario() -> None:
        stuck, task = await replica.connect(stream_id, stop_after=2)
        _, position = await asyncio.to_thread(replica.revoke_new_mandate)
        await asyncio.wait_for(stuck.got_set.wait(), LONG)  # and it stopped reading
        waiting = asyncio.create_task(replica.hub.wait_sent(position, LONG))
        await asyncio.sleep(0)
        assert not waiting.done()  # the write waits for the stuck subscriber
        task.cancel()  # its connection closes
        assert await waiting == SENT

    run(replica, scenario)
