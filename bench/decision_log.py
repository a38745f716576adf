"""Decision log write throughput on PostgreSQL (records/s), against a floor measured in the
same run.

Run: ``python -m bench.decision_log`` (``--help`` for options).

On a fresh, migrated database, in interleaved rounds of ``--seconds`` each:

* **floor**: ``COPY`` of ready rows, in batches of ``--batch``, into a plain table with the
  decision log's columns and no index, no partition (what this machine's PostgreSQL takes
  at best, one transaction per batch, one thread);
* **store**: the same batches through ``DecisionLog.write`` into ``decision_log`` (daily
  partition, primary key and three indexes): the store's own cost;
* **writer, async**: records handed to a ``DecisionWriter`` (the service's writer, default
  settings: 100 ms flush window, batches up to 5,000) as fast as one asyncio producer can,
  the producer waiting whenever the writer holds it back; the writer turns each record into
  a row (JCS digest of the request, JSON of its members) and commits. Records/s counts
  from the first record handed over until every one is committed;
* **writer, sync**: ``--concurrency`` answers at a time each waiting for its record's
  commit (``DECISION_LOG_MODE=sync``).

Also printed: the writer-side cost of turning one record into a row (µs, one thread), and
the ratio of each subject to the floor. Records carry a request of the size the PEP
sends (a ~700-byte Mandate token, a proof, subject, action and resource).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.workers.decision_writer import DecisionWriter
from bench._support import PostgresServer
from ledger.clock import SystemClock
from ledger.domain.actors import Actor
from ledger.persistence.database import Database
from ledger.persistence.migrations import migrate
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from projections.decision_log import COLUMNS, DecisionLog, DecisionRecord, Row
from projections.pdp import Decision

PEP = Actor(type="api_key", name="bench-pep", role="pep")
FLOOR = "decision_log_floor"
_IDS = itertools.count(1)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _request(n: int) -> dict[str, Any]:
    return {
        "subject": {"type": "agent", "id": "bench-agent", "properties": {"instance_id": f"i-{n}"}},
        "action": {"name": "invoices.pay", "properties": {"amount": "250.00", "currency": "USD"}},
        "resource": {"type": "api", "id": "https://erp.example.com/invoices/42"},
        "context": {"mandate": "eyJ" + "x" * 700, "proof": {"jkt": "y" * 43}},
    }


def make_record(now: datetime) -> DecisionRecord:
    n = next(_IDS)
    decision = Decision(
        decision=True,
        context={
            "evaluation_id": f"ev_bench{n:x}",
            "mission": {"id": "msn_bench", "version": 1},
            "valid_until": "2099-01-01T00:00:00Z",
        },
        mandate_id="mdt_bench",
        position=n,
    )
    return DecisionRecord(now, PEP, _request(n % 100), decision)


def _fresh(row: Row) -> Row:
    """The row under a new evaluation id (the primary key)."""
    return (row[0], f"ev_bench{next(_IDS):x}", *row[2:])


@dataclass
class Phase:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def copy_phase(
    database: Database, template: list[Row], batch: int, seconds: float, table: str | None
) -> Phase:
    """Batches of fresh rows, one transaction each: ``COPY`` into ``table``, or through
    ``DecisionLog.write`` when ``table`` is None."""
    store = DecisionLog(database)
    written = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        rows = [_fresh(row) for row in template[:batch]]
        if table is None:
            store.write(rows)
        else:
            with database.transaction() as cur:
                cur.copy_in(table, COLUMNS, rows)
        written += len(rows)
    return Phase(written, time.perf_counter() - started)


def writer_async_phase(store: DecisionLog, seconds: float) -> Phase:
    async def run() -> Phase:
        writer = DecisionWriter(store, mode="async")
        writer.attach(asyncio.get_running_loop())
        writer.start()
        handed = 0
        started = time.perf_counter()
        deadline = started + seconds
        now = SystemClock().now()
        while time.perf_counter() < deadline:
            for _ in range(100):
                waiter = writer.record([make_record(now)])
                handed += 1
                if waiter is not None:
                    await waiter
            await asyncio.sleep(0)  # let the writer's callbacks run
        await asyncio.to_thread(writer.stop)
        assert writer.written == handed, (writer.written, handed)
        return Phase(handed, time.perf_counter() - started)

    return asyncio.run(run())


def writer_sync_phase(store: DecisionLog, seconds: float, concurrency: int) -> Phase:
    async def run() -> Phase:
        writer = DecisionWriter(store, mode="sync")
        writer.attach(asyncio.get_running_loop())
        writer.start()
        started = time.perf_counter()
        deadline = started + seconds
        now = SystemClock().now()
        counts = [0] * concurrency

        async def answers(slot: int) -> None:
            while time.perf_counter() < deadline:
                waiter = writer.record([make_record(now)])
                assert waiter is not None
                await waiter
                counts[slot] += 1

        await asyncio.gather(*(answers(slot) for slot in range(concurrency)))
        elapsed = time.perf_counter() - started
        await asyncio.to_thread(writer.stop)
        return Phase(sum(counts), elapsed)

    return asyncio.run(run())


def row_cost_us(count: int = 20_000) -> float:
    now = SystemClock().now()
    records = [make_record(now) for _ in range(count)]
    started = time.perf_counter()
    for record in records:
        record.row()
    return (time.perf_counter() - started) / count * 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.decision_log", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1_000, help="rows per COPY (floor, store)")
    parser.add_argument("--concurrency", type=int, default=16, help="answers waiting (sync)")
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = PostgresServer.from_env()
    progress(f"PostgreSQL {server.version()} at {server.admin_url}")
    with server.database("decisionlog") as url:
        settings = Settings(database_url=url)
        migrate(settings)
        ledger = open_ledger(settings)
        try:
            database = ledger.database
            database.execute(f"CREATE TABLE {FLOOR} (LIKE decision_log)")
            now = SystemClock().now()
            template = [make_record(now).row() for _ in range(args.batch)]
            store = DecisionLog(database)
            store.write([_fresh(row) for row in template[:10]])  # today's partition exists
            subjects: dict[str, Callable[[], Phase]] = {
                "floor": lambda: copy_phase(database, template, args.batch, args.seconds, FLOOR),
                "store": lambda: copy_phase(database, template, args.batch, args.seconds, None),
                "writer_async": lambda: writer_async_phase(store, args.seconds),
                "writer_sync": lambda: writer_sync_phase(store, args.seconds, args.concurrency),
            }
            rates: dict[str, list[float]] = {name: [] for name in subjects}
            order = list(subjects)
            for round_no in range(args.rounds):
                progress(f"  round {round_no + 1}/{args.rounds}")
                for name in order if round_no % 2 == 0 else reversed(order):
                    rates[name].append(subjects[name]().rate)
            cost = row_cost_us()
            logged = store.count()
        finally:
            ledger.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    floor = medians["floor"]
    print(
        f"\nDecision log writes on PostgreSQL ({args.rounds} rounds x {args.seconds:g} s, "
        f"COPY batches of {args.batch}; {logged:,} records written):\n"
    )
    print(f"{'subject':<34} {'records/s':>10} {'vs floor':>9}   per round")
    labels = {
        "floor": "floor (COPY, no index, no partition)",
        "store": "store (DecisionLog.write)",
        "writer_async": "writer, async (default)",
        "writer_sync": f"writer, sync ({args.concurrency} waiting)",
    }
    for name, label in labels.items():
        per_round = ", ".join(f"{value:,.0f}" for value in rates[name])
        print(f"{label:<34} {medians[name]:>10,.0f} {medians[name] / floor:>9.2f}   {per_round}")
    print(f"\nturning a record into a row (JCS digest, JSON): {cost:.1f} us, one thread")
    if args.json:
        print(json.dumps({"medians": medians, "rounds": rates, "row_cost_us": cost}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
