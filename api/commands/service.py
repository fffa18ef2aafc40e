"""Running the service: serve, the job worker, migrations and database roles, seeds, the schema
export; and the watchdog that ends a shutdown overrunning its bound."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from api.auth.passwords import hash_password
from api.database import DatabaseNotMigrated, ensure_migrated, migrate, open_database
from api.database_roles import Login, RoleSetupError, grant_after_migrate, serving_role_problems
from api.log import configure_logging
from api.settings import Settings, SettingsError, exposure_problems
from models.kernel.clock import SystemClock
from models.kernel.errors import DomainError
from seeds.loader import Demo, SeedReport, load_seeds


def run_with_database(settings: Settings, work: Callable[[], Awaitable[int]], *, serving: bool = True) -> int:
    async def run() -> int:
        async with open_database(settings, serving=serving):
            return await work()

    try:
        return asyncio.run(run())
    except DatabaseNotMigrated as error:
        print(f"ketafollow: {error}", file=sys.stderr)
        return 1
    except DomainError as error:
        print(f"ketafollow: {error.message}", file=sys.stderr)
        return 1


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app, shutdown_shares

    configure_logging(settings.log_level, settings.log_format)

    async def check() -> int:
        await ensure_migrated()
        await _warn_if_audit_log_unguarded()
        return 0

    host = args.host or settings.host
    if problems := exposure_problems(settings, host):  # `--host` may differ from HOST
        print(f"ketafollow: {SettingsError(problems)}", file=sys.stderr)
        return 2
    if (status := run_with_database(settings, check)) != 0:
        return status
    config = uvicorn.Config(
        create_app(settings, jobs_at_start=True),
        host=host,
        port=args.port or settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=max(1, round(shutdown_shares(settings.shutdown_timeout)[0])),
    )
    server = uvicorn.Server(config)
    watch_shutdown(server, settings.shutdown_timeout)
    # uvicorn handles SIGINT/SIGTERM itself: it stops accepting, finishes requests (for half of
    # SHUTDOWN_TIMEOUT_SECONDS, then cancels them), runs the lifespan exit (bounded, api.app).
    server.run()
    return 0 if server.started else 1


def watch_shutdown(server: Any, shutdown_timeout: float) -> None:
    """From the first SIGTERM or SIGINT, a watchdog: if the process has not ended within
    SHUTDOWN_TIMEOUT_SECONDS (a backend that hangs every step of the way), it says so and exits
    with status 1, whatever is still running."""
    handle_exit = server.handle_exit
    watchdog: list[threading.Timer] = []

    def on_exit(sig: int, frame: FrameType | None) -> None:
        if not watchdog:
            watchdog.append(threading.Timer(shutdown_timeout, _shutdown_overran, (shutdown_timeout,)))
            watchdog[0].daemon = True
            watchdog[0].start()
        handle_exit(sig, frame)

    server.handle_exit = on_exit


def _shutdown_overran(shutdown_timeout: float) -> None:
    logging.getLogger("ketafollow").critical(
        "shutdown did not finish within SHUTDOWN_TIMEOUT_SECONDS (%g s); exiting now", shutdown_timeout
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(1)


def worker(settings: Settings, args: argparse.Namespace) -> int:
    from api.app import job_environment
    from jobs.scheduler import build_scheduler

    configure_logging(settings.log_level, settings.log_format)

    async def work() -> int:
        await ensure_migrated()
        await _warn_if_audit_log_unguarded()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        clock = SystemClock()
        scheduler = build_scheduler(job_environment(settings, clock), first_run_at=clock.now())
        scheduler.start()
        print("ketafollow worker: running the scheduled jobs; stop with Ctrl-C", file=sys.stderr)
        await stop.wait()
        await scheduler.stop()
        return 0

    return run_with_database(settings, work)


async def _warn_if_audit_log_unguarded() -> None:
    if problems := await serving_role_problems():
        logging.getLogger("ketafollow").warning(
            "the audit log is not protected from the role serving requests: %s (docs/deployment.md: PostgreSQL roles)",
            "; ".join(problems),
        )


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    # With an owner role, the service role (DATABASE_URL's) is granted again after migrating.
    service = Login.from_url(settings.database_url, "DATABASE_URL") if settings.migration_database_url else None

    async def work() -> int:
        applied = await migrate()
        print("\n".join(f"applied {name}" for name in applied) or "the database is up to date")
        if service is None:
            return 0
        if problems := await grant_after_migrate(service.name):
            print(f"ketafollow: the audit log is not guarded: {'; '.join(problems)}", file=sys.stderr)
            return 1
        print(f"granted {service.name}: the other tables, and only INSERT and SELECT on the audit log")
        return 0

    return run_with_database(replace(settings, database_url=settings.migration_url), work, serving=False)


def setup_roles(settings: Settings, args: argparse.Namespace) -> int:
    import asyncpg  # type: ignore[import-untyped]

    from api.database_roles import admin_dsn, setup_roles

    if not settings.database_url.startswith(("postgres://", "postgresql://")):
        print(
            "ketafollow: setup-roles is for PostgreSQL; SQLite has no roles: the database file's "
            "permissions are the boundary (docs/deployment.md: PostgreSQL roles)",
            file=sys.stderr,
        )
        return 2
    admin_url = args.admin_url or os.environ.get("ADMIN_DATABASE_URL", "").strip()
    if not settings.migration_database_url or not admin_url:
        print(
            "ketafollow: setup-roles needs DATABASE_URL (the service role), MIGRATION_DATABASE_URL "
            "(the owner role) and an administrator's URL (--admin-url or ADMIN_DATABASE_URL)",
            file=sys.stderr,
        )
        return 2

    async def work() -> int:
        owner = Login.from_url(settings.migration_database_url or "", "MIGRATION_DATABASE_URL")
        service = Login.from_url(settings.database_url, "DATABASE_URL")
        admin = await asyncpg.connect(admin_dsn(admin_url, settings.database_url))
        try:
            await setup_roles(admin, owner, service)
        finally:
            await admin.close()
        print(f"owner role {owner.name}: owns the schema, runs `ketafollow migrate`")
        print(f"service role {service.name}: serves requests; only INSERT and SELECT on the audit log")
        return 0

    try:
        return asyncio.run(work())
    except (RoleSetupError, asyncpg.PostgresError, OSError) as error:
        print(f"ketafollow: setup-roles: {error}", file=sys.stderr)
        return 1


async def seed_database(settings: Settings, *, now: datetime) -> SeedReport:
    """The seeds under these settings: the demo clinic outside production, passwords hashed as at sign-in."""
    demo = None if settings.is_production else Demo(app_url=settings.mail.public_app_url, policy=settings.clinic_policy)
    return await load_seeds(demo_clinic=demo, hash_password=hash_password, now=now)


def seed(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        report = await seed_database(settings, now=SystemClock().now())
        print(report.describe())
        return 0

    return run_with_database(settings, work)


def export_schema(settings: Settings, args: argparse.Namespace) -> int:
    from schema import export_schema

    sdl = export_schema()
    if args.output == "-":
        sys.stdout.write(sdl)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != sdl:
            print(f"{path} is out of date: run `ketafollow export-schema`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(sdl)
    print(f"wrote {path}")
    return 0
