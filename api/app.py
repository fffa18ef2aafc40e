"""`create_app`: the Starlette application, its routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute

from api.auth.routes import revoke_endpoint, token_endpoint
from api.bus import Dispatcher, make_bus
from api.database import ensure_migrated, open_database
from api.graphql_view import GraphQLEndpoint
from api.health import healthz, readyz
from api.middleware import BodySizeLimitMiddleware, DatabaseContextMiddleware, RequestContextMiddleware
from api.settings import Settings
from jobs.environment import JobEnvironment
from jobs.scheduler import build_scheduler
from jobs.senders import log_notification, webhook_sender
from models.clock import Clock, SystemClock
from models.notifications import Sender

logger = logging.getLogger("ketafollow")


def job_environment(settings: Settings, clock: Clock) -> JobEnvironment:
    """What the jobs run with: the notification sender is the webhook when one is configured."""
    sender: Sender = log_notification
    if settings.notify_webhook_url and settings.notify_webhook_secret:
        sender = webhook_sender(settings.notify_webhook_url, settings.notify_webhook_secret)
    return JobEnvironment(clock=clock, policy=settings.clinic_policy, sender=sender)


def create_app(
    settings: Settings, *, clock: Clock | None = None, sender: Sender | None = None, jobs_at_start: bool = False
) -> Starlette:
    """The ASGI app. Its lifespan opens the database, refuses an unmigrated one, runs the jobs.

    `jobs_at_start` (what `ketafollow serve` asks for) runs every job once as the app starts, to
    catch up on work that fell due while no process ran; tests leave it off and run jobs themselves.
    """
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_database(settings) as database:
            await ensure_migrated()
            app.state.database = database
            bus = make_bus(settings.event_bus_url)
            await bus.start()
            app.state.bus = bus
            dispatcher = Dispatcher(bus)
            await dispatcher.start_at_the_end()
            dispatching = asyncio.create_task(dispatcher.run_forever(), name="event-dispatcher")
            env = job_environment(settings, clock)
            if sender is not None:
                env = replace(env, sender=sender)
            first_run_at = clock.now() if jobs_at_start else None
            scheduler = build_scheduler(env, first_run_at=first_run_at) if settings.run_scheduler else None
            app.state.scheduler = scheduler
            if scheduler is not None:
                scheduler.start()
            logger.info("ketafollow ready", extra={"env": settings.env.value})
            try:
                yield
            finally:
                if scheduler is not None:
                    scheduler.shutdown(wait=True)
                dispatching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatching
                await bus.close()
                app.state.database = None

    graphql = GraphQLEndpoint(settings, clock)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/auth/token", token_endpoint, methods=["POST"]),
            Route("/auth/revoke", revoke_endpoint, methods=["POST"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(DatabaseContextMiddleware),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.scheduler = None
    app.state.database = None
    app.state.bus = None
    return app
