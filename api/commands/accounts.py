"""Account commands: care teams, users and invitations, EHR clients, deactivation, a lost second
factor. Each opens the database, does one operation of `models/` as an admin would (audited), and
prints what it did."""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable

from api.auth.passwords import ARGON2, hash_password
from api.commands.service import run_with_database
from api.database import ensure_migrated
from api.settings import Settings
from models.identity import accounts, administration, totp
from models.identity.access import Viewer
from models.identity.passwords import password_problem
from models.kernel.clock import SystemClock
from models.kernel.errors import Conflict, DomainError


def create_care_team(settings: Settings, args: argparse.Namespace) -> int:
    """`createCareTeam` from a shell, as the admin named by --by; a taken name exits 2."""

    async def act(viewer: Viewer) -> int:
        try:
            team = await administration.create_care_team(viewer, args.name, now=SystemClock().now())
        except Conflict as error:
            print(f"ketafollow: {error.message}", file=sys.stderr)
            return 2
        print(f"created care team {team.name} ({team.id})")
        return 0

    return _run_as(settings, args.by, "create-care-team", act)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("ketafollow: the two passwords differ")
    return first


def create_user(settings: Settings, args: argparse.Namespace) -> int:
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

    return run_with_database(settings, work)


def invite(settings: Settings, args: argparse.Namespace) -> int:
    from models.identity import enrolment

    role = accounts.Role(args.role)
    if role is accounts.Role.PATIENT and (len(args.care_team) != 1 or args.birth_date is None):
        print("ketafollow: a patient needs exactly one --care-team and a --birth-date", file=sys.stderr)
        return 2

    async def act(viewer: Viewer) -> int:
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

    return _run_as(settings, args.by, "invite", act)


def create_client(settings: Settings, args: argparse.Namespace) -> int:
    """`registerApiClient` from a shell, as the admin named by --by (care teams by name)."""

    async def act(viewer: Viewer) -> int:
        team_ids = []
        for name in args.care_team:
            team = await accounts.CareTeam.get_or_none(name=name)
            if team is None:
                print(f"ketafollow: no care team named {name!r}", file=sys.stderr)
                return 2
            team_ids.append(team.id)
        registered = await administration.register_api_client(
            viewer, args.client_id, args.name, tuple(args.scope), tuple(team_ids),
            now=SystemClock().now(), hashing=ARGON2,
        )  # fmt: skip
        client = registered.client
        print(f"created API client {client.client_id} with scopes {' '.join(client.scopes) or '(none)'}")
        print(f"client secret (shown once, store it now): {registered.secret}")
        return 0

    return _run_as(settings, args.by, "create-client", act)


def _run_as(settings: Settings, by: str, operation: str, act: Callable[[Viewer], Awaitable[int]]) -> int:
    """Run `act` as the active account `by` (the operation itself refuses whom it must). Its audit
    trail is written however `act` ends, as a request's is: a refusal is audited too."""
    from models.identity.access import load_user_viewer
    from models.kernel.audit import AuditTrail

    async def work() -> int:
        await ensure_migrated()
        account = await accounts.User.get_or_none(email=by.strip().lower(), is_active=True)
        viewer = await load_user_viewer(account.id, AuditTrail(operation=f"CLI {operation}")) if account else None
        if viewer is None:
            print(f"ketafollow: no active account {by}", file=sys.stderr)
            return 1
        try:
            return await act(viewer)
        finally:
            await viewer.audit.flush(viewer, SystemClock().now())

    return run_with_database(settings, work)


async def _user_id(email: str) -> uuid.UUID:
    user = await accounts.User.get_or_none(email=email.strip().lower())
    if user is None:
        raise DomainError(f"no account {email}")
    return user.id


def deactivate_user(settings: Settings, args: argparse.Namespace) -> int:
    async def act(viewer: Viewer) -> int:
        user, ended = await administration.deactivate_user(
            viewer, await _user_id(args.email), args.reason, now=SystemClock().now()
        )
        print(f"deactivated {user.email}: {len(ended)} login(s) ended (serving replicas close their sockets)")
        return 0

    return _run_as(settings, args.by, "deactivate-user", act)


def reactivate_user(settings: Settings, args: argparse.Namespace) -> int:
    async def act(viewer: Viewer) -> int:
        user = await administration.reactivate_user(viewer, await _user_id(args.email), now=SystemClock().now())
        print(f"reactivated {user.email}")
        return 0

    return _run_as(settings, args.by, "reactivate-user", act)


def rotate_client_secret(settings: Settings, args: argparse.Namespace) -> int:
    async def act(viewer: Viewer) -> int:
        rotated = await administration.rotate_api_client_secret(
            viewer, args.client_id, now=SystemClock().now(), hashing=ARGON2
        )
        print(f"rotated the secret of {rotated.client.client_id}; the old one and its tokens no longer work")
        print(f"client secret (shown once, store it now): {rotated.secret}")
        return 0

    return _run_as(settings, args.by, "rotate-client-secret", act)


def deactivate_client(settings: Settings, args: argparse.Namespace) -> int:
    async def act(viewer: Viewer) -> int:
        client = await administration.deactivate_api_client(viewer, args.client_id, now=SystemClock().now())
        print(f"deactivated API client {client.client_id}")
        return 0

    return _run_as(settings, args.by, "deactivate-client", act)


def reset_totp(settings: Settings, args: argparse.Namespace) -> int:
    async def work() -> int:
        await ensure_migrated()
        ended = await totp.reset(args.email, now=SystemClock().now())
        print(f"second factor of {args.email.strip().lower()} reset; {ended} login(s) ended")
        return 0

    return run_with_database(settings, work)
