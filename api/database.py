"""The database: Tortoise configuration, opening and closing, and the migration state.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so the
server and a separate worker can share the file; PostgreSQL is used as given in `DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tortoise import context as tortoise_context
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.connection import get_connection
from tortoise.context import TortoiseContext
from tortoise.migrations.executor import MigrationExecutor

from api.settings import Settings
from models import MODEL_MODULES

APP_LABEL = "ketafollow"
MIGRATIONS_MODULE = "migrations"
# Any constant will do: it only has to be the same in every replica that may run `migrate`.
_MIGRATION_LOCK_KEY = 0x6B657461

# SQLite PRAGMAs applied to every connection (Tortoise turns URL parameters into PRAGMAs); the busy
# timeout comes from SQLITE_BUSY_TIMEOUT_SECONDS.
_SQLITE_PRAGMAS = {"journal_mode": "WAL", "foreign_keys": "ON"}
# The client gives up on a statement this long after the server should have cancelled it.
_CLIENT_GRACE_SECONDS = 1.0

logger = logging.getLogger("ketafollow")


class DatabaseNotMigrated(RuntimeError):
    """The schema is behind the code; the message names the command that fixes it."""

    def __init__(self, pending: list[str]) -> None:
        self.pending = pending
        shown = ", ".join(pending[:5]) + (" …" if len(pending) > 5 else "")
        super().__init__(
            f"the database is not migrated ({len(pending)} pending: {shown}). "
            "Run `ketafollow migrate` (or `make migrate`) and start again."
        )


def connection(database_url: str, settings: Settings | None = None, *, serving: bool = True) -> dict[str, Any]:
    """What Tortoise should open, with the bounds on its waits from `settings` (their defaults
    without). SQLite: our backend (write transactions begin IMMEDIATE, see api.sqlite_backend)
    with its PRAGMAs, and its folder created. PostgreSQL: our backend (api.postgres_backend) with
    the statement, connect and pool timeouts; `serving=False` (migrations) has no statement
    timeout, since a migration may rewrite a large table."""
    settings = settings or Settings()
    parts = urlsplit(database_url)
    if parts.scheme != "sqlite":
        config = expand_db_url(database_url)
        credentials: dict[str, Any] = config["credentials"]
        credentials.setdefault("timeout", settings.db_connect_timeout)
        credentials.setdefault("pool_timeout", settings.db_pool_timeout)
        credentials.setdefault("close_timeout", min(3.0, settings.shutdown_timeout * 0.2))
        if serving:
            credentials.setdefault("command_timeout", settings.db_statement_timeout + _CLIENT_GRACE_SECONDS)
            server_settings = dict(credentials.get("server_settings") or {})
            server_settings.setdefault("statement_timeout", str(int(settings.db_statement_timeout * 1000)))
            credentials["server_settings"] = server_settings
        return {"engine": "api.postgres_backend", "credentials": credentials}
    path = Path(parts.netloc + parts.path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    pragmas: dict[str, Any] = {
        **_SQLITE_PRAGMAS,
        "busy_timeout": str(int(settings.sqlite_busy_timeout * 1000)),
        **dict(parse_qsl(parts.query)),
    }
    return {"engine": "api.sqlite_backend", "credentials": {"file_path": str(path), **pragmas}}


def tortoise_config(database_url: str, settings: Settings | None = None, *, serving: bool = True) -> dict[str, Any]:
    return {
        "connections": {"default": connection(database_url, settings, serving=serving)},
        "apps": {
            APP_LABEL: {
                "models": list(MODEL_MODULES),
                "migrations": MIGRATIONS_MODULE,
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def __getattr__(name: str) -> Any:
    # `tortoise makemigrations` reads `api.database.TORTOISE_ORM` (pyproject's [tool.tortoise]);
    # computing it lazily keeps importing this module free of side effects.
    if name == "TORTOISE_ORM":
        return tortoise_config(Settings.from_env().database_url)
    raise AttributeError(name)


@asynccontextmanager
async def open_database(settings: Settings, *, serving: bool = True) -> AsyncIterator[TortoiseContext]:
    """Open the connections for the duration of the block, as the current Tortoise context
    (`serving=False`: for migrations, without the statement timeout). Closing them is bounded.

    Tasks that do not inherit it (uvicorn runs requests apart from the lifespan) enter it
    explicitly: see `api.middleware.DatabaseContextMiddleware`. No process-wide fallback is set,
    so several apps (tests, benchmarks) can live in one process.
    """
    context = TortoiseContext()
    with context:
        await context.init(config=tortoise_config(settings.database_url, settings, serving=serving))
        try:
            yield context
        finally:
            # In a task of its own, waited for with a bound but not cancelled: a driver may wait
            # for its thread even when cancelled (aiosqlite, behind a statement in a busy wait).
            closing = asyncio.ensure_future(context.close_connections())
            done, _ = await asyncio.wait({closing}, timeout=max(1.0, settings.shutdown_timeout * 0.2))
            if not done:
                logger.error("closing the database connections took too long; left to the process's end")
            elif closing.exception() is not None:
                logger.error("closing the database connections failed", exc_info=closing.exception())


@contextmanager
def use_database(database: TortoiseContext) -> Iterator[None]:
    """Make `database` the current one in this task for the duration of the block.

    `TortoiseContext`'s own `with` keeps one token on the shared object, so it cannot be entered
    by concurrent tasks; this keeps the token per call. (Tortoise has no public per-task API for
    this yet; the context variable is pinned by our tortoise-orm <1.2 requirement.)
    """
    token = tortoise_context._current_context.set(database)
    try:
        yield
    finally:
        tortoise_context._current_context.reset(token)


def _executor() -> MigrationExecutor:
    apps = tortoise_config("sqlite://unused")["apps"]
    return MigrationExecutor(get_connection("default"), apps)


async def pending_migrations() -> list[str]:
    """Names of the migrations the code has and the database has not applied yet."""
    plan = await _executor().plan()
    return [f"{step.migration.app_label}.{step.migration.name}" for step in plan if not step.backward]


async def ensure_migrated() -> None:
    """Refuse to serve a database whose schema is behind the code."""
    pending = await pending_migrations()
    if pending:
        raise DatabaseNotMigrated(pending)


async def migrate() -> list[str]:
    """Apply every pending migration; returns what was applied.

    On PostgreSQL an advisory lock makes replicas that start together migrate one after the other.
    """
    connection = get_connection("default")
    if connection.capabilities.dialect != "postgres":
        return await _migrate_now()
    async with connection.acquire_connection() as locked:
        await locked.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            return await _migrate_now()
        finally:
            await locked.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)


async def _migrate_now() -> list[str]:
    pending = await pending_migrations()
    if pending:
        await _executor().migrate()
    return pending


async def database_answers() -> bool:
    """True when a trivial statement succeeds (used by /readyz, which bounds the wait)."""
    try:
        await get_connection("default").execute_query("SELECT 1")
    except Exception:
        return False
    return True
