"""What one operation costs the event loop: ``python -m bench.loop_costs``.

The app is called as ASGI in this process (no sockets, no client), one request at a time,
after its lifespan has started on a seeded embedded store (``bench.evaluate.seed``). For
each operation the loop thread's CPU (``time.thread_time``), this process's CPU (the loop
plus its threads: the Meter writer's, the log follower's, ...; not child processes) and
the wall time are divided by the operations made. Rounds alternate the operations; the
table shows each one's median over rounds, its loop CPU as a ratio to a plain decision in
the same run, and the median over rounds of its difference from the plain decision of the
same round (loop and process CPU: the steadiest figures on a shared machine).

Operations: a plain decision (``context.proof.jkt``); a decision with a DPoP proof; a
metered permit (drawn from this replica's budget lease); the usage report of one metered
permit, alone and in batches of 32 (per report); and a plain decision with the decision
log off (a second app on the same store, running alongside: the log's cost on the loop is
the difference).

It explains the ratios ``bench.evaluate`` measures over HTTP (where to shave), it does not
replace them: under load each operation costs more (wake-ups, cache misses, the writer
processes' CPU) and those ratios decide the targets. Not in ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from api.app import create_app
from bench._support import table
from bench.evaluate import Seeded, dpop_bodies, evaluation_body, metered_body, progress, seed
from ledger.settings import Settings

Call = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]

#: The operations that are one evaluation each (compared with the plain decision of their
#: round); the usage report rows are per report.
PER_DECISION = ("decision", "decision, log off", "decision, DPoP proof", "metered permit (lease)")


def _scope(path: str, key: str, length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


def caller(app: Any, key: str) -> Call:
    """``POST path`` with ``body`` and the PEP's key, through the whole app."""

    async def call(path: str, body: bytes) -> tuple[int, bytes]:
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(_scope(path, key, len(body)), receive, send)
        # A served request arrives by an I/O event: the loop runs a turn between requests
        # (its timers and other callbacks, such as the decision log's sends, run then).
        await asyncio.sleep(0)
        return status, b"".join(chunks)

    return call


@asynccontextmanager
async def running(settings: Settings) -> Any:
    app = create_app(settings)
    # One request at a time, as a server with one connection: each is alone (a DPoP
    # proof's signature is then checked on the loop, as ``PROOF_VERIFIER=auto`` does).
    app.state.requests_in_progress.attach([None])
    async with app.router.lifespan_context(app):
        yield app


def _thread_clocks() -> dict[str, float]:
    """CPU seconds of each of this process's threads but the loop's, by thread name."""
    clocks: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.ident is None:
            continue
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            spent = time.clock_gettime(clock)
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile
        name = thread.name.split(" (")[0]
        clocks[name] = clocks.get(name, 0.0) + spent
    return clocks


class Meter:
    """Loop CPU, process CPU and wall time of a block, per operation; the other threads'
    CPU by thread name."""

    def __init__(self, profile: str | None = None) -> None:
        self.samples: dict[str, list[tuple[float, float, float]]] = {}
        self.threads: dict[str, list[dict[str, float]]] = {}
        #: The operation to profile (cProfile, in each round; the rounds' figures then
        #: include the profiler's cost, so compare profiles, not the table).
        self.profile = profile
        self.profiler = cProfile.Profile()

    async def measure(self, name: str, count: int, block: Callable[[], Awaitable[None]]) -> None:
        threads = _thread_clocks()
        wall, process, loop = time.perf_counter(), time.process_time(), time.thread_time()
        if name == self.profile:
            self.profiler.enable()
            await block()
            self.profiler.disable()
        else:
            await block()
        per = 1e6 / count
        after = _thread_clocks()
        self.threads.setdefault(name, []).append(
            {t: (after[t] - threads[t]) * per for t in after if t in threads}
        )
        self.samples.setdefault(name, []).append(
            (
                (time.thread_time() - loop) * per,
                (time.process_time() - process) * per,
                (time.perf_counter() - wall) * per,
            )
        )

    def medians(self) -> dict[str, dict[str, float]]:
        """Each operation's median over rounds; and, steadier on a shared machine, the median
        of its difference from a plain decision measured in the same round (loop CPU and
        process CPU)."""
        base = self.samples.get("decision", [])
        out: dict[str, dict[str, float]] = {}
        for name, samples in self.samples.items():
            out[name] = {
                what: statistics.median(s[i] for s in samples)
                for i, what in enumerate(("loop_us", "process_us", "wall_us"))
            }
            paired = list(zip(samples, base, strict=False))
            if paired and name in PER_DECISION:
                out[name]["loop_over_us"] = statistics.median(s[0] - b[0] for s, b in paired)
                out[name]["process_over_us"] = statistics.median(s[1] - b[1] for s, b in paired)
        return out

    def thread_medians(self, least: float = 1.0) -> dict[str, dict[str, float]]:
        """Per operation, the other threads that spent at least ``least`` µs an operation."""
        out: dict[str, dict[str, float]] = {}
        for name, rounds in self.threads.items():
            names = {t for spent in rounds for t in spent}
            medians = {t: statistics.median(r.get(t, 0.0) for r in rounds) for t in names}
            out[name] = {t: v for t, v in sorted(medians.items()) if v >= least}
        return out


def _bodies(items: Iterator[dict[str, Any]], count: int) -> list[bytes]:
    return [json.dumps(next(items)).encode() for _ in range(count)]


def _cycle(held: list[tuple[str, str]], make: Callable[[str, str], dict[str, Any]]) -> Any:
    while True:
        for token, instance in held:
            yield make(token, instance)


async def _expect(call: Call, path: str, body: bytes) -> bytes:
    """The answer to ``POST path``: a 200, and for an evaluation a permit (else it raises)."""
    status, answer = await call(path, body)
    if status != 200:
        msg = f"{path} answered {status}: {answer[:300]!r}"
        raise RuntimeError(msg)
    if path.startswith("/access") and orjson.loads(answer).get("decision") is not True:
        msg = f"not a permit: {answer[:300]!r}"
        raise RuntimeError(msg)
    return answer


async def measure(
    app: Any, log_off: Any, seeded: Seeded, meter: Meter, *, count: int, rounds: int
) -> None:
    call = caller(app, seeded.pep_key)
    call_log_off = caller(log_off, seeded.pep_key)
    plain = _bodies(_cycle(seeded.mandates, evaluation_body), count)
    metered = _bodies(_cycle(seeded.metered, metered_body), count)
    for body in plain[:50] + metered[:50]:  # warm: tokens verified, leases taken
        await _expect(call, "/access/v1/evaluation", body)
    for body in plain[:50]:
        await _expect(call_log_off, "/access/v1/evaluation", body)
    for round_no in range(rounds):
        progress(f"  round {round_no + 1}/{rounds}")
        dpop = [json.dumps(b).encode() for b in dpop_bodies(seeded, count)]
        ids: list[str] = []

        async def plain_block() -> None:
            for body in plain:
                await _expect(call, "/access/v1/evaluation", body)

        async def log_off_block() -> None:
            for body in plain:
                await _expect(call_log_off, "/access/v1/evaluation", body)

        async def dpop_block() -> None:
            for body in dpop:  # noqa: B023 (each round's own proofs)
                await _expect(call, "/access/v1/evaluation", body)

        async def metered_block() -> None:
            for body in metered:
                answer = await _expect(call, "/access/v1/evaluation", body)
                ids.append(orjson.loads(answer)["context"]["evaluation_id"])  # noqa: B023

        async def one_report_block() -> None:
            for evaluation_id in ids[: count // 2]:  # noqa: B023
                report = {"evaluation_id": evaluation_id, "outcome": "executed"}
                await _expect(call, "/v1/usage", orjson.dumps(report))

        async def batch_block() -> None:
            rest = ids[count // 2 :]  # noqa: B023
            for start in range(0, len(rest), 32):
                reports = [
                    {"evaluation_id": e, "outcome": "executed"} for e in rest[start : start + 32]
                ]
                await _expect(call, "/v1/usage", orjson.dumps({"reports": reports}))

        await meter.measure("decision", count, plain_block)
        await meter.measure("decision, log off", count, log_off_block)
        await meter.measure("decision, DPoP proof", count, dpop_block)
        await meter.measure("metered permit (lease)", count, metered_block)
        await meter.measure("usage report, alone", count // 2, one_report_block)
        await meter.measure("usage report, in 32s", count - count // 2, batch_block)


def render(medians: dict[str, dict[str, float]]) -> str:
    base = medians["decision"]["loop_us"]
    rows = [
        [
            name,
            f"{m['loop_us']:.1f}",
            f"{m['loop_us'] / base:.2f}",
            f"{m['loop_over_us']:+.1f}" if "loop_over_us" in m else "",
            f"{m['process_us']:.1f}",
            f"{m['process_over_us']:+.1f}" if "process_over_us" in m else "",
            f"{m['wall_us']:.1f}",
        ]
        for name, m in medians.items()
    ]
    headers = [
        "operation",
        "loop CPU µs",
        "÷ decision",
        "loop over decision",
        "process CPU µs",
        "process over decision",
        "wall µs",
    ]
    return table(headers, rows)


async def run(
    args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    settings = Settings(data_dir=tmp / "store")
    progress("seeding 20 Missions x 20 Mandates and 5 metered Missions")
    seeded = seed(settings, 20, 20, tokens=True, metered_missions=5)
    meter = Meter(args.profile)
    progress("measuring: one app with the decision log on (the default), one with it off")
    async with (
        running(settings) as app,
        running(settings.model_copy(update={"decision_log_mode": "off"})) as log_off,
    ):
        await measure(app, log_off, seeded, meter, count=args.count, rounds=args.rounds)
    if args.profile:
        stats = pstats.Stats(meter.profiler, stream=sys.stderr)
        stats.sort_stats(args.sort).print_stats(args.lines)
    return meter.medians(), meter.thread_medians()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loop_costs", description=__doc__)
    parser.add_argument("--count", type=int, default=2000, help="operations per kind and round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true", help="also print a JSON summary")
    parser.add_argument("--profile", metavar="OPERATION", help="cProfile this operation's blocks")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (with --profile)")
    parser.add_argument("--lines", type=int, default=40, help="pstats lines (with --profile)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ml-bench-loop-") as tmp:
        medians, threads = asyncio.run(run(args, Path(tmp)))
    print(render(medians))
    print()
    print("Other threads of this process (CPU µs an operation, >= 1 µs):")
    for name, spent in threads.items():
        print(f"  {name}: " + (", ".join(f"{t} {v:.1f}" for t, v in spent.items()) or "-"))
    if args.json:
        print(json.dumps({"loop": medians, "threads": threads}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
