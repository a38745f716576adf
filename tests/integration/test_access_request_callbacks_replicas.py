"""Access-request callbacks across replicas (PostgreSQL): two stores on one database, two
delivery workers on each, a receiver that fails now and then: every task's notification
reaches the HTTPS receiver exactly once (the outbox row is claimed under a row lock), and
the outbox outlives a process (another one sends what a stopped one failed to)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from api.workers.callbacks import CallbackDelivery
from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.callbacks import parse_callback
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from projections.callbacks import CallbackOutbox, delivery_of
from projections.follower import LogFollower
from tests.builders import active_mission
from tests.callback_receiver import tls_receiver
from tests.integration.test_access_requests_contract import RecordingSigner, submit_access_request

APPROVER = Actor(type="api_key", name="approver-1", role="approver")


def _delivery(ledger: Ledger, task_id: str) -> str:
    row = delivery_of(ledger.database, task_id)
    assert row is not None
    return str(row["delivery"])


def _worker(ledger: Ledger, ca_file: Path) -> CallbackDelivery:
    return CallbackDelivery(
        ledger,
        lambda task_id: "secret-" + task_id,
        allow_private=True,
        ca_file=ca_file,
        interval=0.02,
        backoff_base=0.01,
        backoff_cap=0.05,
    )


@pytest.mark.postgres
def test_a_notification_that_failed_before_a_restart_is_sent_by_the_next_process(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=postgres_url)
    ledgers = [open_ledger(settings), open_ledger(settings)]
    try:
        with tls_receiver(tmp_path) as receiver:
            writer = ledgers[0]
            writer.signer = RecordingSigner()
            mission = active_mission(writer)
            callback = parse_callback(receiver.url(), None, None)
            task_id = submit_access_request(writer, mission, callback=callback)
            writer.cancel_access_request(actor=APPROVER, task_id=task_id, reason=None)
            LogFollower(writer, durable=[CallbackOutbox(writer.issuer)]).catch_up()
            receiver.script = [503]
            first = _worker(writer, receiver.ca_file)
            assert first.attempt(task_id) is False
            first.stop()
            time.sleep(0.1)  # past the backoff
            restarted = _worker(ledgers[1], receiver.ca_file)
            assert restarted.attempt(task_id) is True
            assert restarted.attempt(task_id) is None  # nothing more to send
            restarted.stop()
            assert [r.answer for r in receiver.seen()] == [503, 200]
            assert _delivery(writer, task_id) == "delivered"
    finally:
        for ledger in ledgers:
            ledger.close()


@pytest.mark.postgres
def test_replicas_deliver_each_notification_exactly_once(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_url)
    ledgers = [open_ledger(settings), open_ledger(settings)]
    workers: list[CallbackDelivery] = []
    try:
        with tls_receiver(tmp_path) as receiver:
            writer = ledgers[0]
            writer.signer = RecordingSigner()
            follower = LogFollower(writer, durable=[CallbackOutbox(writer.issuer)])
            mission = active_mission(writer)
            callback = parse_callback(receiver.url(), None, None)
            tasks = [
                submit_access_request(writer, mission, jti=f"j{n}", callback=callback)
                for n in range(12)
            ]
            for task_id in tasks:
                writer.deny_access_request(actor=APPROVER, task_id=task_id, reason=None)
            follower.catch_up()
            receiver.script = [503 if n % 5 == 2 else 200 for n in range(40)]
            workers = [_worker(ledger, receiver.ca_file) for ledger in ledgers for _ in range(2)]
            for worker in workers:
                worker.start()
            deadline = time.monotonic() + 20
            while any(_delivery(writer, t) != "delivered" for t in tasks):
                assert time.monotonic() < deadline, "the replicas did not deliver everything"
                time.sleep(0.05)
            time.sleep(0.2)
            accepted = Counter(
                json.loads(r.body)["task"]["id"] for r in receiver.seen() if r.answer == 200
            )
            assert accepted == Counter(tasks)  # each exactly once
            assert sum(w.counters()["delivered"] for w in workers) == len(tasks)
    finally:
        for worker in workers:
            worker.stop()
        for ledger in ledgers:
            ledger.close()
