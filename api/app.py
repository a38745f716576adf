"""The application factory. The lifespan owns every resource; importing does nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import errors
from api.middleware import BodyLimit, RequestId
from api.oauth import OAuthVerifier
from api.routes import discovery, health, missions, proposals
from api.scheduler import Scheduler
from api.services import Services
from ledger.clock import Clock, SystemClock
from ledger.persistence.snapshots import StateCodec
from ledger.persistence.store import open_ledger
from ledger.settings import Settings, load_settings
from projections.boards import MissionBoard, ProposalBoard
from projections.follower import LogFollower
from projections.key_directory import KeyDirectory

log = logging.getLogger("mission_ledger")


def build_services(settings: Settings, clock: Clock) -> Services:
    """Open the store and the read side (blocking: runs in a worker thread)."""
    ledger = open_ledger(settings, clock=clock)
    codec = StateCodec(ledger.mapper.transcoder)
    proposal_board = ProposalBoard(codec)
    mission_board = MissionBoard(codec)
    keys = KeyDirectory()
    follower = LogFollower(
        ledger,
        durable=[proposal_board, mission_board],
        live=[keys],
        listen_dsn=None if settings.embedded else settings.postgres_params(),
    )
    follower.start()
    oauth = OAuthVerifier(settings) if settings.oauth_issuer else None
    return Services(
        settings=settings,
        clock=clock,
        ledger=ledger,
        follower=follower,
        proposals=proposal_board,
        missions=mission_board,
        keys=keys,
        oauth=oauth,
    )


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Build the ASGI app. Nothing is opened until the lifespan starts."""
    resolved = settings or load_settings()
    the_clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await run_in_threadpool(build_services, resolved, the_clock)
        scheduler = Scheduler(
            services.ledger,
            services.missions,
            services.proposals,
            interval=resolved.scheduler_interval_seconds,
        )
        scheduler.start()
        app.state.services = services
        app.state.scheduler = scheduler
        log.info("Mission Ledger ready (issuer %s)", resolved.public_issuer)
        try:
            yield
        finally:
            scheduler.stop()
            services.follower.stop()
            services.ledger.close()

    app = FastAPI(
        title="Mission Ledger",
        version="0.1.0",
        summary="Mission Authority Server and governance control plane for AI agents",
        lifespan=lifespan,
    )
    errors.install(app)
    for router in (discovery.router, health.router, proposals.router, missions.router):
        app.include_router(router)
    app.add_middleware(RequestId)
    app.add_middleware(BodyLimit)
    return app
