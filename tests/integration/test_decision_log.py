"""The decision log store on both backends (``projections.decision_log``) and its writer
(``api.workers.decision_writer``): what a record holds, paging and filters, no duplicates,
retention (PostgreSQL: daily partitions, made ahead and dropped whole), and a writer that
never drops a record: a failing store holds answers back until it recovers, sync mode
answers after the commit, shutdown writes what is queued."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from api.workers.decision_writer import DecisionWriter
from ledger.application import Ledger
from ledger.domain.actors import Actor
from ledger.domain.canonical import raw_digest
from ledger.persistence.database import Dialect
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from projections.decision_log import (
    DecisionFilter,
    DecisionLog,
    DecisionRecord,
    Row,
    StoredDecision,
)
from projections.pdp import Decision
from projections.retention import prune
from tests.conftest import T0, MutableClock

PEP = Actor(type="api_key", name="pep-1", role="pep")
_IDS = itertools.count(1)


def _request(agent: str = "agent-1", **context: Any) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": agent, "properties": {"instance_id": "i-1"}},
        "action": {"name": "invoices.read"},
        "resource": {"type": "api", "id": "https://erp.example.com/invoices/1"},
        "context": {"mandate": "mdt_1", **context},
    }


def _record(
    at: datetime = T0,
    *,
    permit: bool = True,
    mission: str | None = "msn_1",
    mandate: str | None = "mdt_1",
    agent: str = "agent-1",
    request: object = None,
) -> DecisionRecord:
    context: dict[str, Any] = {"evaluation_id": f"ev_test{next(_IDS):06d}"}
    if not permit:
        context["reason"] = "out_of_authority"
    if mission is not None:
        context["mission"] = {"id": mission, "version": 3}
    decision = Decision(decision=permit, context=context, mandate_id=mandate, position=42)
    return DecisionRecord(at, PEP, _request(agent) if request is None else request, decision)


@pytest.fixture
def store(ledger: Ledger) -> DecisionLog:
    return DecisionLog(ledger.database)


def _id(record: DecisionRecord) -> str:
    return str(record.decision.context["evaluation_id"])


def _write(store: DecisionLog, records: Sequence[DecisionRecord]) -> list[Row]:
    rows = [r.row() for r in records]
    store.write(rows)
    return rows


def _all(store: DecisionLog, where: DecisionFilter | None = None, limit: int = 1000) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page, cursor = store.page(where or DecisionFilter(), cursor=cursor, limit=limit)
        ids += [r.evaluation_id for r in page]
        if cursor is None:
            return ids


# ---------------------------------------------------------------------- the store


def test_a_record_reads_back_with_the_evidence_it_was_written_with(store: DecisionLog) -> None:
    record = _record()
    _write(store, [record])
    [stored], _ = store.page(DecisionFilter(), cursor=None, limit=10)
    assert stored == StoredDecision(
        evaluation_id=_id(record),
        evaluated_at=T0,
        principal={"type": "api_key", "name": "pep-1", "role": "pep"},
        subject=_request()["subject"],
        action=_request()["action"],
        resource=_request()["resource"],
        request_digest=raw_digest(_request()),
        mandate_id="mdt_1",
        mission_id="msn_1",
        mission_version=3,
        index_position=42,
        decision=True,
        reason=None,
        approval_id=None,
    )


def test_a_batch_of_any_size_is_stored_whole(store: DecisionLog) -> None:
    records = [_record() for _ in range(173)]  # 128 + 32 + 8 + 5 on SQLite
    _write(store, records)
    assert sorted(_all(store)) == sorted(_id(r) for r in records)


def test_a_batch_written_again_after_an_unknown_outcome_is_stored_once(
    store: DecisionLog,
) -> None:
    rows = _write(store, [_record(), _record()])
    store.write([*rows, _record().row()], repeated=True)
    assert store.count() == 3


def test_paging_neither_skips_nor_repeats_and_follows_the_decision_order(
    store: DecisionLog,
) -> None:
    records = [_record(T0 + timedelta(seconds=n % 3)) for n in range(7)]
    _write(store, records)
    expected = [_id(r) for r in sorted(records, key=lambda r: (r.evaluated_at, _id(r)))]
    assert _all(store, limit=2) == expected == _all(store, limit=100)


def test_filters_select_by_mission_mandate_agent_outcome_and_time(store: DecisionLog) -> None:
    a = _record(mission="msn_a", mandate="mdt_a", agent="agent-a")
    b = _record(T0 + timedelta(hours=1), permit=False, mission="msn_b", mandate=None, agent="x")
    c = _record(T0 + timedelta(hours=2), mission=None, mandate=None, agent="agent-a")
    _write(store, [a, b, c])
    assert _all(store, DecisionFilter(mission="msn_b")) == [_id(b)]
    assert _all(store, DecisionFilter(mandate="mdt_a")) == [_id(a)]
    assert _all(store, DecisionFilter(agent="agent-a")) == [_id(a), _id(c)]
    assert _all(store, DecisionFilter(decision=False)) == [_id(b)]
    assert _all(store, DecisionFilter(decision=True)) == [_id(a), _id(c)]
    window = DecisionFilter(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=2))
    assert _all(store, window) == [_id(b)]


def test_request_data_postgresql_text_cannot_hold_is_still_recorded(store: DecisionLog) -> None:
    weird = _request(agent="agent\x00-1", note="\x00")
    weird["resource"]["properties"] = {"big": 2**80}
    record = _record(request=weird)
    _write(store, [record])
    [stored], _ = store.page(DecisionFilter(), cursor=None, limit=10)
    assert stored.subject["id"] == "agent\x00-1"
    assert stored.resource["properties"]["big"] == 2**80
    assert stored.request_digest is not None


def test_a_batch_item_that_is_not_an_object_is_recorded_without_members(
    store: DecisionLog,
) -> None:
    _write(store, [_record(request="not an object", mission=None, mandate=None)])
    [stored], _ = store.page(DecisionFilter(), cursor=None, limit=10)
    assert (stored.subject, stored.action, stored.resource) == (None, None, None)
    assert stored.request_digest == raw_digest("not an object")


def test_a_subject_id_too_long_to_index_is_kept_in_the_subject(store: DecisionLog) -> None:
    long_agent = "é" * 3000  # 6,000 bytes: more than a btree entry may hold
    _write(store, [_record(agent=long_agent)])
    [stored], _ = store.page(DecisionFilter(), cursor=None, limit=10)
    assert stored.subject["id"] == long_agent
    assert _all(store, DecisionFilter(agent=long_agent)) == []


def test_a_request_that_cannot_be_serialised_leaves_a_record_without_it(
    store: DecisionLog,
) -> None:
    record = _record(request={"subject": {"id": object()}})  # no JSON value
    _write(store, [record])
    [stored], _ = store.page(DecisionFilter(), cursor=None, limit=10)
    assert (stored.evaluation_id, stored.subject, stored.request_digest) == (
        _id(record),
        None,
        None,
    )
    assert (stored.mission_id, stored.decision) == ("msn_1", True)


# ---------------------------------------------------------------------- retention


def test_only_postgresql_pays_for_the_mandate_and_agent_search_indexes(ledger: Ledger) -> None:
    if ledger.database.dialect is Dialect.SQLITE:
        sql = (
            "SELECT name FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'decision_log' AND sql IS NOT NULL ORDER BY name"
        )
        expected = ["decision_log_mission"]
    else:
        sql = (
            "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'decision_log' "
            "AND indexname <> 'decision_log_pkey' ORDER BY indexname"
        )
        expected = ["decision_log_agent", "decision_log_mandate", "decision_log_mission"]
    assert [row["name"] for row in ledger.database.fetchall(sql)] == expected


def test_retention_removes_records_older_than_the_retention_period_and_keeps_newer_ones(
    store: DecisionLog, ledger: Ledger
) -> None:
    old = _record(T0 - timedelta(days=3))
    new = _record(T0 - timedelta(hours=1))
    _write(store, [old, new])
    pruned = prune(
        ledger.database,
        T0,
        set_retention=timedelta(days=7),
        idempotency_retention=timedelta(hours=24),
        decision_log=store,
        decision_retention=timedelta(days=2),
    )
    assert pruned.decisions >= 1
    assert _all(store) == [_id(new)]


@pytest.fixture
def pg_settings(postgres_url: str) -> Settings:
    return Settings(database_url=postgres_url, db_pool_size=2)


@pytest.fixture
def pg_ledger(pg_settings: Settings, clock: MutableClock) -> Iterator[Ledger]:
    app = open_ledger(pg_settings, clock=clock)
    yield app
    app.close()


@pytest.fixture
def pg_store(pg_ledger: Ledger) -> DecisionLog:
    return DecisionLog(pg_ledger.database)


def _partitions(ledger: Ledger) -> list[str]:
    rows = ledger.database.fetchall(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'decision_log'::regclass ORDER BY 1"
    )
    return [str(r["name"]) for r in rows]


@pytest.mark.postgres
def test_records_go_into_a_partition_for_their_day_made_when_first_needed(
    pg_store: DecisionLog, pg_ledger: Ledger
) -> None:
    _write(pg_store, [_record(T0), _record(T0 + timedelta(days=40))])
    assert _partitions(pg_ledger) == ["decision_log_20261128", "decision_log_20270107"]


@pytest.mark.postgres
def test_retention_makes_the_partitions_of_the_next_days(
    pg_store: DecisionLog, pg_ledger: Ledger
) -> None:
    pg_store.prune(T0, timedelta(days=400))
    assert _partitions(pg_ledger) == [
        "decision_log_20261128",
        "decision_log_20261129",
        "decision_log_20261130",
        "decision_log_20261201",
    ]


@pytest.mark.postgres
def test_retention_drops_whole_days_older_than_the_retention_period(
    pg_store: DecisionLog, pg_ledger: Ledger
) -> None:
    old = _record(T0 - timedelta(days=401))
    edge = _record(T0 - timedelta(days=400))  # its day is not over before the cutoff
    _write(pg_store, [old, edge])
    assert pg_store.prune(T0, timedelta(days=400)) == 1
    assert "decision_log_20251023" not in _partitions(pg_ledger)
    assert _all(pg_store) == [_id(edge)]


@pytest.mark.postgres
def test_a_replica_skips_retention_while_another_one_applies_it(
    pg_store: DecisionLog, pg_ledger: Ledger, pg_settings: Settings
) -> None:
    _write(pg_store, [_record(T0 - timedelta(days=500))])
    with psycopg.connect(**pg_settings.postgres_params(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (0x4D4C_646C,))
        assert pg_store.prune(T0, timedelta(days=400)) == 0
        other.execute("SELECT pg_advisory_unlock(%s)", (0x4D4C_646C,))
    assert pg_store.prune(T0, timedelta(days=400)) == 1


@pytest.mark.postgres
def test_a_record_for_a_dropped_day_recreates_its_partition(
    pg_store: DecisionLog, pg_ledger: Ledger
) -> None:
    _write(pg_store, [_record(T0 - timedelta(days=500))])
    pg_store.prune(T0, timedelta(days=400))
    late = _record(T0 - timedelta(days=500))
    _write(pg_store, [late])
    assert _all(pg_store) == [_id(late)]


# ---------------------------------------------------------------------- the writer


class FlakyStore:
    """The real store, failing the next ``failures`` writes (a database that is down)."""

    def __init__(self, store: DecisionLog, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0
        self.repeated: list[bool] = []

    def write(self, rows: Sequence[Row], *, repeated: bool = False) -> None:
        self.attempts += 1
        self.repeated.append(repeated)
        if self.failures > 0:
            self.failures -= 1
            msg = "the database is down"
            raise psycopg.OperationalError(msg)
        self.store.write(rows, repeated=repeated)

    def write_separately(self, rows: Sequence[Row]) -> None:
        self.write(rows, repeated=True)


def _run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


@pytest.fixture
def writers() -> Iterator[list[DecisionWriter]]:
    started: list[DecisionWriter] = []
    yield started
    for writer in started:
        writer.stop(timeout=5)


def _writer(store: Any, writers: list[DecisionWriter], **options: Any) -> DecisionWriter:
    writer = DecisionWriter(store, **options)
    writer.attach(asyncio.get_running_loop())
    writer.start()
    writers.append(writer)
    return writer


def test_in_sync_mode_an_answer_waits_until_its_record_is_committed(
    store: DecisionLog, writers: list[DecisionWriter]
) -> None:
    async def scenario() -> int:
        writer = _writer(store, writers, mode="sync", flush_ms=10_000)
        waiter = writer.record([_record()])
        assert waiter is not None
        await waiter
        return store.count()

    assert _run(scenario()) == 1


def test_shutdown_writes_every_queued_record(
    store: DecisionLog, writers: list[DecisionWriter]
) -> None:
    records = [_record() for _ in range(50)]

    async def scenario() -> None:
        writer = _writer(store, writers, flush_ms=10_000)
        for record in records:
            assert writer.record([record]) is None  # answered at once
        await asyncio.to_thread(writer.stop)

    _run(scenario())
    assert sorted(_all(store)) == sorted(_id(r) for r in records)


def test_answers_wait_while_the_writer_is_behind_and_no_record_is_dropped(
    store: DecisionLog, writers: list[DecisionWriter]
) -> None:
    flaky = FlakyStore(store, failures=2)  # ~0.15 s of retries with a 1 ms window
    records = [_record() for _ in range(20)]

    async def scenario() -> list[bool]:
        writer = _writer(flaky, writers, flush_ms=1)
        held = []
        for record in records:
            waiter = writer.record([record])
            held.append(waiter is not None)
            if waiter is not None:
                await waiter
            else:
                await asyncio.sleep(0.005)
        await asyncio.to_thread(writer.stop)
        return held

    held = _run(scenario())
    assert any(held)
    assert flaky.repeated[:2] == [False, True]  # after a failure, written as a repeat
    assert sorted(_all(store)) == sorted(_id(r) for r in records)


def test_a_record_the_store_cannot_hold_is_stored_without_its_request_and_the_rest_whole(
    store: DecisionLog, writers: list[DecisionWriter]
) -> None:
    fine = _record()
    poison = _record()
    poison.decision.context["mission"]["version"] = 2**70  # fits no integer column

    async def scenario() -> None:
        writer = _writer(store, writers, flush_ms=10_000)
        writer.record([fine, poison])
        await asyncio.to_thread(writer.stop)

    _run(scenario())
    stored = {r.evaluation_id: r for r in store.page(DecisionFilter(), cursor=None, limit=10)[0]}
    assert stored[_id(fine)].subject == _request()["subject"]
    assert stored[_id(poison)].subject is None
    assert stored[_id(poison)].request_digest == raw_digest(_request())
    assert stored[_id(poison)].mission_id == "msn_1"


def test_a_full_queue_holds_answers_back(store: DecisionLog, writers: list[DecisionWriter]) -> None:
    async def scenario() -> tuple[bool, bool]:
        writer = _writer(store, writers, flush_ms=10_000, queue_size=2)
        first = writer.record([_record()])
        second = writer.record([_record()])
        assert second is not None
        await second  # released once the writer has caught up
        return first is None, writer.unwritten < 2

    assert _run(scenario()) == (True, True)


def test_with_the_log_off_nothing_is_recorded(
    store: DecisionLog, writers: list[DecisionWriter]
) -> None:
    async def scenario() -> None:
        writer = _writer(store, writers, mode="off")
        assert writer.record([_record()]) is None
        await asyncio.to_thread(writer.stop)

    _run(scenario())
    assert store.count() == 0


def test_a_denial_reads_back_as_false_with_its_reason(store: DecisionLog) -> None:
    """A decision is a boolean on both backends (SQLite keeps an integer)."""
    _write(store, [_record(permit=False)])
    [stored], _ = store.page(DecisionFilter(decision=False), cursor=None, limit=1)
    assert stored.decision is False
    assert stored.reason == "out_of_authority"
