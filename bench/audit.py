"""Evidence at scale: `audit verify` events/s, and evidence-bundle export and verify-bundle.

Subject: a Ledger on its own freshly migrated database holding ``--events`` events. A few
Missions are written through the Ledger (so the stored events are real ones); the rest
are copies of those stored events under new aggregate ids, bulk-inserted (PostgreSQL:
``COPY`` into ``ledger_events``, the chain trigger computing every link as in production;
SQLite: the links computed with ``ledger.persistence.chain.link_hash`` and inserted beside
the events, as the embedded recorder does). Then, in ``--rounds`` rounds:

* ``audit verify``: ``verify_chain`` over ``EventLog.chain_rows()`` (what the command
  runs), events/s of wall-clock time (target >= 50,000/s), and events per CPU second of
  the verifying process (the database server's work not counted): on a machine shared
  with other work the wall-clock figure moves with the load, the CPU figure much less.
  Baseline: the same scan of the same rows without hashing (``chain_rows`` alone), so the
  ratio is the price of the hashing;
* export: ``EvidenceExporter`` writing a time-range bundle of every event to a file
  (seconds, and MB/s of bundle written);
* verify-bundle: ``verify_bundle`` on that file (seconds, MB/s). Baseline: reading the tar
  and hashing every member with SHA-256 (what any digest check costs at the least).

    python -m bench.audit [--events 100000] [--rounds 3] [--backend both] [--json]

``--seconds`` is accepted (``python -m bench`` passes it to every benchmark) and unused:
this benchmark times fixed amounts of work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from api.evidence import EvidenceExporter, ExportScope
from bench._governance import (
    AGENT,
    APPROVER,
    OPERATOR,
    SUBJECT,
    authority_body,
    intent_body,
    open_bench_ledger,
    postgres_settings,
)
from bench._support import (
    PostgresServer,
    PostgresUnavailable,
    add_run_options,
    load_average,
    machine_description,
    median,
    table,
)
from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.evidence.verify import verify_bundle
from ledger.persistence.chain import GENESIS, link_hash, verify_chain
from ledger.persistence.database import Dialect
from ledger.settings import Settings
from ledger.signing.keyring import Keyring

TARGET_VERIFY_RATE = 50_000.0
DEFAULT_EVENTS = 100_000
TEMPLATE_MISSIONS = 8
COPY_BATCH = 20_000

Progress = Callable[[str], None]


def progress_to_stderr(message: str) -> None:
    print(f"[bench.audit] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Template:
    topic: str
    state: bytes


def write_templates(ledger: Ledger) -> list[list[Template]]:
    """Real events: each Mission's proposal submitted and approved, the Mission approved,
    suspended and resumed. Returns each aggregate's stored events, in version order."""
    now = ledger.clock.now()
    ids: list[str] = []
    for _ in range(TEMPLATE_MISSIONS):
        proposal = ledger.submit_proposal(
            actor=AGENT,
            client_id="bench-agent",
            instance_id="i-1",
            subject=SUBJECT,
            intent=intent_body(now),
            authorization_details=authority_body(),
        ).value
        mission = ledger.approve_proposal(actor=APPROVER, proposal_id=proposal.id).value
        for operation in (Operation.SUSPEND, Operation.RESUME):
            ledger.change_lifecycle(
                actor=OPERATOR, mission_id=mission.id, operation=operation, reason="bench"
            )
        ids += [proposal.id, mission.id]
    stored: dict[str, list[Template]] = {}
    for row in ledger.event_log.chain_rows():
        if row.originator_id in ids and row.topic is not None and row.state is not None:
            stored.setdefault(row.originator_id, []).append(Template(row.topic, row.state))
    return list(stored.values())


def copies(templates: list[list[Template]], count: int) -> Iterator[tuple[str, int, str, bytes]]:
    """``count`` events (originator_id, version, topic, state): whole copies of the template
    aggregates under new ids, the last one cut short when ``count`` says so."""
    made = 0
    serial = 0
    while made < count:
        aggregate = templates[serial % len(templates)]
        for version, template in enumerate(aggregate, start=1):
            if made == count:
                return
            yield (f"bench_{serial}", version, template.topic, template.state)
            made += 1
        serial += 1


def bulk_insert(ledger: Ledger, rows: Iterator[tuple[str, int, str, bytes]]) -> None:
    """Append ``rows`` to the log with their chain links, a batch per transaction."""
    database = ledger.database
    batch: list[tuple[str, int, str, bytes]] = []

    def flush() -> None:
        if not batch:
            return
        with database.transaction() as cur:
            if database.dialect is Dialect.POSTGRES:
                # The BEFORE INSERT trigger links every row, as for the library's inserts.
                cur.copy_in(
                    "ledger_events",
                    ("originator_id", "originator_version", "topic", "state"),
                    batch,
                )
            else:
                _sqlite_insert(cur, batch)
        batch.clear()

    for row in rows:
        batch.append(row)
        if len(batch) == COPY_BATCH:
            flush()
    flush()


def _sqlite_insert(cur: Any, rows: list[tuple[str, int, str, bytes]]) -> None:
    cur.execute(
        "SELECT notification_id, hash FROM stored_events_chain "
        "ORDER BY notification_id DESC LIMIT 1"
    )
    last = cur.fetchone()
    position, prev = (0, GENESIS) if last is None else (int(last["notification_id"]), last["hash"])
    events, links = [], []
    for originator_id, version, topic, state in rows:
        prev_position, position = position, position + 1
        prev = link_hash(prev, position, originator_id, version, topic, state)
        events.append((position, originator_id, version, topic, state))
        links.append((position, prev_position, prev))
    cur.executemany(
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s, %s)",
        events,
    )
    cur.executemany(
        "INSERT INTO stored_events_chain (notification_id, prev_id, hash) VALUES (%s, %s, %s)",
        links,
    )


@dataclass
class Store:
    backend: str
    server: str
    ledger: Ledger
    keyring: Keyring
    settings: Settings
    events: int
    state_bytes: int
    start: datetime
    end: datetime
    fill_seconds: float


@contextmanager
def store(
    backend: str, events: int, sqlite_dir: Path | None, progress: Progress
) -> Iterator[Store]:
    if backend == "postgres":
        server = PostgresServer.from_env()
        version = server.version()
        with server.database("audit") as url:
            yield from _filled(
                backend, f"PostgreSQL {version}", postgres_settings(url), events, progress
            )
        return
    with tempfile.TemporaryDirectory(prefix="ml-bench-audit-", dir=sqlite_dir) as tmp:
        settings = Settings(data_dir=Path(tmp) / "ledger")
        description = f"SQLite {sqlite3.sqlite_version} (embedded, files in {tmp})"
        yield from _filled(backend, description, settings, events, progress)


def _filled(
    backend: str, server: str, settings: Settings, events: int, progress: Progress
) -> Iterator[Store]:
    ledger = open_bench_ledger(settings)
    try:
        keyring = Keyring.open(settings, ledger.database)
        keyring.ensure(settings.signing_alg, ledger.clock.now())
        ledger.signer = keyring
        start = ledger.clock.now() - timedelta(seconds=1)
        progress(f"{backend}: writing {events:,} events")
        began = time.perf_counter()
        templates = write_templates(ledger)
        bulk_insert(ledger, copies(templates, max(0, events - ledger.head_position())))
        filled = time.perf_counter() - began
        state_bytes = sum(len(r.state or b"") for r in ledger.event_log.chain_rows())
        yield Store(
            backend=backend,
            server=server,
            ledger=ledger,
            keyring=keyring,
            settings=settings,
            events=ledger.head_position(),
            state_bytes=state_bytes,
            start=start,
            end=ledger.clock.now() + timedelta(hours=1),
            fill_seconds=filled,
        )
    finally:
        ledger.close()


# ---------------------------------------------------------------------- measuring


@dataclass
class Result:
    backend: str
    server: str
    events: int
    state_bytes: int
    fill_seconds: float
    verify: list[float] = field(default_factory=list)  # seconds per full verification
    verify_cpu: list[float] = field(default_factory=list)  # this process's CPU seconds
    scan: list[float] = field(default_factory=list)  # seconds per scan without hashing
    export: list[float] = field(default_factory=list)
    bundle_bytes: int = 0
    verify_bundle: list[float] = field(default_factory=list)
    digest_only: list[float] = field(default_factory=list)
    intact: bool = True

    def rate(self, seconds: list[float]) -> float:
        return self.events / median(seconds)

    def mb_per_s(self, seconds: list[float]) -> float:
        return self.bundle_bytes / 1e6 / median(seconds)

    @property
    def passed(self) -> bool:
        return self.rate(self.verify) >= TARGET_VERIFY_RATE


def _timed(action: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    value = action()
    return time.perf_counter() - began, value


def _cpu_timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and this process's CPU seconds (the database server's are not counted)."""
    cpu = time.process_time()
    wall, _ = _timed(action)
    return wall, time.process_time() - cpu


def measure(subject: Store, rounds: int, progress: Progress) -> Result:
    ledger = subject.ledger
    result = Result(
        backend=subject.backend,
        server=subject.server,
        events=subject.events,
        state_bytes=subject.state_bytes,
        fill_seconds=subject.fill_seconds,
    )
    exporter = EvidenceExporter(
        ledger,
        subject.keyring,
        issuer=subject.settings.public_issuer,
        alg=subject.settings.signing_alg,
    )
    scope = ExportScope(start=subject.start, end=subject.end)

    def verify() -> object:
        report = verify_chain(ledger.event_log.chain_rows())
        result.intact = result.intact and report.intact and report.checked == subject.events
        return report

    def scan() -> object:
        return sum(1 for _ in ledger.event_log.chain_rows())

    with tempfile.TemporaryDirectory(prefix="ml-bench-bundle-") as tmp:
        path = Path(tmp) / "bundle.tar"
        for number in range(1, rounds + 1):
            progress(f"{subject.backend}: round {number}/{rounds}")
            pair = [("verify", verify), ("scan", scan)]
            for name, action in pair if number % 2 else reversed(pair):
                wall, cpu = _cpu_timed(action)
                getattr(result, name).append(wall)
                if name == "verify":
                    result.verify_cpu.append(cpu)
            path.unlink(missing_ok=True)
            with path.open("wb") as handle:
                result.export.append(_timed(lambda: exporter.export(scope, handle))[0])
            result.bundle_bytes = path.stat().st_size
            pair = [
                ("verify_bundle", lambda: verify_bundle(path)),
                ("digest_only", lambda: _digests(path)),
            ]
            for name, action in pair if number % 2 else reversed(pair):
                seconds, value = _timed(action)
                getattr(result, name).append(seconds)
                if name == "verify_bundle":
                    result.intact = result.intact and bool(getattr(value, "ok", False))
    return result


def _digests(path: Path) -> dict[str, str]:
    """Baseline: every member of the tar read and hashed, nothing parsed."""
    digests = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            digests[member.name] = digest.hexdigest()
    return digests


# ---------------------------------------------------------------------- reporting


def render(result: Result) -> str:
    seconds = f"{median(result.export):.2f} s"
    rows = [
        [
            "audit verify",
            f"{result.rate(result.verify):,.0f} events/s",
            f"{median(result.verify):.2f} s",
            "",
        ],
        [
            "  per CPU second of the verifier",
            f"{result.rate(result.verify_cpu):,.0f} events/s",
            f"{median(result.verify_cpu):.2f} s",
            "",
        ],
        [
            "  scan, no hashing (baseline)",
            f"{result.rate(result.scan):,.0f} events/s",
            f"{median(result.scan):.2f} s",
            "",
        ],
        ["  verify / scan", f"{median(result.scan) / median(result.verify):.2f}", "", ""],
        [
            "export (time range, every event)",
            f"{result.mb_per_s(result.export):,.1f} MB/s",
            seconds,
            f"{result.rate(result.export):,.0f} events/s",
        ],
        [
            "verify-bundle",
            f"{result.mb_per_s(result.verify_bundle):,.1f} MB/s",
            f"{median(result.verify_bundle):.2f} s",
            f"{result.rate(result.verify_bundle):,.0f} events/s",
        ],
        [
            "  read + SHA-256 only (baseline)",
            f"{result.mb_per_s(result.digest_only):,.1f} MB/s",
            f"{median(result.digest_only):.2f} s",
            "",
        ],
        [
            "  verify-bundle / baseline",
            f"{median(result.digest_only) / median(result.verify_bundle):.2f}",
            "",
            "",
        ],
    ]
    verdict = "PASS" if result.passed else "BELOW TARGET"
    return "\n".join(
        [
            f"{result.server}: {result.events:,} events, {result.state_bytes / 1e6:,.1f} MB of "
            f"stored event state (written in {result.fill_seconds:.1f} s); bundle "
            f"{result.bundle_bytes / 1e6:,.1f} MB",
            table(["", "rate (median)", "time (median)", ""], rows),
            f"audit verify target >= {TARGET_VERIFY_RATE:,.0f} events/s: {verdict}"
            + ("" if result.intact else "  (CHAIN OR BUNDLE DID NOT VERIFY: figures void)"),
        ]
    )


def summary(result: Result) -> dict[str, Any]:
    return {
        "events": result.events,
        "state_megabytes": result.state_bytes / 1e6,
        "bundle_megabytes": result.bundle_bytes / 1e6,
        "verify_events_per_second": result.rate(result.verify),
        "verify_events_per_cpu_second": result.rate(result.verify_cpu),
        "scan_events_per_second": result.rate(result.scan),
        "export_seconds": median(result.export),
        "export_megabytes_per_second": result.mb_per_s(result.export),
        "verify_bundle_seconds": median(result.verify_bundle),
        "verify_bundle_megabytes_per_second": result.mb_per_s(result.verify_bundle),
        "digest_only_megabytes_per_second": result.mb_per_s(result.digest_only),
        "verified": result.intact,
        "passed": result.passed,
        "rounds": {
            "verify": result.verify,
            "verify_cpu": result.verify_cpu,
            "scan": result.scan,
            "export": result.export,
            "verify_bundle": result.verify_bundle,
            "digest_only": result.digest_only,
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit", description=__doc__.split("\n")[0]
    )
    add_run_options(parser, seconds=0.0, rounds_help="rounds of each measurement", backend="both")
    parser.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help=f"events in the store (default {DEFAULT_EVENTS:,}; the issue's figure is 1,000,000)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.events < TEMPLATE_MISSIONS * 5:
        parser.error(f"--rounds must be at least 1 and --events at least {TEMPLATE_MISSIONS * 5}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_description()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results: list[Result] = []
    for backend in backends:
        try:
            with store(backend, args.events, args.sqlite_dir, progress_to_stderr) as subject:
                results.append(measure(subject, args.rounds, progress_to_stderr))
        except PostgresUnavailable as error:
            print(f"bench.audit: {error}", file=sys.stderr)
            return 2
    machine["load_average_at_end"] = load_average()
    print(
        f"Mission Ledger: audit verify, evidence export and verify-bundle "
        f"({machine['date']}, {machine['cpus']} CPUs, Python {machine['python']}; "
        f"load average {machine['load_average_at_start']} at start, "
        f"{machine['load_average_at_end']} at end)"
    )
    for result in results:
        print()
        print(render(result))
    if args.json:
        document = {
            "benchmark": "audit",
            "machine": machine,
            "rounds": args.rounds,
            "backends": {r.backend: summary(r) for r in results},
        }
        print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
