"""`create_app`: the Starlette application, its routes, middleware and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route, WebSocketRoute

from api.auth.enrolment import activate_endpoint, password_reset_confirm_endpoint, password_reset_endpoint
from api.auth.routes import revoke_endpoint, token_endpoint
from api.bus import Dispatcher, make_bus
from api.database import ensure_migrated, open_database
from api.faults import FaultMiddleware
from api.graphql_view import GraphQLEndpoint
from api.health import healthz, readyz
from api.logins import LoginGate, make_login_store
from api.middleware import (
    BodySizeLimitMiddleware,
    DatabaseContextMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
)
from api.rate_limit import RateLimiter, RateLimitMiddleware, make_bucket_store
from api.settings import Settings
from api.sockets import RefusedSocketSignIns, SocketRegistry
from jobs.environment import JobEnvironment
from jobs.mail import mail_transport
from jobs.scheduler import build_scheduler
from models.identity.sign_ins import LOGIN_ENDED
from models.kernel.clock import Clock, SystemClock
from models.kernel.events import EventBus
from models.notifications.devices import Platform
from models.notifications.notifications import Sender
from models.notifications.push import PushSender, Transport
from models.notifications.push.apns import ApnsTransport
from models.notifications.push.fcm import FcmTransport
from models.notifications.senders import log_notification, webhook_sender

logger = logging.getLogger("ketafollow")


def job_environment(settings: Settings, clock: Clock, *, sender: Sender | None = None) -> JobEnvironment:
    """What the jobs run with: the notification sender is `sender` if given (tests), else the
    webhook, or pushes to registered phones through APNs and/or FCM, when configured (settings
    allow one of the two), else the log. E-mail goes through SMTP_URL, else to files (jobs.mail)."""
    mailer = mail_transport(settings.mail)
    if sender is not None:
        return JobEnvironment(
            clock=clock,
            policy=settings.clinic_policy,
            sender=sender,
            mailer=mailer,
            public_app_url=settings.mail.public_app_url,
        )
    sender = log_notification
    if settings.notify_webhook_url and settings.notify_webhook_secret:
        sender = webhook_sender(settings.notify_webhook_url, settings.notify_webhook_secret, clock)
    elif settings.apns or settings.fcm:
        transports: dict[Platform, Transport] = {}
        if settings.apns:
            transports[Platform.IOS] = ApnsTransport(settings.apns, clock)
        if settings.fcm:
            transports[Platform.ANDROID] = FcmTransport(settings.fcm, clock)
        sender = PushSender(transports, clock)
    return JobEnvironment(
        clock=clock,
        policy=settings.clinic_policy,
        sender=sender,
        mailer=mailer,
        public_app_url=settings.mail.public_app_url,
    )


async def _ended(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await task


def cors_middleware(settings: Settings) -> list[Middleware]:
    """Lets the browser origins of `CORS_ALLOWED_ORIGINS` (the provider portal) call the API.

    Bearer tokens, not cookies: credentials stay off, so another site's page can never ride on a
    signed-in browser. Outside the rate limit, so a 429 reaches the portal with its Retry-After.
    """
    if not settings.cors_allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allowed_origins,
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID"],
            allow_credentials=False,
            max_age=settings.cors_max_age,
        )
    ]


async def relay_ended_logins(bus: EventBus, logins: LoginGate) -> None:
    """Logins ended anywhere (a `Login.ended` event from any replica): refuse their tokens and close
    their sockets here too. A dropped subscription (a slow consumer, a Redis reconnect) is renewed."""
    while True:
        try:
            async with bus.subscribe() as events:
                async for event in events:
                    if event.type == LOGIN_ENDED:
                        await logins.ended([event.resource_id])
        except asyncio.CancelledError:
            raise
        except Exception:  # never stop hearing of ended logins
            logger.exception("relaying an ended login failed; listening again")
        await asyncio.sleep(0.1)


class ShutdownBudget:
    """The lifespan's shutdown steps, each bounded, all within `total` seconds: a backend that
    hangs (a database that does not answer the final audit write, a Redis that does not close)
    costs its step's share, logged, and the process still stops (api.commands.service has the last resort)."""

    def __init__(self, total: float, *, per_step: float) -> None:
        self.deadline = asyncio.get_running_loop().time() + total
        self.per_step = per_step

    async def run(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            logger.error("shutdown: no time left to %s; skipped", name)
            return
        try:
            async with asyncio.timeout(min(self.per_step, remaining)):
                await step()
        except TimeoutError:
            logger.error(
                "shutdown: %s took longer than %.1f s; went on without it", name, min(self.per_step, remaining)
            )
        except Exception:
            logger.exception("shutdown: %s failed; went on without it", name)


def shutdown_shares(shutdown_timeout: float) -> tuple[float, float]:
    """How SHUTDOWN_TIMEOUT_SECONDS is spent: requests in flight get half (uvicorn's graceful
    shutdown), the lifespan's steps four tenths (each at most a fifth), a tenth is the margin
    before the watchdog ends the process (api.commands.service)."""
    return shutdown_timeout * 0.5, shutdown_timeout * 0.4


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
            bus = make_bus(settings.event_bus_url, settings.event_bus_channel)
            await bus.start()
            app.state.bus = bus
            dispatcher = Dispatcher(bus)
            await dispatcher.start_at_the_end()
            dispatching = asyncio.create_task(dispatcher.run_forever(), name="event-dispatcher")
            relaying = asyncio.create_task(relay_ended_logins(bus, logins), name="ended-logins")
            auditing = asyncio.create_task(refused_sign_ins.flush_now_and_then(), name="socket-sign-in-audit")
            env = job_environment(settings, clock, sender=sender)
            first_run_at = clock.now() if jobs_at_start else None
            scheduler = build_scheduler(env, first_run_at=first_run_at) if settings.run_scheduler else None
            app.state.scheduler = scheduler
            if scheduler is not None:
                scheduler.start()
            logger.info("ketafollow ready", extra={"env": settings.env.value})
            try:
                yield
            finally:
                _, lifespan_share = shutdown_shares(settings.shutdown_timeout)
                budget = ShutdownBudget(lifespan_share, per_step=settings.shutdown_timeout * 0.2)
                if scheduler is not None:
                    # Jobs under way get most of the step to finish, then are cancelled (each job's
                    # claims are leased: another run picks up what a cancelled one left).
                    finish_within = budget.per_step * 0.8
                    await budget.run("stop the scheduler", lambda: scheduler.stop(within=finish_within))
                if isinstance(env.sender, PushSender):
                    await budget.run("close the push sender", env.sender.aclose)
                for task in (dispatching, relaying, auditing):
                    task.cancel()
                    await budget.run(f"stop {task.get_name()}", functools.partial(_ended, task))
                await budget.run("write the refused socket sign-ins", lambda: refused_sign_ins.flush(everything=True))
                await budget.run("close the event bus", bus.close)
                await budget.run("close the rate limiter", limiter.close)
                await budget.run("close the login cache", logins.close)
                app.state.database = None

    limiter = RateLimiter(settings, clock, make_bucket_store(settings, clock))
    logins = LoginGate(settings, clock, make_login_store(settings, clock))
    sockets = SocketRegistry(settings)
    logins.on_ended(sockets.close_logins)
    refused_sign_ins = RefusedSocketSignIns(settings.socket_sign_in_audit_window, clock)
    graphql = GraphQLEndpoint(settings, clock, limiter, logins, sockets, refused_sign_ins)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/auth/token", token_endpoint, methods=["POST"]),
            Route("/auth/revoke", revoke_endpoint, methods=["POST"]),
            Route("/auth/activate", activate_endpoint, methods=["POST"]),
            Route("/auth/password-reset", password_reset_endpoint, methods=["POST"]),
            Route("/auth/password-reset/confirm", password_reset_confirm_endpoint, methods=["POST"]),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds),
            *cors_middleware(settings),
            # Inside the request id, the security headers and CORS, so its 503s and 500s get them.
            Middleware(FaultMiddleware, request_timeout=settings.request_timeout),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(RateLimitMiddleware, limiter=limiter),
            Middleware(DatabaseContextMiddleware),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.logins = logins
    app.state.limiter = limiter
    app.state.sockets = sockets
    app.state.scheduler = None
    app.state.database = None
    app.state.bus = None
    return app
