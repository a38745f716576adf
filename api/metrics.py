"""Prometheus metrics, read from the live objects of this process at scrape time.

Nothing on a hot path updates a Prometheus object: the decision point, the SSE hub, the
push worker and the scheduler keep plain counters, and ``ServiceCollector`` turns them
into metric families when ``GET /metrics`` is scraped. Counters are per process (each
replica is scraped on its own); the log positions are the shared truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from api.services import Services
    from api.workers.scheduler import Scheduler
    from api.workers.sse_hub import Durations

PREFIX = "mission_ledger"


class ServiceCollector(Collector):
    def __init__(self, services: Services, scheduler: Scheduler | None) -> None:
        self._services = services
        self._scheduler = scheduler
        self._process = ProcessCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        services = self._services
        head = services.follower.head()
        position = services.follower.position
        yield _gauge("log_head_position", "Position of the newest event in the ledger.", head)
        yield _gauge(
            "read_model_position", "Every read model of this process includes this.", position
        )
        yield _gauge(
            "read_model_lag_events", "Events not yet applied here.", max(0, head - position)
        )
        yield _gauge(
            "read_model_staleness_seconds",
            "Seconds since this replica last confirmed its index holds everything in the store "
            "(decisions deny stale_state above mission_max_stale_seconds).",
            services.follower.staleness(),
        )
        yield _gauge(
            "follower_healthy",
            "1 while the log follower applies events.",
            services.follower.healthy,
        )
        batches = CounterMetricFamily(
            f"{PREFIX}_read_model_batches",
            "Batches of the log applied by each read model of this process.",
            labels=["read_model"],
        )
        applying = CounterMetricFamily(
            f"{PREFIX}_read_model_apply_seconds",
            "Time each read model spent applying batches (durable: lock held to commit).",
            labels=["read_model"],
        )
        waiting = CounterMetricFamily(
            f"{PREFIX}_read_model_lock_wait_seconds",
            "Time each durable read model waited while another replica applied a batch.",
            labels=["read_model"],
        )
        for name, timing in sorted(services.follower.timings.items()):
            batches.add_metric([name], timing.batches)
            applying.add_metric([name], timing.apply_seconds)
            waiting.add_metric([name], timing.lock_wait_seconds)
        yield from (batches, applying, waiting)
        yield from self._decisions()
        yield from self._metering()
        yield from self._signals()
        yield from self._workers()
        yield from self._process.collect()

    def _decisions(self) -> Iterator[Metric]:
        services = self._services
        stats = services.index.stats()
        yield _gauge("index_missions", "Missions in the evaluation index.", stats["missions"])
        yield _gauge("index_mandates", "Mandates in the evaluation index.", stats["mandates"])
        yield _gauge(
            "index_authority_sets",
            "Distinct compiled Authority Sets.",
            stats["distinct_authority_sets"],
        )
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions", "Access decisions made by this process.", labels=["decision"]
        )
        decisions.add_metric(["permit"], services.pdp.permits)
        decisions.add_metric(["deny"], sum(services.pdp.denials.values()))
        yield decisions
        denials = CounterMetricFamily(
            f"{PREFIX}_denials", "Denials by context.reason.", labels=["reason"]
        )
        for reason, count in sorted(services.pdp.denials.items()):
            denials.add_metric([reason], count)
        yield denials
        writer = services.decisions
        yield _counter(
            "decision_log_written", "Decision records committed by this process.", writer.written
        )
        yield _gauge(
            "decision_log_unwritten",
            "Decision records handed to the writer and not yet committed.",
            writer.unwritten,
        )
        yield _counter(
            "decision_log_held_back",
            "Answers that waited because the decision log writer was behind.",
            writer.held_back,
        )
        yield _counter(
            "decision_log_failed_attempts",
            "Batches of decision records that failed and were written again.",
            writer.failed_attempts,
        )
        yield _counter(
            "decision_log_writer_restarts",
            "Decision log writer processes started again after one ended unexpectedly "
            "(their unacknowledged records sent again).",
            writer.restarts,
        )
        yield _counter(
            "decision_log_writer_starved",
            "Decision log writer processes under SCHED_IDLE replaced because other work kept "
            "them off the CPU (the next ones run under nice alone; decision 0025).",
            writer.starved,
        )
        proofs = services.proofs
        checks = CounterMetricFamily(
            f"{PREFIX}_dpop_signature_checks",
            "DPoP proof signatures checked, by where: the checker process, the server itself "
            "(the checker could not), or the server because the decision was alone (the only "
            "request in progress).",
            labels=["by"],
        )
        checks.add_metric(["checker"], proofs.checked_apart)
        checks.add_metric(["server"], proofs.checked_here)
        checks.add_metric(["alone"], proofs.checked_alone)
        yield checks
        yield _counter(
            "dpop_checker_restarts",
            "DPoP checker processes started again after one ended or stalled (their open "
            "checks made by the server).",
            proofs.restarts,
        )

    def _metering(self) -> Iterator[Metric]:
        meters = self._services.meters
        yield _counter(
            "metering_groups",
            "Groups of metering operations the Meter writer saved (one transaction each).",
            meters.groups,
        )
        yield _counter(
            "metering_operations",
            "Reservations, usage reports and expiries the Meter writer applied.",
            meters.operations,
        )
        yield _counter(
            "metering_apply_seconds",
            "Time the Meter writer spent applying groups (their saves included).",
            meters.apply_seconds,
        )
        yield _counter(
            "metering_save_seconds",
            "Time the Meter writer spent in the store's write transaction.",
            meters.save_seconds,
        )
        yield _counter(
            "metering_drawn",
            "Metered permits answered from this replica's budget lease, without waiting.",
            meters.drawn,
        )
        yield _counter(
            "metering_reserved_durably",
            "Metered permits that waited for the Meter writer (no lease covered them).",
            meters.reserved_durably,
        )
        yield _counter(
            "metering_conflicts",
            "Metering groups retried because another replica wrote a Meter first.",
            meters.conflicts,
        )
        yield _counter(
            "metering_writer_restarts",
            "Meter writer processes started again after one ended unexpectedly (the group "
            "it held was answered 503).",
            meters.restarts,
        )
        yield _counter(
            "metering_writer_starved",
            "Meter writer processes under SCHED_IDLE retired because other work kept them off "
            "the CPU (the next ones run under nice alone; decision 0025).",
            meters.starved,
        )
        waiting, age = meters.backlog()
        yield _gauge(
            "metering_backlog",
            "Metering operations waiting for the Meter writer: usage reports, durable "
            "reservations, expiries, lease renewals, and permits drawn from a lease not yet "
            "recorded.",
            waiting,
        )
        yield _gauge(
            "metering_backlog_age_seconds",
            "How long the oldest of them has waited (0 when none waits).",
            age,
        )

    def _signals(self) -> Iterator[Metric]:
        services = self._services
        yield _gauge("sse_subscribers", "Open SSE subscriptions.", services.sse.subscribers)
        sent = services.sse.sent_waits
        outcomes = CounterMetricFamily(
            f"{PREFIX}_signal_waits",
            "Governance writes that waited (bounded by signal_wait_ms) for this process's SSE "
            "subscribers to be sent their SETs, by outcome: sent, timeout, no_subscribers "
            "(none connected here: no wait), disabled (signal_wait_ms = 0).",
            labels=["outcome"],
        )
        for outcome, count in sorted(sent.outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield _histogram(
            "signal_wait_seconds",
            "How long governance writes waited for their SETs to be sent to this process's "
            "SSE subscribers (outcomes sent and timeout).",
            sent.durations,
        )

    def _workers(self) -> Iterator[Metric]:
        services = self._services
        if services.push is not None:
            push = services.push.counters()
            yield _counter("push_delivered", "SETs pushed and answered 202.", push["delivered"])
            yield _counter(
                "push_failed_attempts", "Push attempts that failed.", push["failed_attempts"]
            )
            yield _gauge("push_in_flight", "Streams being pushed to now.", push["in_flight"])
        sent = services.callbacks.counters()
        yield _counter(
            "access_request_callbacks_delivered",
            "Access-request notifications answered 2xx by their callback.",
            sent["delivered"],
        )
        yield _counter(
            "access_request_callbacks_failed_attempts",
            "Access-request callback attempts that failed (retried with backoff).",
            sent["failed_attempts"],
        )
        yield _counter(
            "access_request_callbacks_abandoned",
            "Access-request notifications given up on (their change a day old).",
            sent["abandoned"],
        )
        yield _gauge(
            "access_request_callbacks_in_flight",
            "Access-request notifications being sent by this process now.",
            sent["in_flight"],
        )
        if services.gc is not None:
            yield _gauge(
                "gc_frozen_objects",
                "Objects frozen out of garbage collection (api/gc_policy.py).",
                services.gc.frozen(),
            )
            yield _counter(
                "gc_full_collections",
                "Full collections of everything, frozen objects included.",
                services.gc.full_collections,
            )
        if services.checkpoints is not None:
            checkpoints = services.checkpoints.counters()
            yield _counter(
                "checkpoints_issued", "Checkpoints signed by this process.", checkpoints["issued"]
            )
            witness_failures = CounterMetricFamily(
                f"{PREFIX}_checkpoint_witness_failures",
                "Checkpoints a witness did not take (write error, HTTP error, full queue).",
                labels=["witness"],
            )
            witness_failures.add_metric(["dir"], checkpoints["dir_failures"])
            witness_failures.add_metric(["http"], checkpoints["http_failures"])
            yield witness_failures
        if self._scheduler is not None:
            yield _counter(
                "scheduled_transitions",
                "Clock-driven transitions recorded by this process.",
                self._scheduler.recorded,
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def _histogram(name: str, documentation: str, durations: Durations) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound, count in zip((*durations.BUCKETS, float("inf")), durations.counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(
        f"{PREFIX}_{name}", documentation, buckets=cumulative, sum_value=durations.total
    )
