"""Where a governance write spends its time (PostgreSQL), for ``bench.ledger --profile``.

Three views, all measured in this run:

1. Configurations: the raw baseline and the Ledger with one thing changed at a time. They
   all share one database (the raw application has its own table in it) and run in
   rotated order over several rounds; ratios are medians of same-round ratios, which
   cancels most of the machine's drift. Rows marked "exp." are experiments that size a
   cost: switching off the chain trigger or stubbing the read-version check (on this
   throwaway database), or skipping the read of the absent MandateTree on one Ledger
   instance (what a negative cache would save; the commit-time check stays). None of
   them is an option to run with.
2. A breakdown of each operation's wall time, by timing the library's seams
   (``repository.get``, ``select_events``, ``insert_events``, the mapper, the aggregate
   cache's deepcopy, pool checkouts) around the unchanged Ledger.
3. ``cProfile`` of the mix: the functions with the most own time, and the project's
   functions with the most cumulative time.
4. Server-side cost of the chain trigger and of the read-version check (``EXPLAIN
   ANALYZE`` in rolled-back transactions).
5. With SQLite selected as well, the breakdown of view 2 on the embedded store.
"""

from __future__ import annotations

import copy
import cProfile
import pstats
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eventsourcing.application as es_application
import psycopg

from bench._governance import (
    FIRST_GUESS_RATE,
    OPERATIONS,
    GovernanceDriver,
    OpTimes,
    open_bench_ledger,
    postgres_settings,
    sqlite_contestants,
)
from bench._support import (
    Note,
    PostgresServer,
    RawApplication,
    median,
    raw_postgres_env,
    run_raw_phase,
    run_raw_update_phase,
    table,
)
from ledger.application import Ledger
from ledger.persistence.store import persistence_env

Progress = Callable[[str], None]
REPOSITORY = str(Path(__file__).resolve().parents[1])
PROJECT_CODE = tuple(f"{REPOSITORY}/{package}/" for package in ("ledger", "projections", "api"))

CHECKOUT = "pool checkouts (PG: +pre-ping), in the above"
UPDATE_POOL = 1024  # aggregates the read-modify-write baseline cycles through
EXPECT_FUNCTION = "ledger_expect_version(text,bigint)"
STUB_EXPECT_CHECK = """
CREATE OR REPLACE FUNCTION ledger_expect_version(expected_id text, expected_version bigint)
RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$;
"""
# Once, so that rows inserted while the trigger is disabled satisfy NOT NULL.
TRIGGER_DEFAULTS = """
ALTER TABLE ledger_events ALTER COLUMN chain_prev SET DEFAULT 0,
                          ALTER COLUMN chain_hash SET DEFAULT '\\x'::bytea;
"""


@dataclass(frozen=True)
class Config:
    """One row of the configurations table. Each Ledger configuration has its own Ledger
    instance and its own Missions, all on the one shared database, so configurations
    differ only in what is named here."""

    name: str
    kind: str = "ledger"  # "ledger", "raw" or "raw-update"
    env: dict[str, str] = field(default_factory=dict)
    skip_tree_lookup: bool = False
    trigger: bool = True
    expect_check: bool = True


NO_PING = {"POSTGRES_PRE_PING": "n"}
NO_FASTFORWARD = {"AGGREGATE_CACHE_FASTFORWARD": "n"}
CONFIGS = (
    Config("raw save (the baseline)", "raw"),
    Config("raw get+event+save (Ledger cache settings)", "raw-update"),
    Config("Ledger as shipped"),
    Config("Ledger, POSTGRES_PRE_PING=n", env=NO_PING),
    Config("Ledger, AGGREGATE_CACHE_FASTFORWARD=n", env=NO_FASTFORWARD),
    Config("Ledger, absent-MandateTree read skipped (exp.)", skip_tree_lookup=True),
    Config("Ledger, chain trigger disabled (exp.)", trigger=False),
    Config("Ledger, read-version check stubbed (exp.)", expect_check=False),
    Config(
        "Ledger, no pre-ping, no fast-forward, no tree read",
        env={**NO_PING, **NO_FASTFORWARD},
        skip_tree_lookup=True,
    ),
    Config(
        "Ledger, all five changes above (floor)",
        env={**NO_PING, **NO_FASTFORWARD},
        skip_tree_lookup=True,
        trigger=False,
        expect_check=False,
    ),
)
BASELINE = CONFIGS[0].name
SHIPPED = "Ledger as shipped"


# ---------------------------------------------------------------------- configurations


class ExperimentDatabase:
    """The database all configurations share, and its switchable parts."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        row = self.conn.execute(
            "SELECT pg_get_functiondef(%s::regprocedure)", (EXPECT_FUNCTION,)
        ).fetchone()
        assert row is not None
        self.expect_function = str(row[0])
        self.conn.execute(TRIGGER_DEFAULTS.encode("utf-8"))
        self.trigger = True
        self.expect_check = True

    def configure(self, *, trigger: bool, expect_check: bool) -> None:
        if trigger != self.trigger:
            action = "ENABLE" if trigger else "DISABLE"
            self.conn.execute(
                f"ALTER TABLE ledger_events {action} TRIGGER ledger_events_chain".encode()
            )
            self.trigger = trigger
        if expect_check != self.expect_check:
            sql = self.expect_function if expect_check else STUB_EXPECT_CHECK
            self.conn.execute(sql.encode("utf-8"))
            self.expect_check = expect_check

    def close(self) -> None:
        self.configure(trigger=True, expect_check=True)
        self.conn.close()


@dataclass
class Contender:
    config: Config
    run: Callable[[float], float]  # seconds -> writes/s
    rates: list[float] = field(default_factory=list)
    app: RawApplication | Ledger | None = None
    driver: GovernanceDriver | None = None


def _open(stack: ExitStack, url: str, config: Config) -> Contender:
    settings = postgres_settings(url)
    if config.kind == "ledger":
        ledger = open_bench_ledger(settings, config.env)
        stack.callback(ledger.close)
        if config.skip_tree_lookup:
            # What a negative cache of absent MandateTrees would save. The commit-time
            # check that the tree is still absent (``expect``) stays in force.
            setattr(ledger, "get_tree", _no_tree)  # noqa: B010 - shadows the method
        driver = GovernanceDriver(ledger)
        expected = [driver.run_phase(0.5, expected_rate=FIRST_GUESS_RATE).rate]

        def run_ledger(seconds: float) -> float:
            rate = driver.run_phase(seconds, expected_rate=expected[0]).rate
            expected[0] = rate
            return rate

        return Contender(config, run_ledger, app=ledger, driver=driver)
    ledger_env = persistence_env(settings)
    env = {**raw_postgres_env(ledger_env, url), **config.env}
    if config.kind == "raw-update":
        env["AGGREGATE_CACHE_MAXSIZE"] = ledger_env["AGGREGATE_CACHE_MAXSIZE"]
        env["AGGREGATE_CACHE_FASTFORWARD"] = ledger_env["AGGREGATE_CACHE_FASTFORWARD"]
    raw = RawApplication(env=env)
    stack.callback(raw.close)
    if config.kind == "raw-update":
        notes = [Note(n=0) for _ in range(UPDATE_POOL)]
        for start in range(0, len(notes), 64):
            raw.save(*notes[start : start + 64])
        ids: list[uuid.UUID] = [note.id for note in notes]
        run_raw_update_phase(raw, ids, 0.5)
        return Contender(config, lambda s: run_raw_update_phase(raw, ids, s).rate, app=raw)
    run_raw_phase(raw, 0.5)
    return Contender(config, lambda s: run_raw_phase(raw, s).rate, app=raw)


def _no_tree(mission_id: str) -> None:  # noqa: ARG001 - the signature of Ledger.get_tree
    return None


def run_configurations(
    database: ExperimentDatabase,
    contenders: list[Contender],
    *,
    seconds: float,
    rounds: int,
    progress: Progress,
) -> None:
    """``rounds`` rounds; each runs every configuration once, in a rotated order."""
    for index in range(rounds):
        shift = index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            config = contender.config
            database.configure(trigger=config.trigger, expect_check=config.expect_check)
            contender.rates.append(contender.run(seconds))
        progress(f"profile: configurations round {index + 1}/{rounds} done")
    database.configure(trigger=True, expect_check=True)


def _paired(contender: Contender, reference: Contender) -> float:
    """Median over rounds of the rate relative to ``reference`` in the same round."""
    return median([a / b for a, b in zip(contender.rates, reference.rates, strict=True)])


def render_configurations(contenders: list[Contender]) -> tuple[str, list[dict[str, Any]]]:
    by_name = {c.config.name: c for c in contenders}
    raw, shipped = by_name[BASELINE], by_name[SHIPPED]
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for contender in contenders:
        rate = median(contender.rates)
        vs_raw, vs_shipped = _paired(contender, raw), _paired(contender, shipped)
        rows.append(
            [
                contender.config.name,
                " ".join(f"{r:,.0f}" for r in contender.rates),
                f"{rate:,.0f}",
                f"{1000 / rate:.3f}",
                f"{vs_raw:.3f}",
                f"{vs_shipped:.3f}",
            ]
        )
        data.append(
            {
                "configuration": contender.config.name,
                "rounds": [round(r, 1) for r in contender.rates],
                "median_per_s": round(rate, 1),
                "vs_raw": round(vs_raw, 4),
                "vs_shipped": round(vs_shipped, 4),
            }
        )
    headers = ["configuration", "rounds (writes/s)", "median", "ms/write", "vs raw", "vs shipped"]
    return table(headers, rows), data


# ---------------------------------------------------------------------- breakdown


class Seams:
    """Wall time spent inside the library's seams, attributed to the current operation."""

    def __init__(self) -> None:
        self.current = "-"
        self.times: dict[tuple[str, str], OpTimes] = defaultdict(OpTimes)

    def add(self, seam: str, seconds: float) -> None:
        self.times[(self.current, seam)].add(seconds)

    def timed(self, function: Callable[..., Any], seam: Callable[..., str]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(seam(*args, **kwargs), time.perf_counter() - start)

        return wrapper

    def timed_checkout(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            start = time.perf_counter()
            with function(*args, **kwargs) as conn:
                self.add(CHECKOUT, time.perf_counter() - start)
                yield conn

        return wrapper

    @contextmanager
    def installed(self, app: RawApplication | Ledger) -> Iterator[None]:
        """Wrap the seams of ``app`` (instance attributes) and the cache's deepcopy."""
        recorder: Any = app.recorder
        datastore = recorder.datastore
        mapper = app.mapper
        patches: list[tuple[Any, str, Any]] = [
            (app.repository, "get", self.timed(app.repository.get, _get_seam)),
            (recorder, "select_events", self.timed(recorder.select_events, _const("DB read"))),
            (recorder, "insert_events", self.timed(recorder.insert_events, _const("DB write"))),
            (mapper, "to_stored_event", self.timed(mapper.to_stored_event, _const("encode"))),
            (mapper, "to_domain_event", self.timed(mapper.to_domain_event, _const("decode"))),
            (datastore, "get_connection", self.timed_checkout(datastore.get_connection)),
            (es_application, "deepcopy", self.timed(copy.deepcopy, _const("deepcopy"))),
        ]
        originals = [(target, name, vars(target).get(name, _ABSENT)) for target, name, _ in patches]
        for target, name, wrapper in patches:
            setattr(target, name, wrapper)
        try:
            yield
        finally:
            for target, name, original in originals:
                if original is _ABSENT:
                    delattr(target, name)
                else:
                    setattr(target, name, original)


_ABSENT = object()


def _const(name: str) -> Callable[..., str]:
    def seam(*_args: Any, **_kwargs: Any) -> str:
        return name

    return seam


def _get_seam(aggregate_id: object, *_args: Any, **_kwargs: Any) -> str:
    text = str(aggregate_id)
    if text.startswith("mandates:"):
        return "get MandateTree (absent)"
    if text.startswith("msn_"):
        return "get Mission"
    if text.startswith("prp_"):
        return "get Proposal"
    return "get aggregate"


GET_SEAMS = ("get Proposal", "get Mission", "get MandateTree (absent)", "get aggregate")
COLUMNS = (
    "reads: repository.get",
    "  of which DB read",
    "  of which decode",
    "  of which deepcopy",
    "write: encode",
    "write: insert_events",
    CHECKOUT,
    "rest: validation, domain, app",
)


def breakdown(
    seams: Seams, totals: dict[str, OpTimes]
) -> tuple[list[list[str]], dict[str, dict[str, float]]]:
    """Rows of mean milliseconds per call, one column per operation."""
    per_op: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, total in totals.items():
        calls = total.count

        def ms(seam: str, op: str = name, n: int = calls) -> float:
            return 1000 * seams.times[(op, seam)].seconds / n

        gets = sum(ms(s) for s in GET_SEAMS)
        encode, insert = ms("encode"), ms("DB write")
        per_op[name] = {
            "total": total.mean_ms,
            "reads: repository.get": gets,
            "  of which DB read": ms("DB read"),
            "  of which decode": ms("decode"),
            "  of which deepcopy": ms("deepcopy"),
            "write: encode": encode,
            "write: insert_events": insert,
            CHECKOUT: ms(CHECKOUT),
            "rest: validation, domain, app": total.mean_ms - gets - encode - insert,
        }
        counts[name] = {
            seam: seams.times[(name, seam)].count // max(calls, 1)
            for seam in (*GET_SEAMS, CHECKOUT)
            if seams.times[(name, seam)].count
        }
        per_op[name]["pool checkouts per call"] = counts[name].get(CHECKOUT, 0)
        for seam in GET_SEAMS:
            if seams.times[(name, seam)].count:
                per_op[name][f"{seam} ms"] = ms(seam)
                per_op[name][f"{seam} per call"] = counts[name][seam]
    names = list(totals)
    rows = [["mean ms per call", *(f"{per_op[n]['total']:.3f}" for n in names)]]
    rows += [[column, *(f"{per_op[n][column]:.3f}" for n in names)] for column in COLUMNS]
    rows.append(
        ["pool checkouts per call", *(f"{per_op[n]['pool checkouts per call']:.0f}" for n in names)]
    )
    for seam in GET_SEAMS:
        if any(seams.times[(n, seam)].count for n in names):
            rows.append(
                [
                    f"{seam}: calls, ms",
                    *(
                        f"{counts[n].get(seam, 0)}, {per_op[n].get(f'{seam} ms', 0.0):.3f}"
                        for n in names
                    ),
                ]
            )
    return rows, per_op


def measure_breakdown(
    raw: RawApplication, driver: GovernanceDriver, seconds: float
) -> tuple[str, dict[str, Any]]:
    seams = Seams()
    with seams.installed(raw):
        seams.current = "raw save"
        raw_phase = run_raw_phase(raw, seconds)
    totals = {"raw save": OpTimes(count=raw_phase.saves, seconds=raw_phase.seconds)}

    def observe(name: str) -> None:
        seams.current = name

    driver.observer = observe
    try:
        driver.ensure_pending(seconds, expected_rate=FIRST_GUESS_RATE * 2)
        with seams.installed(driver.ledger):
            phase_ops = driver.run_phase(seconds, expected_rate=FIRST_GUESS_RATE * 2).ops
    finally:
        driver.observer = None
    totals.update({name: phase_ops[name] for name in OPERATIONS})
    rows, data = breakdown(seams, totals)
    return table(["component", *totals], rows), data


# ---------------------------------------------------------------------- cProfile


def measure_cprofile(driver: GovernanceDriver, seconds: float) -> tuple[str, dict[str, Any]]:
    driver.ensure_pending(seconds, expected_rate=FIRST_GUESS_RATE * 2)
    profiler = cProfile.Profile()
    profiler.enable()
    phase = driver.run_phase(seconds, expected_rate=FIRST_GUESS_RATE * 2)
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values())
    writes = phase.writes

    def label(key: tuple[str, int, str]) -> str:
        filename, line, func = key
        for marker in ("site-packages/", f"{REPOSITORY}/", "lib/python3.11/"):
            if marker in filename:
                filename = filename.split(marker, 1)[1]
                break
        return f"{filename}:{line}({func})" if line else func

    own = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:15]
    own_rows = [
        [label(k), f"{v[1]:,}", f"{1e6 * v[2] / writes:.1f}", f"{100 * v[2] / total:.1f}"]
        for k, v in own
    ]
    project = sorted(
        ((k, v) for k, v in entries.items() if k[0].startswith(PROJECT_CODE)),
        key=lambda item: item[1][3],
        reverse=True,
    )[:20]
    project_rows = [
        [label(k), f"{v[1]:,}", f"{1e6 * v[3] / writes:.1f}", f"{100 * v[3] / total:.1f}"]
        for k, v in project
    ]
    text = "\n".join(
        [
            f"cProfile over {writes:,} governance writes ({seconds:g} s; profiling slows it "
            f"to {phase.rate:,.0f} writes/s, so read proportions, not absolute times)",
            "",
            "most own time:",
            table(["function", "calls", "own us/write", "% of all"], own_rows),
            "",
            "project code, most cumulative time:",
            table(["function", "calls", "cum us/write", "% of all"], project_rows),
        ]
    )
    data = {
        "writes": writes,
        "own": [{"function": r[0], "calls": r[1], "us_per_write": r[2]} for r in own_rows],
        "project_cumulative": [
            {"function": r[0], "calls": r[1], "us_per_write": r[2]} for r in project_rows
        ],
    }
    return text, data


# ---------------------------------------------------------------------- server side

SERVER_SAMPLES = 200


def measure_server_side(url: str) -> tuple[str, dict[str, float]]:
    """Server-side execution time of one event's INSERT (and of its chain trigger) and of
    one read-version check, by ``EXPLAIN ANALYZE`` in rolled-back transactions that take
    the same table lock as the library. The row copies the newest stored event."""
    inserts: list[float] = []
    triggers: list[float] = []
    checks: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT topic, state FROM ledger_events ORDER BY notification_id DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        topic, state = row
        for index in range(SERVER_SAMPLES):
            with conn.transaction(force_rollback=True):
                conn.execute("LOCK TABLE ledger_events IN EXCLUSIVE MODE")
                plan = _plan(
                    conn,
                    "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO ledger_events "
                    "(originator_id, originator_version, topic, state) VALUES (%s, 1, %s, %s)",
                    (f"msn_bench_probe_{index}", topic, state),
                )
                inserts.append(float(plan["Execution Time"]))
                triggers.append(sum(float(t["Time"]) for t in plan.get("Triggers", [])))
                plan = _plan(
                    conn,
                    "EXPLAIN (ANALYZE, FORMAT JSON) SELECT ledger_expect_version(%s, 0)",
                    (f"mandates:msn_bench_probe_{index}",),
                )
                checks.append(float(plan["Execution Time"]))
    data = {
        "insert_ms": median(inserts),
        "chain_trigger_ms": median(triggers),
        "read_version_check_ms": median(checks),
    }
    text = table(
        ["server-side, one event (median of 200)", "ms"],
        [
            ["INSERT of one event, trigger included", f"{data['insert_ms']:.3f}"],
            ["  of which the chain trigger", f"{data['chain_trigger_ms']:.3f}"],
            ["read-version check (ledger_expect_version)", f"{data['read_version_check_ms']:.3f}"],
        ],
    )
    return text, data


def _plan(conn: psycopg.Connection[Any], sql: str, params: tuple[object, ...]) -> dict[str, Any]:
    row = conn.execute(sql.encode("utf-8"), params).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]
    return plan


# ---------------------------------------------------------------------- entry point
def run(
    server: PostgresServer,
    *,
    seconds: float,
    rounds: int,
    progress: Progress,
    sqlite_dir: Path | None = None,
    include_sqlite: bool = False,
) -> dict[str, Any]:
    """Print the three views; return them for the JSON summary."""
    with ExitStack() as stack:
        url = stack.enter_context(server.database("profile"))
        progress(f"profile: opening {len(CONFIGS)} configurations on one database")
        contenders = [_open(stack, url, config) for config in CONFIGS]
        database = ExperimentDatabase(url)
        stack.callback(database.close)
        run_configurations(database, contenders, seconds=seconds, rounds=rounds, progress=progress)
        configurations_text, configurations_data = render_configurations(contenders)
        print(
            f"== Profile 1: configurations on one shared database ({rounds} rounds x "
            f"{seconds:g} s, rotated order; ratios are medians of same-round ratios)"
        )
        print(configurations_text)

        raw = next(c.app for c in contenders if c.config.name == BASELINE)
        shipped = next(c.driver for c in contenders if c.config.name == SHIPPED)
        assert isinstance(raw, RawApplication)
        assert shipped is not None
        long = 2 * seconds
        progress("profile: timing the seams")
        breakdown_text, breakdown_data = measure_breakdown(raw, shipped, long)
        print()
        print(f"== Profile 2: where one call's wall time goes ({long:g} s each, as shipped)")
        print(breakdown_text)

        progress("profile: cProfile")
        cprofile_text, cprofile_data = measure_cprofile(shipped, long)
        print()
        print("== Profile 3: " + cprofile_text)

        progress("profile: server-side costs")
        server_text, server_data = measure_server_side(url)
        print()
        print("== Profile 4: server-side cost of the chain trigger and the read-version check")
        print(server_text)
    result: dict[str, Any] = {
        "configurations": configurations_data,
        "breakdown_ms": breakdown_data,
        "cprofile": cprofile_data,
        "server_side_ms": server_data,
    }
    if include_sqlite:
        progress("profile: timing the seams on SQLite")
        with sqlite_contestants(sqlite_dir) as contestants:
            driver = GovernanceDriver(contestants.ledger)
            driver.run_phase(1.0, expected_rate=FIRST_GUESS_RATE)
            run_raw_phase(contestants.raw, 1.0)
            sqlite_text, sqlite_data = measure_breakdown(contestants.raw, driver, long)
        print()
        engine = contestants.server.split(" (")[0]
        print(f"== Profile 5: the breakdown of profile 2 on {engine} (embedded)")
        print(sqlite_text)
        result["sqlite_breakdown_ms"] = sqlite_data
    return result
