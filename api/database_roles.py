"""PostgreSQL roles: the migrations run as an owner role, the service as a role that cannot rewrite
the audit log.

The audit log's append-only triggers (migration 0002) stop UPDATE, DELETE and TRUNCATE, but the
owner of a table may drop or disable its triggers. So the role that serves requests must not own
anything: it reads and writes the other tables, and may only INSERT and SELECT `audit_event`
(45 CFR 164.312(b)). The owner role is used by `ketafollow migrate` alone (MIGRATION_DATABASE_URL).

`ketafollow setup-roles` (an administrator's connection) creates both roles, hands every existing
object of the schema to the owner and grants the service role its privileges, with default
privileges so tables created by later migrations are granted too; `ketafollow migrate` re-applies
the grants after migrating, which restores the audit log's restriction if a migration rebuilt it.
Both refuse to finish while the service role could still rewrite the log (`audit_guard_problems`).

SQLite has no roles: there the database file's permissions are the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
from tortoise.connection import get_connection

SCHEMA = "public"
# The service role may only add rows and read them.
APPEND_ONLY_TABLES = ("audit_event",)
# The service role may only read them: only `ketafollow migrate` records a migration.
READ_ONLY_TABLES = ("tortoise_migrations",)
# Privileges that would let a role change or remove audit rows, or hang a trigger of its own on them.
_FORBIDDEN_ON_AUDIT = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES")
_POSTGRES_SCHEMES = {"postgres", "postgresql"}


class RoleSetupError(Exception):
    """The roles cannot be set up as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Login:
    """A role and the password it signs in with (None: the server does not ask, e.g. trust or peer)."""

    name: str
    password: str | None

    @classmethod
    def from_url(cls, url: str, variable: str) -> Login:
        parts = urlsplit(url)
        if parts.scheme not in _POSTGRES_SCHEMES or not parts.username:
            raise RoleSetupError(f"{variable} must be a postgres:// URL naming its user (role)")
        return cls(unquote(parts.username), unquote(parts.password) if parts.password is not None else None)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def admin_dsn(admin_url: str, database_url: str) -> str:
    """The administrator's connection (`admin_url`: user, password, host) to DATABASE_URL's database."""
    admin = urlsplit(admin_url)
    if admin.scheme not in _POSTGRES_SCHEMES:
        raise RoleSetupError("the administrator's URL must start with postgres://")
    return urlunsplit(("postgresql", admin.netloc, urlsplit(database_url).path, admin.query, ""))


async def setup_roles(admin: asyncpg.Connection, owner: Login, service: Login) -> None:
    """Create (or update) the two roles in `admin`'s database and give each what it needs.

    Idempotent. `admin` is a superuser, or a role with CREATEROLE that is a member of the roles
    owning the schema's objects today. Raises `RoleSetupError` when the result would leave the audit
    log open to the service role.
    """
    if owner.name == service.name:
        raise RoleSetupError("the owner role and the service role must be two roles")
    database = await admin.fetchval("SELECT current_database()")
    async with admin.transaction():
        for login in (owner, service):
            await _ensure_login(admin, login)
        owner_id, service_id = quote_identifier(owner.name), quote_identifier(service.name)
        await admin.execute(f"GRANT CONNECT ON DATABASE {quote_identifier(database)} TO {owner_id}, {service_id}")
        # Only the owner creates objects (PostgreSQL before 15 lets every role create in `public`).
        await admin.execute(f"REVOKE CREATE ON SCHEMA {SCHEMA} FROM PUBLIC, {service_id}")
        await admin.execute(f"GRANT USAGE, CREATE ON SCHEMA {SCHEMA} TO {owner_id}")
        await _hand_objects_to(admin, owner.name)
        await grant_service_privileges(admin, owner=owner.name, service=service.name)
        problems = await audit_guard_problems(admin, service.name)
        if problems:
            raise RoleSetupError("the service role could still rewrite the audit log: " + "; ".join(problems))


async def _ensure_login(admin: asyncpg.Connection, login: Login) -> None:
    role = await admin.fetchrow(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = $1",
        login.name,
    )
    if role is not None and (role["rolsuper"] or role["rolcreaterole"]):
        raise RoleSetupError(
            f"role {login.name} is a superuser or may create roles: use an ordinary role for the "
            "application (the administrator's URL is only for `ketafollow setup-roles`)"
        )
    verb = "CREATE ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE LOGIN" if role is None else "ALTER ROLE %I LOGIN"
    if login.password is None:
        statement = await admin.fetchval(f"SELECT format('{verb}', $1::text)", login.name)
    else:  # quoted by the server (format's %L), never by us
        statement = await admin.fetchval(
            f"SELECT format('{verb} PASSWORD %L', $1::text, $2::text)", login.name, login.password
        )
    await admin.execute(statement)


async def _hand_objects_to(admin: asyncpg.Connection, owner: str) -> None:
    """Make `owner` the owner of every table, view, sequence and function of the schema.

    Sequences that belong to a table follow it; objects of extensions keep their owner.
    """
    relations = await admin.fetch(
        """
        SELECT c.oid::regclass::text AS name, c.relkind::text AS relkind
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND pg_get_userbyid(c.relowner) <> $2
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
        ORDER BY c.relkind = 'S', c.oid
        """,
        SCHEMA,
        owner,
    )
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    for relation in relations:
        await admin.execute(f"ALTER {kinds[relation['relkind']]} {relation['name']} OWNER TO {quote_identifier(owner)}")
    functions = await admin.fetch(
        """
        SELECT p.oid::regprocedure::text AS signature
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
        """,
        SCHEMA,
        owner,
    )
    for function in functions:
        await admin.execute(f"ALTER ROUTINE {function['signature']} OWNER TO {quote_identifier(owner)}")


async def grant_service_privileges(connection: asyncpg.Connection, *, owner: str, service: str) -> None:
    """Give `service` what serving needs on every table of `owner`'s (now and, by default
    privileges, later ones), then take back all but INSERT and SELECT on the audit log."""
    service_id = quote_identifier(service)
    owner_id = quote_identifier(owner)
    await connection.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {service_id}")
    await connection.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_id} IN SCHEMA {SCHEMA} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {service_id}"
    )
    await connection.execute(
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_id} IN SCHEMA {SCHEMA} "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {service_id}"
    )
    await connection.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {SCHEMA} TO {service_id}")
    await connection.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {service_id}")
    for tables, privileges in ((APPEND_ONLY_TABLES, "SELECT, INSERT"), (READ_ONLY_TABLES, "SELECT")):
        for table in tables:
            if await _table_exists(connection, table):
                qualified = f"{SCHEMA}.{quote_identifier(table)}"
                await connection.execute(f"REVOKE ALL ON {qualified} FROM PUBLIC, {service_id}")
                await connection.execute(f"GRANT {privileges} ON {qualified} TO {service_id}")


async def audit_guard_problems(connection: asyncpg.Connection, role: str) -> list[str]:
    """Ways `role` could change or erase audit rows; empty when it may only add and read them
    (or when the audit log does not exist yet)."""
    if not await _table_exists(connection, "audit_event"):
        return []
    table = f"{SCHEMA}.audit_event"
    facts = await connection.fetchrow(
        """
        SELECT r.rolsuper, r.rolcreaterole,
               pg_has_role(r.oid, c.relowner, 'USAGE') AS acts_as_owner,
               pg_get_userbyid(c.relowner) AS owner
        FROM pg_roles r, pg_class c
        WHERE r.rolname = $1 AND c.oid = $2::regclass
        """,
        role,
        table,
    )
    if facts is None:
        return [f"role {role} does not exist: run `ketafollow setup-roles`"]
    if facts["rolsuper"]:
        return [f"{role} is a superuser"]  # which may do anything
    problems = []
    if facts["rolcreaterole"]:
        problems.append(f"{role} may create roles (and so grant itself the owner's)")
    if facts["acts_as_owner"]:
        problems.append(f"{role} owns audit_event (as {facts['owner']}) and could drop its append-only triggers")
    for privilege in _FORBIDDEN_ON_AUDIT:
        if await connection.fetchval("SELECT has_table_privilege($1, $2::regclass, $3)", role, table, privilege):
            problems.append(f"{role} may {privilege} audit_event")
    return problems


async def _table_exists(connection: asyncpg.Connection, table: str) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.{table}"))


async def grant_after_migrate(service: str) -> list[str]:
    """Run by `ketafollow migrate` as the owner role: re-grant the service role (tables a migration
    created or rebuilt), then return what is still wrong (empty when the audit log is guarded)."""
    async with get_connection("default").acquire_connection() as connection:
        if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", service):
            return [f"role {service} does not exist: run `ketafollow setup-roles` first"]
        owner = await connection.fetchval("SELECT current_user")
        async with connection.transaction():
            await grant_service_privileges(connection, owner=owner, service=service)
        return await audit_guard_problems(connection, service)


async def serving_role_problems() -> list[str]:
    """On PostgreSQL, the ways the role this process serves as could rewrite the audit log."""
    database = get_connection("default")
    if database.capabilities.dialect != "postgres":
        return []
    async with database.acquire_connection() as connection:
        return await audit_guard_problems(connection, await connection.fetchval("SELECT current_user"))
