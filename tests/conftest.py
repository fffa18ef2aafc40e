"""Test fixtures: a fresh, migrated database per test, the app over ASGI, and a manual clock.

SQLite by default. With `TEST_DATABASE_URL=postgres://user@host:port/maintenance_db` every test
gets its own PostgreSQL database instead, cloned from a template migrated once per run; all of
them are dropped at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.auth.tokens import issue_access_token
from api.commands.service import seed_database
from api.database import migrate, open_database, use_database
from api.settings import BucketPolicy, Environment, Settings
from jobs.environment import JobEnvironment
from jobs.mail import MailSettings
from models.identity.accounts import ApiClient, User, client_credential
from models.identity.sign_in_records import RefreshToken, SessionFamily
from models.kernel.clock import ManualClock
from models.kernel.policy import DEFAULT_POLICY
from models.notifications.mail import MailTransport, OutgoingMail
from models.notifications.notifications import Sender
from models.notifications.senders import log_notification

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
ON_POSTGRES = TEST_DATABASE_URL.startswith(("postgres://", "postgresql://"))
START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ALL_SCOPES = frozenset({"patients:read", "clinical:read", "changes:read"})
# Redis keys of this run's rate limits: parallel runs on one Redis never share a bucket.
RATE_LIMIT_PREFIX = f"kf-test:{uuid.uuid4().hex[:12]}:"
# Likewise its event bus channel: another run's events would be relayed to this run's subscribers.
EVENT_BUS_CHANNEL = f"{RATE_LIMIT_PREFIX}events"
# E-mails an app's own scheduler writes (development transport: files), outside the work tree.
MAIL_DIRECTORY = Path(tempfile.gettempdir()) / f"kf-test-mail-{RATE_LIMIT_PREFIX.split(':')[1]}"
# Tests send bursts under a clock that stands still (nothing refills): only the rate-limit tests
# (tests/api/test_rate_limits.py) run with limits small enough to reach.
UNREACHED = BucketPolicy(burst=100_000, per_minute=100_000)


# The request deadline of the suite's apps. The deadline is a behaviour of its own, tested with its
# own short values (tests/api/test_faults_answers.py); elsewhere a test machine busy with other
# work (two cores, several suites) must not turn a slow answer into a 503, as the production
# default of 8 s did to tests queueing 50 writes on SQLite's one writer.
TEST_REQUEST_TIMEOUT = 30.0


def settings_for(database_url: str) -> Settings:
    return Settings(
        env=Environment.TEST,
        database_url=database_url,
        user_rate=UNREACHED,
        client_rate=UNREACHED,
        anonymous_rate=UNREACHED,
        socket_rate=UNREACHED,
        rate_limit_key_prefix=RATE_LIMIT_PREFIX,
        event_bus_channel=EVENT_BUS_CHANNEL,
        mail=MailSettings(directory=MAIL_DIRECTORY),
        request_timeout=TEST_REQUEST_TIMEOUT,
    )


REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_answers() -> bool:
    """Whether the Redis that CI runs (127.0.0.1:6379) is here; its tests skip without it."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
        return True
    return False


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def _prepare_template(url: str, *, demo: bool) -> None:
    async with open_database(Settings(database_url=url)):
        await migrate()
        if demo:
            await seed_database(Settings(env=Environment.TEST, database_url=url), now=START - timedelta(hours=1))


class DatabaseFactory:
    """Hands each test a new, migrated database, cloned from a template made once per run.

    Two templates: `blank` (schema only) and `demo` (schema and the demo clinic of PRODUCT.md).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.created: list[str] = []
        self.templates: dict[str, str] = {}
        for kind in ("blank", "demo"):
            if ON_POSTGRES:
                name = f"kf_template_{self.run_id}_{kind}"
                asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
                self.templates[kind] = name
                url = _with_database(TEST_DATABASE_URL, name)
            else:
                path = workdir / f"template_{kind}.sqlite3"
                self.templates[kind] = str(path)
                url = f"sqlite://{path}"
            asyncio.run(_prepare_template(url, demo=kind == "demo"))

    async def _admin(self, *statements: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(TEST_DATABASE_URL))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def new_database(self, kind: str = "demo") -> str:
        name = f"kf_test_{self.run_id}_{len(self.created)}"
        self.created.append(name)
        if ON_POSTGRES:
            asyncio.run(self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.templates[kind]}"'))
            return _with_database(TEST_DATABASE_URL, name)
        path = self.workdir / f"{name}.sqlite3"
        shutil.copyfile(self.templates[kind], path)
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
            for name in self.templates.values():
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    factory.close()


@pytest.fixture
def database_url(databases: DatabaseFactory) -> Iterator[str]:
    """A migrated database holding the demo clinic (PRODUCT.md): most tests start from it."""
    url = databases.new_database("demo")
    yield url
    databases.drop(url)


@pytest.fixture
def blank_database_url(databases: DatabaseFactory) -> Iterator[str]:
    """A migrated database with no rows at all."""
    url = databases.new_database("blank")
    yield url
    databases.drop(url)


@pytest.fixture
def empty_database_url(databases: DatabaseFactory) -> Iterator[str]:
    url = databases.empty_database()
    yield url
    databases.drop(url)


def job_env(
    clock: ManualClock, sender: Sender = log_notification, mailer: MailTransport | None = None
) -> JobEnvironment:
    """What the app's scheduler gives its jobs, for tests that run a job directly."""
    return JobEnvironment(clock=clock, policy=DEFAULT_POLICY, sender=sender, mailer=mailer or refuse_mail)


async def refuse_mail(message: OutgoingMail) -> None:
    raise AssertionError(f"no e-mail was expected here, got one to {message.recipient}")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture
def blank_settings(blank_database_url: str) -> Settings:
    return settings_for(blank_database_url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[None]:
    """The test's (demo) database opened for direct use of the domain layer (no app)."""
    async with open_database(settings):
        yield


@pytest.fixture
async def blank_db(blank_settings: Settings) -> AsyncIterator[None]:
    """An empty database opened for direct use of the domain layer."""
    async with open_database(blank_settings):
        yield


@contextlib.asynccontextmanager
async def running_app(settings: Settings, clock: ManualClock) -> AsyncIterator[Starlette]:
    """The app with `settings`, started (tests of a clinic configured its own way use it too)."""
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def client_of(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `app` over ASGI."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def app(settings: Settings, clock: ManualClock) -> AsyncIterator[Starlette]:
    async with running_app(settings, clock) as application:
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as http:
        yield http


@dataclass
class Tokens:
    """Access tokens minted for the demo clinic's accounts (the sign-in flow has its own tests),
    each user's under one login of theirs that lasts as long as the test (`logins`)."""

    settings: Settings
    clock: ManualClock
    user_ids: dict[str, uuid.UUID]
    client_ids: dict[str, uuid.UUID]
    logins: dict[str, uuid.UUID]
    # Each client's secret as stored when the tokens were made (client tokens name it: `cred`).
    client_credentials: dict[str, str] = field(default_factory=dict)

    def fresh(self, email: str) -> FreshToken:
        """A token for `email` minted anew each time it is used (for tests that move the clock)."""
        return FreshToken(self, email)

    def user(self, email: str) -> str:
        return issue_access_token(
            self.settings,
            subject_kind="user",
            subject_id=self.user_ids[email],
            now=self.clock.now(),
            session_id=self.logins[email],
        )

    def client(self, client_id: str, scopes: frozenset[str] = ALL_SCOPES) -> str:
        return issue_access_token(
            self.settings,
            subject_kind="client",
            subject_id=self.client_ids[client_id],
            now=self.clock.now(),
            scopes=scopes,
            credential=self.client_credentials.get(client_id),
        )


@dataclass
class FreshToken:
    tokens: Tokens
    email: str

    def __str__(self) -> str:
        return self.tokens.user(self.email)


async def start_logins(user_ids: dict[str, uuid.UUID], now: datetime) -> dict[str, uuid.UUID]:
    """One login per user, as a sign-in makes it, that ends long after any test's clock (the
    database must be open)."""
    families = [
        SessionFamily(id=uuid.uuid4(), user_id=user_id, created_at=now, last_used_at=now, expires_at=now + LONG_LOGIN)
        for user_id in user_ids.values()
    ]
    await SessionFamily.bulk_create(families)
    # Each with an unspent refresh token, as after a sign-in: a login without one has ended.
    await RefreshToken.bulk_create(
        [
            RefreshToken(
                id=uuid.uuid4(),
                family_id=family.id,
                token_hash=uuid.uuid4().hex * 2,
                issued_at=now,
                idle_expires_at=now + LONG_LOGIN,
            )
            for family in families
        ]
    )
    return {email: family.id for email, family in zip(user_ids, families, strict=True)}


LONG_LOGIN = timedelta(days=3650)


async def signed_in_tokens(settings: Settings, clock: ManualClock, *, except_for: tuple[str, ...] = ()) -> Tokens:
    """Tokens for every account and client of the open database, each user under a login of theirs
    (but the users `except_for`, whose logins a test makes itself)."""
    users = {user.email: user.id for user in await User.all() if user.email not in except_for}
    registered = await ApiClient.all()
    clients = {client.client_id: client.id for client in registered}
    credentials = {client.client_id: client_credential(client.secret_hash) for client in registered}
    return Tokens(settings, clock, users, clients, await start_logins(users, clock.now()), credentials)


@pytest.fixture
async def tokens(app: Starlette, settings: Settings, clock: ManualClock) -> Tokens:
    with use_database(app.state.database):
        return await signed_in_tokens(settings, clock)


@pytest.fixture
def production_settings(settings: Settings) -> Settings:
    return replace(settings, env=Environment.PRODUCTION, secret_key="x" * 16 + "Q7f!9zK2#mW4pL8v" * 2)


@pytest.fixture
async def production_app(production_settings: Settings, clock: ManualClock) -> AsyncIterator[Starlette]:
    application = create_app(production_settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def production_client(production_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=production_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def production_token(production_settings: Settings, tokens: Tokens, clock: ManualClock) -> str:
    """Dr Rivera's access token, signed with the production key."""
    return issue_access_token(
        production_settings,
        subject_kind="user",
        subject_id=tokens.user_ids["dr.rivera@demo.test"],
        now=clock.now(),
        session_id=tokens.logins["dr.rivera@demo.test"],
    )
