"""Test fixtures: a fresh, migrated database per test, the app over ASGI, and a manual clock.

SQLite by default. With `TEST_DATABASE_URL=postgres://user@host:port/maintenance_db` every test
gets its own PostgreSQL database instead, cloned from a template migrated once per run; all of
them are dropped at the end of the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.database import migrate, open_database
from api.settings import Environment, Settings
from models.clock import ManualClock

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
ON_POSTGRES = TEST_DATABASE_URL.startswith(("postgres://", "postgresql://"))
START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def _migrate_url(url: str) -> None:
    async with open_database(Settings(database_url=url)):
        await migrate()


class DatabaseFactory:
    """Hands each test a new, migrated database, cloned from one template made per run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []
        if ON_POSTGRES:
            self.template = f"kf_template_{self.run_id}"
            asyncio.run(self._admin(f'CREATE DATABASE "{self.template}"'))
            asyncio.run(_migrate_url(_with_database(TEST_DATABASE_URL, self.template)))
        else:
            self.template_path = workdir / "template.sqlite3"
            asyncio.run(_migrate_url(f"sqlite://{self.template_path}"))

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(TEST_DATABASE_URL))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def new_database(self) -> str:
        name = f"kf_test_{self.run_id}_{len(self.created)}"
        self.created.append(name)
        if ON_POSTGRES:
            asyncio.run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
            return _with_database(TEST_DATABASE_URL, name)
        path = self.workdir / f"{name}.sqlite3"
        shutil.copyfile(self.template_path, path)
        return f"sqlite://{path}"

    def empty_database(self) -> str:
        """A database with no schema at all (for the 'refuses an unmigrated database' tests)."""
        name = f"kf_empty_{self.run_id}_{len(self.created)}"
        self.created.append(name)
        if ON_POSTGRES:
            asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
            return _with_database(TEST_DATABASE_URL, name)
        return f"sqlite://{self.workdir / name}.sqlite3"

    def drop(self, url: str) -> None:
        if ON_POSTGRES:
            name = urlsplit(url).path.strip("/")
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        if ON_POSTGRES:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    factory.close()


@pytest.fixture
def database_url(databases: DatabaseFactory) -> Iterator[str]:
    url = databases.new_database()
    yield url
    databases.drop(url)


@pytest.fixture
def empty_database_url(databases: DatabaseFactory) -> Iterator[str]:
    url = databases.empty_database()
    yield url
    databases.drop(url)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(env=Environment.TEST, database_url=database_url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[None]:
    """The test's database opened for direct use of the domain layer (no app)."""
    async with open_database(settings):
        yield


@pytest.fixture
async def app(settings: Settings, clock: ManualClock) -> AsyncIterator[Starlette]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def production_settings(settings: Settings) -> Settings:
    return replace(settings, env=Environment.PRODUCTION, secret_key="x" * 16 + "Q7f!9zK2#mW4pL8v" * 2)


@pytest.fixture
async def production_client(
    production_settings: Settings, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(production_settings, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
