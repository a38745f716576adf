"""The application factory. The lifespan owns every resource; importing does nothing."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api import errors
from api.console import pages as console_pages
from api.console.live import MissionWatch
from api.console.web import HERE, STATIC_PREFIX, Console, ConsoleHeaders
from api.evidence import decision_log_records
from api.gc_policy import GcPolicy
from api.middleware import BodyLimit, RequestId
from api.oauth import OAuthVerifier
from api.read_models import read_models
from api.requests_in_progress import RequestsInProgress
from api.routes import (
    access_requests,
    audit,
    authzen,
    completion_events,
    discovery,
    egress,
    health,
    jwks,
    mandates,
    metrics,
    missions,
    proposals,
    ssf,
    ssf_poll,
    ssf_sse,
    status,
    usage,
)
from api.services import Services
from api.subject_tokens import SubjectTokenVerifier
from api.switch_interval import with_short_switch_interval
from api.tokens import TokenVerifier
from api.workers.callbacks import CallbackDelivery
from api.workers.checkpoints import Checkpointer, HttpWitness
from api.workers.decision_process import ProcessDecisionWriter
from api.workers.decision_writer import DecisionRecorder, DecisionWriter
from api.workers.meter_process import ProcessMeterBook, child_config
from api.workers.proof_process import ProofVerifier
from api.workers.push import PushDelivery
from api.workers.scheduler import Scheduler
from api.workers.sse_hub import SseHub
from ledger.application import Ledger
from ledger.application.metering import MeterWriter
from ledger.clock import Clock, SystemClock
from ledger.domain.access_binding import APPROVAL_STATE_TYP
from ledger.persistence.checkpoints import CheckpointStore
from ledger.persistence.database import store_params
from ledger.persistence.snapshots import StateCodec
from ledger.persistence.store import open_ledger, persistence_env
from ledger.settings import Settings, load_settings
from ledger.signing.keyring import Keyring
from projections.callbacks import CallbackOutbox
from projections.decision_log import DecisionLog
from projections.evaluation_index import EvaluationIndex
from projections.follower import LogFollower
from projections.key_directory import KeyDirectory
from projections.pdp import AccessRequests, DecisionPoint
from projections.retention import Retention

log = logging.getLogger("mission_ledger")


def build_services(
    settings: Settings, clock: Clock, requests: RequestsInProgress | None = None
) -> Services:
    """Open the store, the signing keys and the read side (blocking: runs in a thread).
    ``requests``: the HTTP server's requests in progress, when it says."""
    requests = requests or RequestsInProgress()
    ledger = open_ledger(settings, clock=clock)
    keyring = Keyring.open(settings, ledger.database)
    keyring.ensure(settings.signing_alg, clock.now())
    ledger.signer = keyring
    ledger.mandate_alg = settings.signing_alg
    ledger.allow_http_loopback_push = settings.allow_http_loopback_push
    models = read_models(ledger, keyring, settings.public_issuer)
    codec = StateCodec(ledger.mapper.transcoder)
    keys = KeyDirectory()
    index = EvaluationIndex(codec)
    sse = SseHub(ledger.database, models.signals)
    watch = MissionWatch()
    follower = LogFollower(
        ledger,
        durable=[models.proposals, models.missions, models.mandates, models.access_requests],
        live=[keys, index, watch],
        # Writes do not wait for these (see api/consistency.py): with many SSF streams the
        # signal log's batch (a signed SET per stream) would hold up every write's answer.
        trailing_durable=[models.signals, CallbackOutbox(settings.public_issuer)],
        trailing_live=[sse],
        listen_dsn=None if settings.embedded else settings.postgres_params(),
        # The idle poll renews the index's freshness, well inside the staleness bound.
        poll_interval=min(1.0, settings.mission_max_stale_seconds / 4),
    )
    follower.start()
    meters = meter_writer(settings, ledger).start()
    tokens = TokenVerifier(keyring, clock)
    pdp = DecisionPoint(
        index,
        issuer=settings.public_issuer,
        resolve_token=tokens.mandate_jti,
        max_stale_seconds=settings.mission_max_stale_seconds,
        staleness=follower.staleness,
        require_proof=settings.require_proof,
        replay_cache_size=settings.dpop_replay_cache_size,
        draw=meters.draw,
        reservation_ttl_seconds=settings.reservation_ttl_seconds,
        access_requests=AccessRequests(
            # One token per denial: the protected header encoded once per key, the
            # signature made by cryptography directly (Keyring.compact_signer).
            sign=keyring.compact_signer(settings.signing_alg),
            verify_approval=lambda state, now: tokens.verify(
                state, typ=APPROVAL_STATE_TYP, now=now
            ),
            denial_ttl_seconds=settings.access_request_denial_ttl_seconds,
        ),
    )
    oauth = OAuthVerifier(settings) if settings.oauth_issuer else None
    decision_log = DecisionLog(ledger.database)
    callbacks = CallbackDelivery(
        ledger,
        keyring.callback_secret,
        allow_private=settings.access_request_callback_allow_private,
        ca_file=settings.access_request_callback_ca_file,
        follower=follower,
    )
    return Services(
        settings=settings,
        clock=clock,
        ledger=ledger,
        follower=follower,
        proposals=models.proposals,
        missions=models.missions,
        mandates=models.mandates,
        access_requests=models.access_requests,
        signals=models.signals,
        keys=keys,
        oauth=oauth,
        keyring=keyring,
        tokens=tokens,
        index=index,
        pdp=pdp,
        sse=sse,
        subject_tokens=SubjectTokenVerifier(settings, clock),
        meters=meters,
        console_watch=watch,
        decision_log=decision_log,
        callbacks=callbacks,
        decision_records=decision_log_records(decision_log),
        decisions=decision_writer(settings, decision_log),
        proofs=ProofVerifier(mode=settings.proof_verifier, alone=requests.alone),
        requests=requests,
    )


def meter_writer(settings: Settings, ledger: Ledger) -> MeterWriter:
    """The Meter writer, its groups applied where the settings ask (``meter_writer``). A
    clock other than the system's (tests that drive time) keeps them on the writer thread:
    the writer process reads the system clock."""
    holder = "rpl_" + secrets.token_hex(6)
    backend = None
    if settings.meter_writer == "process" and isinstance(ledger.clock, SystemClock):
        config = child_config(
            persistence_env(settings),
            holder=holder,
            lease_seconds=settings.metering_lease_seconds,
            issuer=settings.public_issuer,
            policy_version=settings.policy_version,
        )
        backend = ProcessMeterBook(
            ledger, config, priority=settings.meter_writer_priority()
        ).start()
    return MeterWriter(
        ledger, lease_seconds=settings.metering_lease_seconds, holder=holder, backend=backend
    )


def decision_writer(settings: Settings, store: DecisionLog) -> DecisionRecorder:
    """The decision log writer the settings ask for (``decision_log_writer``)."""
    mode, flush_ms = settings.decision_log_mode, settings.decision_log_flush_ms
    queue_size = settings.decision_log_queue_size
    if settings.decision_log_writer == "process":
        return ProcessDecisionWriter(
            store_params(settings),
            mode=mode,
            flush_ms=flush_ms,
            queue_size=queue_size,
            priority=settings.decision_writer_priority(),
        )
    return DecisionWriter(store, mode=mode, flush_ms=flush_ms, queue_size=queue_size)


def _maintain(services: Services, retention: Retention) -> None:
    """Every scheduler tick: pick up rotated signing keys, prune what outlived retention,
    freeze long-lived objects, sign a checkpoint when one is due."""
    if services.gc is not None:
        services.gc.tick()  # first: needs no database
    services.keyring.refresh()
    retention.tick(services.clock.now())
    if services.checkpoints is not None:
        services.checkpoints.tick()


def build_checkpointer(settings: Settings, services: Services) -> Checkpointer:
    """The checkpoints of this replica and their witnesses (SPEC 7.4)."""
    ledger = services.ledger
    url = settings.checkpoint_witness_url
    return Checkpointer(
        CheckpointStore(ledger.database, ledger.event_log),
        services.keyring,
        services.clock,
        issuer=settings.public_issuer,
        alg=settings.signing_alg,
        interval=timedelta(seconds=settings.checkpoint_interval_seconds),
        directory=settings.checkpoint_dir,
        http=None if url is None else HttpWitness(url),
    )


def _final_checkpoint(checkpointer: Checkpointer) -> None:
    try:
        checkpointer.stop()
    except Exception:  # shutdown goes on; the next start's first tick signs the head
        log.exception("the shutdown checkpoint failed")


def _add_routes(app: FastAPI) -> None:
    """Every router's routes, in matching order, and the console's static files.

    The routes are added themselves, not their routers (``include_router``): no router sets
    a prefix, tag or dependency at inclusion (each route has its own from its router when
    it is declared), and FastAPI builds an included router's routes again for each app, on
    its first request (~35 ms of an app's start: the API tests start one per test), then
    looks each router up for every request (the routes' own matching is what remains)."""
    for router in (
        authzen.router,  # first: the decision path is the hottest, and routes match in order
        usage.router,  # a metered decision's second half
        discovery.router,
        jwks.router,
        health.router,
        proposals.router,
        missions.router,
        completion_events.router,
        mandates.router,
        status.router,
        metrics.router,
        ssf.router,
        ssf_poll.router,
        ssf_sse.router,
        audit.router,
        console_pages.router,
        access_requests.router,
        egress.router,
    ):
        app.router.routes.extend(router.routes)
    app.mount(STATIC_PREFIX, StaticFiles(directory=HERE / "static"), name="console-static")


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the ASGI app. Nothing is opened until the lifespan starts."""
    resolved = settings or load_settings()
    the_clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(
            build_services, resolved, the_clock, app.state.requests_in_progress
        )
        # Rows older than migration 0009 learn their approver (the console's "approved by me").
        await run_in_threadpool(services.missions.fill_approver_keys, services.ledger.database)
        app.state.console.attach(services.ledger.database)
        services.sse.attach(asyncio.get_running_loop())
        services.console_watch.attach(asyncio.get_running_loop())
        services.decisions.attach(asyncio.get_running_loop())
        services.decisions.start()
        retention = Retention(
            services.ledger.database,
            set_retention=timedelta(days=resolved.set_retention_days),
            idempotency_retention=timedelta(hours=resolved.idempotency_retention_hours),
            decision_log=services.decision_log,
            decision_retention=timedelta(days=resolved.decision_log_retention_days),
        )
        scheduler = Scheduler(
            services.ledger,
            services.missions,
            services.proposals,
            services.mandates,
            services.access_requests,
            interval=resolved.scheduler_interval_seconds,
            on_tick=lambda: _maintain(services, retention),
            meters=services.meters,
        )
        checkpointer = services.checkpoints = build_checkpointer(resolved, services)
        checkpointer.start()
        scheduler.start()
        push = PushDelivery(services.ledger, follower=services.follower)
        push.start()
        services.push = push
        services.callbacks.start()
        if resolved.gc_freeze:
            services.gc = GcPolicy(
                full_every_seconds=resolved.gc_full_collection_minutes * 60,
                young_threshold=resolved.gc_young_threshold,
            )
            services.gc.start()
        app.state.services = services
        app.state.scheduler = scheduler
        app.state.push = push
        log.info("Mission Ledger ready (issuer %s)", resolved.public_issuer)
        try:
            yield
        finally:
            push.stop()
            services.callbacks.stop()
            scheduler.stop()
            # Every decision answered is recorded before the store closes.
            await services.decisions.close()
            services.proofs.close()
            await run_in_threadpool(_final_checkpoint, checkpointer)
            services.meters.stop()
            if services.gc is not None:
                services.gc.stop()
            services.follower.stop()
            services.ledger.close()

    app = FastAPI(
        title="Mission Ledger",
        version=version("mission-ledger"),  # pyproject.toml states it, once
        summary="Mission Authority Server and governance control plane for AI agents",
        # The switch interval is shortened before the first of the server's threads starts,
        # until the last has stopped.
        lifespan=with_short_switch_interval(lifespan),
        # The schema is served by ``api.routes.discovery`` behind a credential (only
        # discovery, JWKS and health are public); no browser UI loading remote scripts.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    _add_routes(app)
    app.state.console = Console.create(resolved)
    # The HTTP requests in progress: ``mission-ledger serve`` attaches its server's.
    app.state.requests_in_progress = RequestsInProgress()
    # The last added is the outermost: the X-Request-ID echo wraps every answer, the
    # body limit's early 413/400 included.
    app.add_middleware(BodyLimit)
    app.add_middleware(ConsoleHeaders)
    app.add_middleware(RequestId)
    return app
