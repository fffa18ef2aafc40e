"""The `ketafollow` command: serve the API, run the jobs, migrate, seed, and manage accounts.

Every command reads the same settings as the server (environment variables and `.env`), so
`DATABASE_URL=postgres://… ketafollow migrate` migrates the database the server will use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from api.auth.passwords import ARGON2, hash_password
from api.database import DatabaseNotMigrated, ensure_migrated, migrate, open_database
from api.database_roles import Login, RoleSetupError, grant_after_migrate, serving_role_problems
from api.log import configure_logging
from api.settings import Settings, SettingsError, exposure_problems
from models.identity import accounts, administration, totp
from models.identity.access import Viewer
from models.identity.passwords import password_problem
from models.kernel.clock import SystemClock
from models.kernel.errors import DomainError
from seeds.loader import Demo, SeedReport, load_seeds

EXAMPLES = """\
examples:
  ketafollow migrate && ketafollow seed && ketafollow serve     what `make run` does
  ketafollow serve --port 8765                                  another port
  ketafollow worker                                             the jobs without the API
  ketafollow export-schema --check                              is schema.graphql current?
  ADMIN_DATABASE_URL=postgres://postgres@db:5432 ketafollow setup-roles
                                   PostgreSQL: create the owner and service roles (docs/deployment.md)
  ketafollow create-care-team North
  ketafollow create-user --email dr.lee@clinic.example --role PROVIDER \\
      --given-name Ana --family-name Lee --time-zone America/Chicago --care-team North
  ketafollow invite --by admin@clinic.example --email robin@example.org --role PATIENT \\
      --given-name Robin --family-name Quill --birth-date 1984-03-09 --time-zone America/New_York --care-team North
  ketafollow create-client --client-id acme-ehr --name "Acme EHR" \\
      --scope patients:read --scope clinical:read --care-team North
  ketafollow deactivate-user --by admin@clinic.example --email dr.lee@clinic.example --reason "left the clinic"
  ketafollow rotate-client-secret --by admin@clinic.example --client-id acme-ehr
  ketafollow reset-totp dr.lee@clinic.example                   a lost phone: the second factor off

configuration comes from environment variables (and a .env file in the working directory):
  KETAFOLLOW_ENV  development | production     DATABASE_URL  sqlite://var/ketafollow.sqlite3 | postgres://…
  MIGRATION_DATABASE_URL  PostgreSQL: the owner role `migrate` runs as (DATABASE_URL: the service role)
  SECRET_KEY      required in production       HOST / PORT   where `serve` listens
  unset KETAFOLLOW_ENV means a development machine: loopback and SQLite only
see docs/configuration.md for the full list.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"ketafollow: {error}", file=sys.stderr)
        return 2
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ketafollow",
        description="ketafollow: the GraphQL back end for at-home ketamine therapy follow-up.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the API (refuses an unmigrated database)")
    serve.add_argument("--host", help="address to listen on (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: PORT or 8000)")
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run the scheduled jobs only, without the API")
    worker.set_defaults(handler=_worker)

    migrate_command = commands.add_parser(
        "migrate", help="apply pending database migrations (as MIGRATION_DATABASE_URL's role when set)"
    )
    migrate_command.set_defaults(handler=_migrate)

    roles = commands.add_parser(
        "setup-roles",
        help="PostgreSQL: create the owner and service roles and grant them (idempotent)",
        description="Create (or update) the role of MIGRATION_DATABASE_URL, which owns the schema and "
        "runs the migrations, and the role of DATABASE_URL, which serves requests and may only INSERT "
        "and SELECT the audit log. Passwords are those of the URLs. Connects as an administrator "
        "(superuser, or CREATEROLE) given by --admin-url or ADMIN_DATABASE_URL, to DATABASE_URL's database.",
    )
    roles.add_argument(
        "--admin-url",
        help="e.g. postgres://postgres@127.0.0.1:5432 (default: ADMIN_DATABASE_URL; "
        "prefer it when the URL holds a password, which would show in `ps`)",
    )
    roles.set_defaults(handler=_setup_roles)

    seed = commands.add_parser("seed", help="load instruments and demo data (idempotent; demo data not in production)")
    seed.set_defaults(handler=_seed)

    export = commands.add_parser("export-schema", help="write the GraphQL schema (SDL)")
    export.add_argument(
        "--output", default="schema.graphql", help="file to write (default: schema.graphql; - for stdout)"
    )
    export.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code, write nothing")
    export.set_defaults(handler=_export_schema)

    team = commands.add_parser("create-care-team", help="create a care team (no-op if it exists)")
    team.add_argument("name")
    team.set_defaults(handler=_create_care_team)

    user = commands.add_parser(
        "create-user",
        help="create a patient, provider or admin account",
        description="Create an account. The password is asked for on the terminal, or read from "
        "standard input with --password-stdin (never pass it as an argument: it would show in `ps`).",
    )
    user.add_argument("--email", required=True)
    user.add_argument("--role", required=True, choices=[r.value for r in accounts.Role], type=str.upper)
    user.add_argument("--given-name", default="")
    user.add_argument("--family-name", default="")
    user.add_argument("--time-zone", default="UTC", help="IANA zone, e.g. America/New_York")
    user.add_argument("--birth-date", type=date.fromisoformat, help="patients: YYYY-MM-DD")
    user.add_argument("--phone")
    user.add_argument("--care-team", action="append", default=[], help="patients: exactly one; providers: any number")
    user.add_argument("--npi", help="providers: 10-digit National Provider Identifier")
    user.add_argument("--credentials", default="", help="providers: e.g. MD, NP, PA-C")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.set_defaults(handler=_create_user)

    invite = commands.add_parser(
        "invite",
        help="invite a patient or provider by e-mail (they choose their own password)",
        description="Invite someone as an admin (anyone) or a provider (patients of their own care teams), "
        "exactly like the invitePatient and inviteProvider mutations: the account is created inactive and "
        "an e-mail with a one-time link is queued (sent by the mail job of `serve` or `worker`).",
    )
    invite.add_argument("--by", required=True, help="the e-mail of the admin or provider who invites")
    invite.add_argument("--email", required=True)
    invite.add_argument("--role", required=True, choices=["PATIENT", "PROVIDER"], type=str.upper)
    invite.add_argument("--given-name", required=True)
    invite.add_argument("--family-name", required=True)
    invite.add_argument("--birth-date", type=date.fromisoformat, help="patients: YYYY-MM-DD")
    invite.add_argument("--time-zone", default="UTC", help="patients: IANA zone, e.g. America/New_York")
    invite.add_argument("--phone")
    invite.add_argument("--care-team", action="append", default=[], help="patients: exactly one; providers: any")
    invite.add_argument("--npi", help="providers: 10-digit National Provider Identifier")
    invite.add_argument("--credentials", default="", help="providers: e.g. MD, NP, PA-C")
    invite.set_defaults(handler=_invite)

    client = commands.add_parser(
        "create-client",
        help="register an EHR client (prints its secret once)",
        description="Register an EHR integration. Its secret is generated, printed once and stored hashed.",
    )
    client.add_argument("--client-id", required=True)
    client.add_argument("--name", required=True)
    client.add_argument(
        "--scope",
        action="append",
        default=[],
        help=f"repeat for each: {', '.join(sorted(accounts.API_SCOPES))}",
    )
    client.add_argument("--care-team", action="append", default=[], help="whose patients it may see (repeat)")
    client.set_defaults(handler=_create_client)

    # Administration: the operations of the API's admin mutations, run as the admin named by --by.
    deactivate = commands.add_parser(
        "deactivate-user",
        help="stop an account at once (what the deactivateUser mutation does)",
        description="Deactivate an account as the admin named by --by: its logins, tokens, sockets and push "
        "devices end at once, its records stay (docs/accounts.md, Administration).",
    )
    deactivate.add_argument("--by", required=True, help="the e-mail of the admin who deactivates")
    deactivate.add_argument("--email", required=True)
    deactivate.add_argument("--reason", required=True, help="why (kept in the audit log)")
    deactivate.set_defaults(handler=_deactivate_user)

    reactivate = commands.add_parser("reactivate-user", help="let a deactivated account sign in again")
    reactivate.add_argument("--by", required=True, help="the e-mail of the admin who reactivates")
    reactivate.add_argument("--email", required=True)
    reactivate.set_defaults(handler=_reactivate_user)

    rotate = commands.add_parser(
        "rotate-client-secret",
        help="a new secret for an EHR client (printed once); the old one and its tokens stop at once",
    )
    rotate.add_argument("--by", required=True, help="the e-mail of the admin who rotates it")
    rotate.add_argument("--client-id", required=True)
    rotate.set_defaults(handler=_rotate_client_secret)

    stop_client = commands.add_parser("deactivate-client", help="stop an EHR client: no sign-in, its tokens stop")
    stop_client.add_argument("--by", required=True, help="the e-mail of the admin who deactivates it")
    stop_client.add_argument("--client-id", required=True)
    stop_client.set_defaults(handler=_deactivate_client)
    reset_totp = commands.add_parser(
        "reset-totp",
        help="turn off a user's second factor (a lost phone) and end their logins",
        description="Remove a user's TOTP secret and recovery codes and end every login of theirs; they sign "
        "in with their password again (and enrol a new factor where MFA_REQUIRED_ROLES names their role).",
    )
    reset_totp.add_argument("email")
    reset_totp.set_defaults(handler=_reset_totp)
    return parser


def _run_with_database(settings: Settings, work: Callable[[], Awaitable[int]], *, serving: bool = True) -> int:
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


def _serve(settings: Settings, args: argparse.Namespace) -> int:
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
    if (status := _run_with_database(settings, check)) != 0:
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
    _watch_shutdown(server, settings.shutdown_timeout)
    # uvicorn handles SIGINT/SIGTERM itself: it stops accepting, finishes requests (for half of
    # SHUTDOWN_TIMEOUT_SECONDS, then cancels them), runs the lifespan exit (bounded, api.app).
    server.run()
    return 0 if server.started else 1


def _watch_shutdown(server: Any, shutdown_timeout: float) -> None:
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


def _worker(settings: Settings, args: argparse.Namespace) -> int:
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

    return _run_with_database(settings, work)


async def _warn_if_audit_log_unguarded() -> None:
    if problems := await serving_role_problems():
        logging.getLogger("ketafollow").warning(
            "the audit log is not protected from the role serving requests: %s (docs/deployment.md: PostgreSQL roles)",
            "; ".join(problems),
        )


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
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

    return _run_with_database(replace(settings, database_url=settings.migration_url), work, serving=False)


def _setup_roles(settings: Settings, args: argparse.Namespace) -> int:
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


def _seed(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        report = await seed_database(settings, now=SystemClock().now())
        print(report.describe())
        return 0

    return _run_with_database(settings, work)


def _export_schema(settings: Settings, args: argparse.Namespace) -> int:
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


def _create_care_team(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        team = await accounts.ensure_care_team(args.name)
        print(f"care team {team.name} ({team.id})")
        return 0

    return _run_with_database(settings, work)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("ketafollow: the two passwords differ")
    return first


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    role = accounts.Role(args.role)
    if role is accounts.Role.PATIENT and len(args.care_team) != 1:
        print("ketafollow: a patient needs exactly one --care-team", file=sys.stderr)
        return 2
    password = _read_password(args.password_stdin)
    if problem := password_problem(password, email=args.email, names=(args.given_name, args.family_name)):
        print(f"ketafollow: {problem}", file=sys.stderr)
        return 2
    data = accounts.NewUser(
        email=args.email,
        role=role,
        given_name=args.given_name,
        family_name=args.family_name,
        time_zone=args.time_zone,
        birth_date=args.birth_date,
        phone=args.phone,
        care_team=args.care_team[0] if role is accounts.Role.PATIENT else None,
        care_teams=tuple(args.care_team) if role is accounts.Role.PROVIDER else (),
        npi=args.npi,
        credentials=args.credentials,
    )

    async def work() -> int:
        await ensure_migrated()
        user = await accounts.create_user(
            data, password_hash=await hash_password(password), today=SystemClock().now().date()
        )
        print(f"created {user.role.value.lower()} {user.email} ({user.id})")
        return 0

    return _run_with_database(settings, work)


def _invite(settings: Settings, args: argparse.Namespace) -> int:
    from models.identity import enrolment
    from models.identity.access import load_user_viewer
    from models.kernel.audit import AuditTrail

    role = accounts.Role(args.role)
    if role is accounts.Role.PATIENT and (len(args.care_team) != 1 or args.birth_date is None):
        print("ketafollow: a patient needs exactly one --care-team and a --birth-date", file=sys.stderr)
        return 2

    async def work() -> int:
        await ensure_migrated()
        inviter = await accounts.User.get_or_none(email=args.by.strip().lower(), is_active=True)
        viewer = await load_user_viewer(inviter.id, AuditTrail(operation="CLI invite")) if inviter else None
        if viewer is None:
            print(f"ketafollow: no active account {args.by}", file=sys.stderr)
            return 1
        teams = []
        for name in args.care_team:
            team = await accounts.CareTeam.get_or_none(name=name)
            if team is None:
                raise DomainError(f"care team {name!r} not found")
            teams.append(team.id)
        now, app_url = SystemClock().now(), settings.mail.public_app_url
        if role is accounts.Role.PATIENT:
            patient = enrolment.PatientInvite(
                email=args.email, given_name=args.given_name, family_name=args.family_name,
                birth_date=args.birth_date, time_zone=args.time_zone, care_team_id=teams[0], phone=args.phone,
            )  # fmt: skip
            invitation = await enrolment.invite_patient(viewer, patient, now=now, app_url=app_url)
        else:
            provider = enrolment.ProviderInvite(
                email=args.email, given_name=args.given_name, family_name=args.family_name,
                care_team_ids=tuple(teams), npi=args.npi, credentials=args.credentials,
            )  # fmt: skip
            invitation = await enrolment.invite_provider(viewer, provider, now=now, app_url=app_url)
        print(f"invited {invitation.email} as {role.value.lower()} (invitation {invitation.id}, until "
              f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC); the e-mail leaves with the next mail job run")  # fmt: skip
        return 0

    return _run_with_database(settings, work)


def _create_client(settings: Settings, args: argparse.Namespace) -> int:
    secret = secrets.token_urlsafe(32)
    data = accounts.NewApiClient(
        client_id=args.client_id, name=args.name, scopes=tuple(args.scope), care_teams=tuple(args.care_team)
    )

    async def work() -> int:
        await ensure_migrated()
        client = await accounts.create_api_client(data, secret_hash=await hash_password(secret))
        print(f"created API client {client.client_id} with scopes {' '.join(client.scopes) or '(none)'}")
        print(f"client secret (shown once, store it now): {secret}")
        return 0

    return _run_with_database(settings, work)


async def _admin_viewer(by: str, operation: str) -> Viewer | None:
    """The viewer of the active account `by` (the operation itself refuses anyone but an admin)."""
    from models.identity.access import load_user_viewer
    from models.kernel.audit import AuditTrail

    account = await accounts.User.get_or_none(email=by.strip().lower(), is_active=True)
    viewer = await load_user_viewer(account.id, AuditTrail(operation=f"CLI {operation}")) if account else None
    if viewer is None:
        print(f"ketafollow: no active account {by}", file=sys.stderr)
    return viewer


async def _user_id(email: str) -> uuid.UUID:
    user = await accounts.User.get_or_none(email=email.strip().lower())
    if user is None:
        raise DomainError(f"no account {email}")
    return user.id


def _deactivate_user(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        viewer = await _admin_viewer(args.by, "deactivate-user")
        if viewer is None:
            return 1
        user, ended = await administration.deactivate_user(
            viewer, await _user_id(args.email), args.reason, now=SystemClock().now()
        )
        print(f"deactivated {user.email}: {len(ended)} login(s) ended (serving replicas close their sockets)")
        return 0

    return _run_with_database(settings, work)


def _reactivate_user(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        viewer = await _admin_viewer(args.by, "reactivate-user")
        if viewer is None:
            return 1
        user = await administration.reactivate_user(viewer, await _user_id(args.email), now=SystemClock().now())
        print(f"reactivated {user.email}")
        return 0

    return _run_with_database(settings, work)


def _rotate_client_secret(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        viewer = await _admin_viewer(args.by, "rotate-client-secret")
        if viewer is None:
            return 1
        rotated = await administration.rotate_api_client_secret(
            viewer, args.client_id, now=SystemClock().now(), hashing=ARGON2
        )
        print(f"rotated the secret of {rotated.client.client_id}; the old one and its tokens no longer work")
        print(f"client secret (shown once, store it now): {rotated.secret}")
        return 0

    return _run_with_database(settings, work)


def _deactivate_client(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        viewer = await _admin_viewer(args.by, "deactivate-client")
        if viewer is None:
            return 1
        client = await administration.deactivate_api_client(viewer, args.client_id, now=SystemClock().now())
        print(f"deactivated API client {client.client_id}")
        return 0

    return _run_with_database(settings, work)


def _reset_totp(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        ended = await totp.reset(args.email, now=SystemClock().now())
        print(f"second factor of {args.email.strip().lower()} reset; {ended} login(s) ended")
        return 0

    return _run_with_database(settings, work)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
