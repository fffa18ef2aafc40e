"""The `ketafollow` command: serve the API, run the jobs, migrate, seed, and manage accounts.

Every command reads the same settings as the server (environment variables and `.env`), so
`DATABASE_URL=postgres://… ketafollow migrate` migrates the database the server will use. This
module parses the command line; the commands are in `api.commands` (running the service, accounts).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date

from api.commands import accounts, service
from api.settings import Settings, SettingsError
from models.identity.accounts import API_SCOPES, Role

EXAMPLES = """\
examples:
  ketafollow migrate && ketafollow seed && ketafollow serve     what `make run` does
  ketafollow serve --port 8765                                  another port
  ketafollow worker                                             the jobs without the API
  ketafollow export-schema --check                              is schema.graphql current?
  ADMIN_DATABASE_URL=postgres://postgres@db:5432 ketafollow setup-roles
                                   PostgreSQL: create the owner and service roles (docs/deployment.md)
  ketafollow create-user --email admin@clinic.example --role ADMIN       the first admin
  ketafollow create-care-team --by admin@clinic.example North
  ketafollow create-user --email dr.lee@clinic.example --role PROVIDER \\
      --given-name Ana --family-name Lee --time-zone America/Chicago --care-team North
  ketafollow invite --by admin@clinic.example --email robin@example.org --role PATIENT \\
      --given-name Robin --family-name Quill --birth-date 1984-03-09 --time-zone America/New_York --care-team North
  ketafollow create-client --by admin@clinic.example --client-id acme-ehr --name "Acme EHR" \\
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
    serve.set_defaults(handler=service.serve)

    worker = commands.add_parser("worker", help="run the scheduled jobs only, without the API")
    worker.set_defaults(handler=service.worker)

    migrate_command = commands.add_parser(
        "migrate", help="apply pending database migrations (as MIGRATION_DATABASE_URL's role when set)"
    )
    migrate_command.set_defaults(handler=service.migrate_command)

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
    roles.set_defaults(handler=service.setup_roles)

    seed = commands.add_parser("seed", help="load instruments and demo data (idempotent; demo data not in production)")
    seed.set_defaults(handler=service.seed)

    export = commands.add_parser("export-schema", help="write the GraphQL schema (SDL)")
    export.add_argument(
        "--output", default="schema.graphql", help="file to write (default: schema.graphql; - for stdout)"
    )
    export.add_argument("--check", action="store_true", help="exit 1 if the file differs from the code, write nothing")
    export.set_defaults(handler=service.export_schema)

    team = commands.add_parser(
        "create-care-team",
        help="create a care team (the operation createCareTeam calls)",
        description="Create a care team as the admin named by --by (audited). A name already taken, "
        "whatever its case, exits 2.",
    )
    team.add_argument("name")
    team.add_argument("--by", required=True, help="the e-mail of the admin who creates it")
    team.set_defaults(handler=accounts.create_care_team)

    user = commands.add_parser(
        "create-user",
        help="create a patient, provider or admin account",
        description="Create an account. The password is asked for on the terminal, or read from "
        "standard input with --password-stdin (never pass it as an argument: it would show in `ps`).",
    )
    user.add_argument("--email", required=True)
    user.add_argument("--role", required=True, choices=[r.value for r in Role], type=str.upper)
    user.add_argument("--given-name", default="")
    user.add_argument("--family-name", default="")
    user.add_argument("--time-zone", default="UTC", help="IANA zone, e.g. America/New_York")
    user.add_argument("--birth-date", type=date.fromisoformat, help="patients: YYYY-MM-DD")
    user.add_argument("--phone")
    user.add_argument("--care-team", action="append", default=[], help="patients: exactly one; providers: any number")
    user.add_argument("--npi", help="providers: 10-digit National Provider Identifier")
    user.add_argument("--credentials", default="", help="providers: e.g. MD, NP, PA-C")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    user.set_defaults(handler=accounts.create_user)

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
    invite.set_defaults(handler=accounts.invite)

    client = commands.add_parser(
        "create-client",
        help="register an EHR client (prints its secret once)",
        description="Register an EHR integration as the admin named by --by (audited; the operation "
        "registerApiClient calls). Its secret is generated, printed once and stored hashed.",
    )
    client.add_argument("--by", required=True, help="the e-mail of the admin who registers it")
    client.add_argument("--client-id", required=True)
    client.add_argument("--name", required=True)
    client.add_argument(
        "--scope",
        action="append",
        default=[],
        help=f"repeat for each: {', '.join(sorted(API_SCOPES))}",
    )
    client.add_argument("--care-team", action="append", default=[], help="whose patients it may see (repeat)")
    client.set_defaults(handler=accounts.create_client)

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
    deactivate.set_defaults(handler=accounts.deactivate_user)

    reactivate = commands.add_parser("reactivate-user", help="let a deactivated account sign in again")
    reactivate.add_argument("--by", required=True, help="the e-mail of the admin who reactivates")
    reactivate.add_argument("--email", required=True)
    reactivate.set_defaults(handler=accounts.reactivate_user)

    rotate = commands.add_parser(
        "rotate-client-secret",
        help="a new secret for an EHR client (printed once); the old one and its tokens stop at once",
    )
    rotate.add_argument("--by", required=True, help="the e-mail of the admin who rotates it")
    rotate.add_argument("--client-id", required=True)
    rotate.set_defaults(handler=accounts.rotate_client_secret)

    stop_client = commands.add_parser("deactivate-client", help="stop an EHR client: no sign-in, its tokens stop")
    stop_client.add_argument("--by", required=True, help="the e-mail of the admin who deactivates it")
    stop_client.add_argument("--client-id", required=True)
    stop_client.set_defaults(handler=accounts.deactivate_client)
    reset_totp = commands.add_parser(
        "reset-totp",
        help="turn off a user's second factor (a lost phone) and end their logins",
        description="Remove a user's TOTP secret and recovery codes and end every login of theirs; they sign "
        "in with their password again (and enrol a new factor where MFA_REQUIRED_ROLES names their role).",
    )
    reset_totp.add_argument("email")
    reset_totp.set_defaults(handler=accounts.reset_totp)
    return parser


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
