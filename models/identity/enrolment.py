"""Enrolment without a shell: invitations and their activation (PRODUCT.md capability 11).

An admin invites anyone; a provider invites patients into their own care teams. The invitee gets
an e-mail (models.notifications.mail, queued in the same transaction) with a one-time link and sets their own
password, so no one else ever chooses or sees it. Link tokens are 256 random bits, stored as their
SHA-256 only, valid 7 days, single use; resending replaces the token, so the old link stops.

The account is created at once, inactive and without a usable password, so the care team sees
the patient in its panel; activation turns it on.

No account oracle: inviting an address that already has an account answers exactly like any
other invitation (an `Invitation`, one e-mail queued), but the e-mail tells the owner they already
have an account, and the invitation's token can never activate anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

from tortoise import fields
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.identity.access import Viewer
from models.identity.accounts import CareTeam, NewUser, Patient, Provider, Role, User, create_user, normalise_email
from models.identity.bearer_tokens import hash_token, new_token
from models.identity.passwords import password_problem
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, denied, record_now
from models.kernel.errors import DomainError, Forbidden, InvalidInput, NotFound
from models.notifications.mail import queue_mail

INVITATION_LIFETIME = timedelta(days=7)
# A stored hash that no password matches: the account cannot sign in before activation.
NO_PASSWORD = "!invited"  # noqa: S105 - not a hash: matches nothing

PasswordHasher = Callable[[str], Awaitable[str]]


class Invitation(Model):
    id = fields.UUIDField(primary_key=True)
    email = fields.CharField(max_length=254, db_index=True)
    role = fields.CharEnumField(Role, max_length=16)
    # None when the address already had an account: then the e-mail is a notice, not a link.
    user: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "ketafollow.User", related_name="invitations", null=True, on_delete=fields.RESTRICT
    )
    # The team a patient joins: a provider manages the invitations of their own teams.
    care_team_id = fields.UUIDField(null=True)
    invited_by_id = fields.UUIDField()
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    accepted_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "invitation"


class InvalidLinkToken(DomainError):
    """The link's token is unknown, used, revoked or expired: all the same answer."""

    def __init__(self) -> None:
        super().__init__("the link is invalid or has expired")


class WeakPassword(DomainError):
    """The new password breaks NIST SP 800-63B's rules (models.identity.passwords); the message says which."""


@dataclass(frozen=True)
class PatientInvite:
    email: str
    given_name: str
    family_name: str
    birth_date: date
    time_zone: str
    care_team_id: UUID
    phone: str | None = None


@dataclass(frozen=True)
class ProviderInvite:
    email: str
    given_name: str
    family_name: str
    care_team_ids: tuple[UUID, ...]
    npi: str | None = None
    credentials: str = ""
    time_zone: str = "UTC"


def _link(app_url: str, path: str, token: str) -> str:
    return f"{app_url.rstrip('/')}/{path}?token={token}"


INVITATION_SUBJECT = "Your ketafollow account"


def invitation_body(link: str | None, app_url: str) -> str:
    """The e-mail: one sentence and one link, nothing about health or the person."""
    if link is None:
        return (
            "Someone asked to invite this address to ketafollow, but it already has an account.\n\n"
            "If you forgot your password, you can set a new one from the sign-in page:\n"
            f"{app_url.rstrip('/')}/password-reset\n"
        )
    return (
        "You are invited to ketafollow. Choose your password here (the link works once, for 7 days):\n\n"
        f"{link}\n\nIf you did not expect this e-mail, ignore it.\n"
    )


def _ensure_may_invite(viewer: Viewer, role: Role) -> None:
    if viewer.is_role(Role.ADMIN):
        return
    if viewer.is_role(Role.PROVIDER) and role is Role.PATIENT:
        return
    who = "admins" if role is Role.PROVIDER else "admins and providers"
    raise denied(viewer, Forbidden(f"only {who} may invite a {role.value.lower()}"), AuditAction.CREATE, "Invitation")


async def _team_in_reach(viewer: Viewer, team_id: UUID) -> CareTeam:
    team = await CareTeam.get_or_none(id=team_id)
    if team is None or (not viewer.is_role(Role.ADMIN) and team_id not in viewer.care_team_ids):
        raise NotFound("care team")
    return team


async def _issue(
    viewer: Viewer, data: NewUser, care_team_id: UUID | None, *, now: datetime, app_url: str, today: date
) -> Invitation:
    email = normalise_email(data.email)
    token, token_hash = new_token()
    async with in_transaction():
        existing = await User.exists(email=email)
        user = None if existing else await create_user(data, password_hash=NO_PASSWORD, today=today, active=False)
        invitation = await Invitation.create(
            email=email,
            role=data.role,
            user=user,
            care_team_id=care_team_id,
            invited_by_id=viewer.id,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + INVITATION_LIFETIME,
        )
        link = None if existing else _link(app_url, "activate", token)
        await queue_mail(email, INVITATION_SUBJECT, invitation_body(link, app_url), now=now)
        await _audit(viewer, invitation, now, f"invited {email} as {data.role.value}")
    return invitation


async def _audit(viewer: Viewer, invitation: Invitation, now: datetime, detail: str) -> None:
    patient_id = None
    if invitation.user_id is not None and invitation.role is Role.PATIENT:  # type: ignore[attr-defined]
        patient_id = await Patient.filter(user_id=invitation.user_id).first().values_list("id", flat=True)  # type: ignore[attr-defined]
    entry = AuditEntry(
        AuditAction.CREATE if detail.startswith("invited") else AuditAction.UPDATE,
        "Invitation",
        AuditOutcome.SUCCESS,
        patient_id=patient_id,  # type: ignore[arg-type]
        resource_id=str(invitation.id),
        detail=detail[:200],
    )
    await record_now(viewer, entry, now=now, trail=viewer.audit)


async def invite_patient(viewer: Viewer, data: PatientInvite, *, now: datetime, app_url: str) -> Invitation:
    """Invite a patient into a care team: their record exists at once, their password is theirs."""
    _ensure_may_invite(viewer, Role.PATIENT)
    team = await _team_in_reach(viewer, data.care_team_id)
    new = NewUser(
        email=data.email, role=Role.PATIENT, given_name=data.given_name, family_name=data.family_name,
        time_zone=data.time_zone, birth_date=data.birth_date, phone=data.phone, care_team=team.name,
    )  # fmt: skip
    return await _issue(viewer, new, team.id, now=now, app_url=app_url, today=now.date())


async def invite_provider(viewer: Viewer, data: ProviderInvite, *, now: datetime, app_url: str) -> Invitation:
    """Invite a clinician (admins only) onto care teams."""
    _ensure_may_invite(viewer, Role.PROVIDER)
    teams = [await _team_in_reach(viewer, team_id) for team_id in data.care_team_ids]
    new = NewUser(
        email=data.email, role=Role.PROVIDER, given_name=data.given_name, family_name=data.family_name,
        time_zone=data.time_zone, care_teams=tuple(team.name for team in teams), npi=data.npi,
        credentials=data.credentials,
    )  # fmt: skip
    return await _issue(viewer, new, None, now=now, app_url=app_url, today=now.date())


async def _invitation_in_reach(viewer: Viewer, invitation_id: UUID) -> Invitation:
    if not (viewer.is_role(Role.ADMIN) or viewer.is_role(Role.PROVIDER)):
        refusal = Forbidden("only admins and providers manage invitations")
        raise denied(viewer, refusal, AuditAction.UPDATE, "Invitation", resource_id=invitation_id)
    invitation = await Invitation.get_or_none(id=invitation_id)
    if invitation is None:
        raise NotFound("invitation")
    if not viewer.is_role(Role.ADMIN) and (
        invitation.role is not Role.PATIENT or invitation.care_team_id not in viewer.care_team_ids
    ):
        raise NotFound("invitation")
    return invitation


async def resend_invitation(viewer: Viewer, invitation_id: UUID, *, now: datetime, app_url: str) -> Invitation:
    """A new link for 7 more days; the previous link stops working."""
    invitation = await _invitation_in_reach(viewer, invitation_id)
    if invitation.accepted_at is not None:
        raise InvalidInput("invitationId", "the invitation was already accepted")
    if invitation.revoked_at is not None:
        raise InvalidInput("invitationId", "the invitation was revoked: send a new one")
    token, token_hash = new_token()
    async with in_transaction():
        invitation.token_hash, invitation.expires_at = token_hash, now + INVITATION_LIFETIME
        await invitation.save(update_fields=["token_hash", "expires_at"])
        link = _link(app_url, "activate", token) if invitation.user_id is not None else None  # type: ignore[attr-defined]
        await queue_mail(invitation.email, INVITATION_SUBJECT, invitation_body(link, app_url), now=now)
        await _audit(viewer, invitation, now, f"resent the invitation of {invitation.email}")
    return invitation


async def revoke_invitation(viewer: Viewer, invitation_id: UUID, *, now: datetime) -> Invitation:
    """The link stops working; the inactive account stays (records are never deleted)."""
    invitation = await _invitation_in_reach(viewer, invitation_id)
    if invitation.accepted_at is not None:
        raise InvalidInput("invitationId", "the invitation was already accepted")
    async with in_transaction():
        if invitation.revoked_at is None:
            invitation.revoked_at = now
            await invitation.save(update_fields=["revoked_at"])
        await _audit(viewer, invitation, now, f"revoked the invitation of {invitation.email}")
    return invitation


async def personal_names(user: User) -> tuple[str, ...]:
    """The names a password of this user must not contain."""
    profile: Patient | Provider | None
    if user.role is Role.PATIENT:
        profile = await Patient.get_or_none(user_id=user.id)
    else:
        profile = await Provider.get_or_none(user_id=user.id)
    return (profile.given_name, profile.family_name) if profile else ()


async def activate(
    token: str, password: str, *, now: datetime, hash_password: PasswordHasher, trail: AuditTrail
) -> User:
    """Set the invitee's own password and turn the account on; the token is spent.

    Raises `InvalidLinkToken` (unknown, used, revoked, expired: one answer) or `WeakPassword`
    (the token stays usable, so the invitee can try another password).
    """
    invitation = await Invitation.get_or_none(token_hash=hash_token(token)).select_related("user")
    if (
        invitation is None
        or invitation.user is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or now >= invitation.expires_at
    ):
        raise InvalidLinkToken
    user = invitation.user
    if problem := password_problem(password, email=user.email, names=await personal_names(user)):
        raise WeakPassword(problem)
    password_hash = await hash_password(password)
    async with in_transaction():
        spent = await Invitation.filter(
            id=invitation.id, token_hash=invitation.token_hash, accepted_at=None, revoked_at=None
        ).update(accepted_at=now)
        if spent != 1:
            raise InvalidLinkToken  # used concurrently, resent or revoked meanwhile
        await User.filter(id=user.id).update(password_hash=password_hash, is_active=True, updated_at=now)
        entry = AuditEntry(
            AuditAction.UPDATE, "User", AuditOutcome.SUCCESS, resource_id=str(user.id),
            detail=f"{user.email} activated the account of invitation {invitation.id}",
        )  # fmt: skip
        await record_now(None, entry, now=now, trail=trail)
    await user.refresh_from_db()
    return user
