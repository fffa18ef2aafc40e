"""On PostgreSQL the role that serves requests cannot rewrite the audit log.

The migrations run as an owner role (MIGRATION_DATABASE_URL), the service as a role that may only
INSERT and SELECT `audit_event` (DATABASE_URL), both made by `ketafollow setup-roles`. Each test
gets its own roles (tests may run in parallel on one server) and drops them afterwards.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from strawberry import relay

from api.app import create_app
from api.database import open_database, use_database
from api.database_roles import serving_role_problems
from api.settings import Settings, SettingsError
from models.kernel.clock import ManualClock
from models.messaging.messaging import MessageThread
from tests.conftest import (
    ON_POSTGRES,
    START,
    TEST_DATABASE_URL,
    DatabaseFactory,
    settings_for,
    signed_in_tokens,
)
from tests.support.graphql import gql

ROOT = Path(__file__).resolve().parents[2]
on_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="SQLite has no roles: the file's permissions are the boundary")


def ketafollow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k not in {"MIGRATION_DATABASE_URL", "ADMIN_DATABASE_URL"}}
    environment = {**inherited, "KETAFOLLOW_ENV": "test", **env}
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=120
    )


def as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    login = f"{user}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, login, parts.path, "", ""))


def as_administrator(url: str) -> str:
    """`url`'s database, reached as TEST_DATABASE_URL's user (a superuser)."""
    return urlunsplit(urlsplit(TEST_DATABASE_URL)._replace(path=urlsplit(url).path))


async def administer(*statements: str) -> None:
    connection = await asyncpg.connect(TEST_DATABASE_URL.replace("postgres://", "postgresql://", 1))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@dataclass(frozen=True)
class Roles:
    owner: str
    service: str
    owner_url: str
    service_url: str

    def environment(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.service_url,
            "MIGRATION_DATABASE_URL": self.owner_url,
            "ADMIN_DATABASE_URL": TEST_DATABASE_URL,
        }


@contextmanager
def made_roles(databases: DatabaseFactory) -> Iterator[Roles]:
    """The demo clinic's database, migrated by the administrator (as before the roles existed),
    then handed over by `ketafollow setup-roles` to an owner and a service role of its own."""
    if not ON_POSTGRES:
        pytest.skip("SQLite has no roles")
    suffix = uuid.uuid4().hex[:12]
    owner, service = f"kf_owner_{suffix}", f"kf_service_{suffix}"
    url = databases.new_database("demo")
    try:
        made = Roles(owner, service, as_user(url, owner, "owner pass 'quoted'"), as_user(url, service, "service-pass"))
        setup = ketafollow("setup-roles", **made.environment())
        assert setup.returncode == 0, setup.stderr
        yield made
    finally:
        databases.drop(url)
        asyncio.run(administer(f'DROP ROLE IF EXISTS "{service}"', f'DROP ROLE IF EXISTS "{owner}"'))


@pytest.fixture(scope="module")
def roles(databases: DatabaseFactory) -> Iterator[Roles]:
    """Shared by the tests that only try (and fail) to change the database, and add rows."""
    with made_roles(databases) as made:
        yield made


@pytest.fixture
def own_roles(databases: DatabaseFactory) -> Iterator[Roles]:
    """For a test that changes grants or tables."""
    with made_roles(databases) as made:
        yield made


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url.replace("postgres://", "postgresql://", 1))
    try:
        yield connection
    finally:
        await connection.close()


async def may(connection: asyncpg.Connection, role: str, privilege: str, table: str) -> bool:
    return bool(await connection.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, privilege))


# What someone holding the service role's password might try, to hide what they did.
ATTACKS = {
    "rewrite a row": "UPDATE audit_event SET detail = 'nothing happened'",
    "erase rows": "DELETE FROM audit_event",
    "empty the table": "TRUNCATE audit_event",
    "drop the trigger": "DROP TRIGGER audit_event_no_change ON audit_event",
    "disable the trigger": "ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_change",
    "disable every trigger": "ALTER TABLE audit_event DISABLE TRIGGER ALL",
    "switch triggers off for its session": "SET session_replication_role = replica",
    "drop the trigger's function": "DROP FUNCTION audit_event_append_only() CASCADE",
    "replace the trigger's function": "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    "swallow new rows with a rule": "CREATE RULE audit_event_discard AS ON INSERT TO audit_event DO INSTEAD NOTHING",
    "hang a trigger of its own": "CREATE TRIGGER audit_event_hide BEFORE INSERT ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "drop the table": "DROP TABLE audit_event",
    "rename the table": "ALTER TABLE audit_event RENAME TO audit_event_old",
    "take the table": "ALTER TABLE audit_event OWNER TO CURRENT_USER",
    "lock everyone out of it": "LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE",
}


@on_postgres
@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
async def test_the_service_role_cannot_change_erase_or_unguard_the_audit_log(roles: Roles, attack: str) -> None:
    async with connected(roles.service_url) as service:
        before = await service.fetchval("SELECT count(*) FROM audit_event")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with service.transaction():
                await service.execute(attack)
        assert await service.fetchval("SELECT count(*) FROM audit_event") == before
    async with connected(roles.owner_url) as owner:
        triggers = await owner.fetch(
            "SELECT tgname, tgenabled::text AS tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'audit_event'::regclass AND NOT tgisinternal"
        )
    assert {(row["tgname"], row["tgenabled"]) for row in triggers} == {
        ("audit_event_no_change", "O"),
        ("audit_event_no_truncate", "O"),
    }


@on_postgres
async def test_the_service_role_can_neither_become_the_owner_nor_grant_itself_more(roles: Roles) -> None:
    async with connected(roles.service_url) as service:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await service.execute(f'SET ROLE "{roles.owner}"')
        await service.execute(f'GRANT UPDATE, DELETE, TRUNCATE ON audit_event TO "{roles.service}"')  # a no-op
        for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
            assert not await may(service, roles.service, privilege, "audit_event"), privilege
        assert await may(service, roles.service, "INSERT", "audit_event")
        assert await may(service, roles.service, "SELECT", "audit_event")


@on_postgres
async def test_the_service_role_adds_and_reads_audit_rows(roles: Roles) -> None:
    async with connected(roles.service_url) as service:
        await service.execute(
            "INSERT INTO audit_event (id, occurred_at, actor_type, action, resource_type, outcome) "
            "VALUES ($1, now(), 'SYSTEM', 'E', 'RoleProbe', 'SUCCESS')",
            uuid.uuid4(),
        )
        assert await service.fetchval("SELECT count(*) FROM audit_event WHERE resource_type = 'RoleProbe'") == 1


@on_postgres
async def test_the_app_serves_and_audits_through_the_service_role(roles: Roles) -> None:
    settings = settings_for(roles.service_url)
    clock = ManualClock(START)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        with use_database(app.state.database):
            tokens = await signed_in_tokens(settings, clock)
            thread = await MessageThread.get(patient__user__email="alex@demo.test")
            assert await serving_role_problems() == []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            panel = await gql(
                client,
                "query Panel { patients(first: 10) { edges { node { givenName } } } }",
                token=tokens.user("dr.rivera@demo.test"),
            )
            sent = await gql(
                client,
                "mutation($input: SendMessageInput!) { sendMessage(input: $input) { result { __typename } } }",
                {"input": {"threadId": str(relay.GlobalID("MessageThread", str(thread.id))), "body": "Slept well"}},
                token=tokens.user("alex@demo.test"),
            )
    assert [edge["node"]["givenName"] for edge in panel["data"]["patients"]["edges"]] == ["Blair", "Alex"]
    assert sent["data"]["sendMessage"]["result"]["__typename"] == "Message"
    async with connected(roles.service_url) as service:
        written = await service.fetch(
            "SELECT actor_label, action, resource_type FROM audit_event WHERE operation = 'Panel' OR action = 'C'"
        )
    assert {(row["actor_label"], row["action"], row["resource_type"]) for row in written} >= {
        ("dr.rivera@demo.test", "R", "Patient"),
        ("alex@demo.test", "C", "Message"),
    }


@on_postgres
async def test_serving_as_a_superuser_or_as_the_owner_is_reported_as_unguarded(roles: Roles) -> None:
    for url, problem in (
        (as_administrator(roles.service_url), "is a superuser"),
        (roles.owner_url, f"{roles.owner} owns audit_event"),
    ):
        async with open_database(settings_for(url)):
            problems = await serving_role_problems()
        assert any(problem in text for text in problems), problems


@on_postgres
async def test_tables_of_later_migrations_are_granted_and_migrate_restores_the_audit_restriction(
    own_roles: Roles,
) -> None:
    async with connected(own_roles.owner_url) as owner:
        # What a later migration does: a new table; and one that rebuilt the audit table, whose
        # new grants came from the default privileges (everything).
        await owner.execute("CREATE TABLE later_feature (id integer PRIMARY KEY)")
        await owner.execute(f'GRANT UPDATE, DELETE, TRUNCATE ON audit_event TO "{own_roles.service}"')
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert await may(owner, own_roles.service, privilege, "later_feature"), privilege

        migrated = ketafollow("migrate", **own_roles.environment())
        assert migrated.returncode == 0, migrated.stderr
        assert f"granted {own_roles.service}" in migrated.stdout
        for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
            assert not await may(owner, own_roles.service, privilege, "audit_event"), privilege
        assert not await may(owner, own_roles.service, "INSERT", "tortoise_migrations")
        foreign_owners = await owner.fetch(
            "SELECT relname, pg_get_userbyid(relowner) AS owner FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S') AND relowner <> $1::regrole",
            own_roles.owner,
        )
    assert foreign_owners == []


@on_postgres
def test_setup_roles_again_changes_nothing_and_refuses_a_superuser_as_service_role(own_roles: Roles) -> None:
    again = ketafollow("setup-roles", **own_roles.environment())
    assert again.returncode == 0, again.stderr
    superuser = urlsplit(TEST_DATABASE_URL).username or "postgres"
    refused = ketafollow(
        "setup-roles", **{**own_roles.environment(), "DATABASE_URL": as_user(own_roles.service_url, superuser, "x")}
    )
    assert refused.returncode == 1
    assert f"role {superuser} is a superuser" in refused.stderr


def test_one_database_url_still_serves_and_migrates_when_no_owner_role_is_set() -> None:
    for url in ("sqlite://var/ketafollow.sqlite3", "postgres://app@db:5432/ketafollow"):
        settings = Settings.from_env({"KETAFOLLOW_ENV": "development", "DATABASE_URL": url}, env_file=None)
        assert settings.migration_url == settings.database_url == url


SERVICE = "postgres://app@db:5432/ketafollow"


@pytest.mark.parametrize(
    ("database_url", "migration_database_url", "problem"),
    [
        ("sqlite://var/ketafollow.sqlite3", "postgres://owner@db:5432/ketafollow", "SQLite has no roles"),
        (SERVICE, "postgres://owner@db:5432/other", "the same host, port and database"),
        (SERVICE, "postgres://owner@db:6543/ketafollow", "the same host, port and database"),
        (SERVICE, "postgres://owner@elsewhere:5432/ketafollow", "the same host, port and database"),
        (SERVICE, "postgres://db:5432/ketafollow", "must each name their user"),
        (SERVICE, SERVICE, "another user than DATABASE_URL"),
        (SERVICE, "mysql://owner@db:5432/ketafollow", "must start with postgres://"),
    ],
)
def test_the_owner_roles_url_names_the_same_postgresql_database_as_another_user(
    database_url: str, migration_database_url: str, problem: str
) -> None:
    environment = {"DATABASE_URL": database_url, "MIGRATION_DATABASE_URL": migration_database_url}
    with pytest.raises(SettingsError, match="MIGRATION_DATABASE_URL") as refused:
        Settings.from_env(environment, env_file=None)
    assert problem in str(refused.value)


def test_with_an_owner_role_migrate_connects_as_it_and_the_service_as_the_other() -> None:
    owner_url = "postgres://owner:pw@db:5432/ketafollow"
    settings = Settings.from_env(
        {"KETAFOLLOW_ENV": "development", "DATABASE_URL": SERVICE, "MIGRATION_DATABASE_URL": owner_url}, env_file=None
    )
    assert settings.migration_url == owner_url
    assert settings.database_url == SERVICE


def test_setup_roles_on_sqlite_says_the_files_permissions_are_the_boundary(tmp_path: Path) -> None:
    refused = ketafollow("setup-roles", DATABASE_URL=f"sqlite://{tmp_path}/k.sqlite3")
    assert refused.returncode == 2
    assert "SQLite has no roles" in refused.stderr
    assert "permissions are the boundary" in refused.stderr
