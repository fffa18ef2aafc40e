"""Administration without a shell (PRODUCT.md capability 11): accounts, care teams, transfers and
EHR clients, for admins only.

Every operation here asks for an admin first: any other viewer (a patient, a provider, an EHR
client) gets `Forbidden`, audited. A record that does not exist is `NotFound`. Each write is one
transaction with its audit row.

- Deactivating a user ends every login of theirs (refresh tokens, and through the `Login.ended`
  events, their access tokens and sockets on every replica), turns off their push devices, voids
  their pending invitations (an old link must not revive the account) and, for a patient, cancels
  their scheduled and open surveys but the post-session check of a session (its expiry still
  alerts the care team: CLINICAL.md §6). Nothing is deleted: the record, its history and its open
  alerts stay with the care team. While deactivated, no recurring surveys are scheduled and no
  check-in reminders go out (models.surveys.delivery). Reactivating lets them sign in again with
  their password; old tokens stay dead. An admin cannot deactivate themself, nor the last active admin.
- Transferring a patient moves their record to another care team: access to the record, its open
  and future alerts, and their escalations follow the patient's team (models.identity.access, models.alerts.alerts
  ask the patient's team, never a copy of it). Consents to EHR clients that do not serve the new
  team end (revoked now, kept as history); a move back does not revive them.
- An EHR client's secret is shown once and stored hashed. Its access tokens carry a fingerprint of
  the stored hash (`client_credential`): rotating the secret or deactivating the client refuses
  every token issued before, at the next request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from tortoise.expressions import Q, Subquery
from tortoise.transactions import in_transaction

from models.ehr.consent import consent_event
from models.identity import sign_ins
from models.identity.access import Viewer
from models.identity.accounts import (
    API_SCOPES,
    CLIENT_ID_PATTERN,
    ApiClient,
    CareTeam,
    DataSharingConsent,
    NewApiClient,
    Patient,
    Provider,
    Role,
    User,
    create_api_client,
)
from models.identity.enrolment import NO_PASSWORD, Invitation
from models.identity.passwords import PasswordHashing
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, denied, record_now
from models.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound
from models.kernel.events import Operation, record_event
from models.notifications.devices import DeactivationReason, Device
from models.surveys.assignments import cancel_surveys_of_deactivated_patient

REASON_MAX_LENGTH = 500
SEARCH_MAX_LENGTH = 100
TEAM_NAME_MAX_LENGTH = 100


def _ensure_admin(
    viewer: Viewer, action: AuditAction, resource_type: str, what: str, problems: tuple[InvalidInput, ...] = ()
) -> None:
    """Admins only (`Forbidden`, audited); then the first input the API could not read (`problems`:
    an id of another type), so a viewer who may not call the operation is told that first."""
    if not viewer.is_role(Role.ADMIN):
        raise denied(viewer, Forbidden(f"only admins may {what}"), action, resource_type)
    if problems:
        raise problems[0]


async def _audit(
    viewer: Viewer,
    action: AuditAction,
    resource_type: str,
    resource_id: UUID,
    detail: str,
    *,
    now: datetime,
    patient_id: UUID | None = None,
) -> None:
    entry = AuditEntry(
        action, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id, resource_id=str(resource_id),
        detail=detail[:200],
    )  # fmt: skip
    await record_now(viewer, entry, now=now, trail=viewer.audit)


# ------------------------------------------------------------------ users


@dataclass(frozen=True)
class UserCursor:
    """Position in the list of users: ordered by e-mail (unique), then id."""

    email: str
    id: UUID


async def list_users(
    viewer: Viewer,
    *,
    now: datetime,
    limit: int,
    after: UserCursor | None = None,
    role: Role | None = None,
    search: str | None = None,
) -> list[User]:
    """Users by e-mail, `limit` of them after `after`; `search` is a prefix of the e-mail or of a
    patient's or provider's given or family name (case-insensitive)."""
    _ensure_admin(viewer, AuditAction.READ, "User", "list users")
    query = User.all()
    if role is not None:
        query = query.filter(role=role)
    if search is not None:
        prefix = search.strip()
        if not prefix:
            raise InvalidInput("search", "search must not be empty")
        if len(prefix) > SEARCH_MAX_LENGTH:
            raise InvalidInput("search", f"search must be at most {SEARCH_MAX_LENGTH} characters")
        named = Q(given_name__istartswith=prefix) | Q(family_name__istartswith=prefix)
        query = query.filter(
            Q(email__istartswith=prefix.lower())
            | Q(id__in=Subquery(Patient.filter(named).values("user_id")))
            | Q(id__in=Subquery(Provider.filter(named).values("user_id")))
        )
    if after is not None:
        query = query.filter(Q(email__gt=after.email) | (Q(email=after.email) & Q(id__gt=after.id)))
    users = list(await query.order_by("email", "id").limit(limit))
    if users:
        shown = f"listed {len(users)} user(s)" + (f" matching {search.strip()!r}" if search else "")
        await _audit(viewer, AuditAction.READ, "User", users[0].id, shown, now=now)
    return users


async def deactivate_user(
    viewer: Viewer, user_id: UUID | None, reason: str, *, now: datetime, problems: tuple[InvalidInput, ...] = ()
) -> tuple[User, list[UUID]]:
    """Stop an account at once, keep its records (see the module). Returns the user and the
    logins ended now (the caller refuses their tokens and closes their sockets in this process;
    other replicas hear of them through the `Login.ended` events)."""
    _ensure_admin(viewer, AuditAction.UPDATE, "User", "deactivate users", problems)
    why = " ".join(reason.split())
    if not why:
        raise InvalidInput("reason", "reason is required: say why the account is deactivated")
    if len(why) > REASON_MAX_LENGTH:
        raise InvalidInput("reason", f"reason must be at most {REASON_MAX_LENGTH} characters")
    if user_id == viewer.id:
        raise InvalidInput("userId", "you cannot deactivate your own account")
    async with in_transaction():
        user = await User.filter(id=user_id).select_for_update().first()
        if user is None:
            raise NotFound("user")
        if user.role is Role.ADMIN and user.is_active:
            others = await User.filter(role=Role.ADMIN, is_active=True).exclude(id=user.id).count()
            if others == 0:
                raise Conflict("the last active admin cannot be deactivated")
        await User.filter(id=user.id).update(is_active=False, updated_at=now)
        user.is_active = False
        devices = await Device.filter(user_id=user.id, is_active=True).count()
        ended = await sign_ins.end_user_logins(user.id, now=now, reason="account deactivated")
        # A login's devices end with it; a device registered under no login ends here.
        await Device.filter(user_id=user.id, is_active=True).update(
            is_active=False, deactivated_at=now, deactivation_reason=DeactivationReason.SESSION_ENDED, updated_at=now
        )
        voided = await Invitation.filter(user_id=user.id, accepted_at=None, revoked_at=None).update(revoked_at=now)
        patient = await Patient.get_or_none(user_id=user.id)
        cancelled = await cancel_surveys_of_deactivated_patient(patient.id, now=now) if patient else 0
        detail = (
            f"deactivated {user.email}: {why} ({len(ended)} login(s), {devices} device(s), "
            f"{voided} invitation(s), {cancelled} survey(s) ended)"
        )
        await _audit(
            viewer, AuditAction.UPDATE, "User", user.id, detail, now=now, patient_id=patient.id if patient else None
        )
    return user, ended


async def reactivate_user(
    viewer: Viewer, user_id: UUID | None, *, now: datetime, problems: tuple[InvalidInput, ...] = ()
) -> User:
    """Let a deactivated user sign in again with their password (their old tokens stay dead)."""
    _ensure_admin(viewer, AuditAction.UPDATE, "User", "reactivate users", problems)
    async with in_transaction():
        user = await User.filter(id=user_id).select_for_update().first()
        if user is None:
            raise NotFound("user")
        if user.password_hash == NO_PASSWORD:
            raise InvalidInput("userId", "this account was invited and never activated: send a new invitation")
        if not user.is_active:
            await User.filter(id=user.id).update(is_active=True, updated_at=now)
            user.is_active = True
        patient_id = await Patient.filter(user_id=user.id).first().values_list("id", flat=True)
        await _audit(
            viewer, AuditAction.UPDATE, "User", user.id, f"reactivated {user.email}", now=now,
            patient_id=patient_id,  # type: ignore[arg-type]
        )  # fmt: skip
    return user


# ------------------------------------------------------------------ care teams and transfers


async def create_care_team(viewer: Viewer, name: str, *, now: datetime) -> CareTeam:
    _ensure_admin(viewer, AuditAction.CREATE, "CareTeam", "create care teams")
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidInput("name", "name is required")
    if len(cleaned) > TEAM_NAME_MAX_LENGTH:
        raise InvalidInput("name", f"name must be at most {TEAM_NAME_MAX_LENGTH} characters")
    async with in_transaction():
        if await CareTeam.filter(name__iexact=cleaned).exists():
            raise Conflict(f"a care team named {cleaned!r} already exists")
        team = await CareTeam.create(name=cleaned)
        await _audit(viewer, AuditAction.CREATE, "CareTeam", team.id, f"created care team {cleaned}", now=now)
    return team


async def transfer_patient(
    viewer: Viewer,
    patient_id: UUID | None,
    care_team_id: UUID | None,
    *,
    now: datetime,
    problems: tuple[InvalidInput, ...] = (),
) -> Patient:
    """Move a patient to another care team (see the module for what follows them)."""
    _ensure_admin(viewer, AuditAction.UPDATE, "Patient", "transfer patients", problems)
    async with in_transaction():
        patient = await Patient.filter(id=patient_id).select_for_update().first()
        if patient is None:
            raise NotFound("patient")
        team = await CareTeam.get_or_none(id=care_team_id)
        if team is None:
            raise NotFound("care team")
        old_team_id: UUID = patient.care_team_id  # type: ignore[attr-defined]
        if old_team_id == team.id:
            raise InvalidInput("careTeamId", f"the patient is already in care team {team.name}")
        old_team = await CareTeam.get(id=old_team_id)
        await Patient.filter(id=patient.id).update(care_team_id=team.id, updated_at=now)
        patient.care_team_id = team.id
        serving_new_team = ApiClient.filter(care_teams__id=team.id).values("id")
        ending = await DataSharingConsent.filter(patient_id=patient.id, revoked_at=None).exclude(
            api_client_id__in=Subquery(serving_new_team)
        )  # fmt: skip
        for consent in ending:  # each revocation is the last change of the patient its client receives
            await DataSharingConsent.filter(id=consent.id).update(revoked_at=now, updated_at=now)
            consent.revoked_at = now
            await consent_event(consent, Operation.UPDATED, 2, now)
        ended = len(ending)
        await record_event(
            "Patient.transferred", resource_type="Patient", resource_id=patient.id, operation=Operation.UPDATED,
            version=1, now=now, patient_id=patient.id,
            payload={"fromCareTeam": str(old_team_id), "toCareTeam": str(team.id)},
        )  # fmt: skip
        detail = f"moved from care team {old_team.name} to {team.name}; {ended} data-sharing consent(s) ended"
        await _audit(viewer, AuditAction.UPDATE, "Patient", patient.id, detail, now=now, patient_id=patient.id)
    return patient


# ------------------------------------------------------------------ EHR clients


@dataclass(frozen=True)
class ApiClientRegistration:
    client: ApiClient
    secret: str  # shown once


def _check_client_id(client_id: str) -> str:
    if not CLIENT_ID_PATTERN.match(client_id):
        raise InvalidInput("clientId", "clientId must be 3-64 characters of a-z, 0-9, '.', '_' or '-'")
    return client_id


async def _client(client_id: str) -> ApiClient:
    client = await ApiClient.get_or_none(client_id=_check_client_id(client_id))
    if client is None:
        raise NotFound("API client")
    return client


async def register_api_client(
    viewer: Viewer,
    client_id: str,
    name: str,
    scopes: tuple[str, ...],
    care_team_ids: tuple[UUID | None, ...],
    *,
    now: datetime,
    hashing: PasswordHashing,
    problems: tuple[InvalidInput, ...] = (),
) -> ApiClientRegistration:
    """Register an EHR client (the operation `ketafollow create-client` calls, with an admin's
    audit row): its secret is generated, returned once, stored hashed."""
    _ensure_admin(viewer, AuditAction.CREATE, "ApiClient", "register API clients", problems)
    _check_client_id(client_id)
    unknown = sorted(set(scopes) - API_SCOPES)
    if unknown:
        raise InvalidInput("scopes", f"unknown scopes: {', '.join(unknown)} (known: {', '.join(sorted(API_SCOPES))})")
    teams = []
    for team_id in dict.fromkeys(care_team_ids):
        team = await CareTeam.get_or_none(id=team_id)
        if team is None:
            raise NotFound("care team")
        teams.append(team.name)
    secret = secrets.token_urlsafe(32)
    secret_hash = await hashing.hash(secret)
    async with in_transaction():
        client = await create_api_client(
            NewApiClient(client_id=client_id, name=name, scopes=scopes, care_teams=tuple(teams)),
            secret_hash=secret_hash,
        )
        detail = f"registered API client {client_id} with scopes {' '.join(client.scopes) or '(none)'}"
        await _audit(viewer, AuditAction.CREATE, "ApiClient", client.id, detail, now=now)
    return ApiClientRegistration(client=client, secret=secret)


async def rotate_api_client_secret(
    viewer: Viewer, client_id: str, *, now: datetime, hashing: PasswordHashing
) -> ApiClientRegistration:
    """A new secret, returned once: the old one stops at once, and so do the access tokens issued
    under it (their credential fingerprint no longer matches)."""
    _ensure_admin(viewer, AuditAction.UPDATE, "ApiClient", "rotate API client secrets")
    await _client(client_id)
    secret = secrets.token_urlsafe(32)
    secret_hash = await hashing.hash(secret)
    async with in_transaction():
        client = await ApiClient.filter(client_id=client_id).select_for_update().first()
        if client is None:  # pragma: no cover - deleted meanwhile (clients are never deleted)
            raise NotFound("API client")
        await ApiClient.filter(id=client.id).update(secret_hash=secret_hash, updated_at=now)
        client.secret_hash = secret_hash
        await _audit(viewer, AuditAction.UPDATE, "ApiClient", client.id, f"rotated the secret of {client_id}", now=now)
    return ApiClientRegistration(client=client, secret=secret)


async def deactivate_api_client(viewer: Viewer, client_id: str, *, now: datetime) -> ApiClient:
    """The client can no longer sign in, and its access tokens are refused at the next request."""
    _ensure_admin(viewer, AuditAction.UPDATE, "ApiClient", "deactivate API clients")
    client = await _client(client_id)
    async with in_transaction():
        await ApiClient.filter(id=client.id).update(is_active=False, updated_at=now)
        client.is_active = False
        await _audit(viewer, AuditAction.UPDATE, "ApiClient", client.id, f"deactivated API client {client_id}", now=now)
    return client


async def user_profiles(user_ids: list[UUID]) -> tuple[dict[UUID, Patient], dict[UUID, Provider]]:
    """The patient and provider records of users already listed to an administrator, by user id."""
    patients = {patient.user_id: patient for patient in await Patient.filter(user_id__in=user_ids)}  # type: ignore[attr-defined]
    providers = {provider.user_id: provider for provider in await Provider.filter(user_id__in=user_ids)}  # type: ignore[attr-defined]
    return patients, providers


async def api_client_care_teams(client: ApiClient) -> list[CareTeam]:
    """The care teams an API client (already shown to an administrator) may read, by name."""
    return list(await client.care_teams.all().order_by("name"))
