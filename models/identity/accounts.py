"""Accounts: users and their patient/provider profiles, care teams, and EHR API clients.

Passwords and client secrets arrive here already hashed (hashing is `api.auth.passwords`' job);
this module only decides what a valid account is and stores it in one transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel.base import Entity
from models.kernel.errors import Conflict, InvalidInput, NotFound
from models.kernel.events import Operation, record_event


class Role(StrEnum):
    PATIENT = "PATIENT"
    PROVIDER = "PROVIDER"
    ADMIN = "ADMIN"


# Scopes an EHR client may be granted (minimum necessary: each one is asked for explicitly).
API_SCOPES = frozenset({"patients:read", "clinical:read", "changes:read"})

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CLIENT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")


class CareTeam(Entity):
    name = fields.CharField(max_length=100, unique=True)

    class Meta:
        table = "care_team"


class User(Entity):
    email = fields.CharField(max_length=254, unique=True)
    role = fields.CharEnumField(Role, max_length=16)
    password_hash = fields.CharField(max_length=255)
    is_active = fields.BooleanField(default=True)

    class Meta:
        table = "user_account"


class Patient(Entity):
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "ketafollow.User", related_name="patient", on_delete=fields.RESTRICT
    )
    care_team: fields.ForeignKeyRelation[CareTeam] = fields.ForeignKeyField(
        "ketafollow.CareTeam", related_name="patients", on_delete=fields.RESTRICT
    )
    given_name = fields.CharField(max_length=100)
    family_name = fields.CharField(max_length=100)
    birth_date = fields.DateField()
    time_zone = fields.CharField(max_length=64)
    phone = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "patient"


class Provider(Entity):
    user: fields.OneToOneRelation[User] = fields.OneToOneField(
        "ketafollow.User", related_name="provider", on_delete=fields.RESTRICT
    )
    given_name = fields.CharField(max_length=100)
    family_name = fields.CharField(max_length=100)
    credentials = fields.CharField(max_length=50, default="")
    npi = fields.CharField(max_length=10, null=True, unique=True)
    time_zone = fields.CharField(max_length=64)
    care_teams: fields.ManyToManyRelation[CareTeam] = fields.ManyToManyField(
        "ketafollow.CareTeam", related_name="providers", through="provider_care_team"
    )

    class Meta:
        table = "provider"


CLIENT_ID_MAX_LENGTH = 64


class ApiClient(Entity):
    """A third-party EHR integration, authenticating with client credentials."""

    client_id = fields.CharField(max_length=CLIENT_ID_MAX_LENGTH, unique=True)
    name = fields.CharField(max_length=200)
    secret_hash = fields.CharField(max_length=255)
    scopes: list[str] = fields.JSONField(default=list)
    is_active = fields.BooleanField(default=True)
    care_teams: fields.ManyToManyRelation[CareTeam] = fields.ManyToManyField(
        "ketafollow.CareTeam", related_name="api_clients", through="api_client_care_team"
    )

    class Meta:
        table = "api_client"


def client_credential(secret_hash: str) -> str:
    """What an EHR client's access token carries of its secret: a fingerprint of the stored hash,
    so rotating the secret (a new hash) refuses every token issued under the old one. It reveals
    nothing of the secret (a digest of a salted Argon2id hash)."""
    return hashlib.sha256(f"ketafollow client credential:{secret_hash}".encode()).hexdigest()[:32]


class DataSharingConsent(Entity):
    """Consent of a patient to share their record with one EHR client. Revoking keeps the row."""

    patient: fields.ForeignKeyRelation[Patient] = fields.ForeignKeyField(
        "ketafollow.Patient", related_name="data_sharing_consents", on_delete=fields.RESTRICT
    )
    api_client: fields.ForeignKeyRelation[ApiClient] = fields.ForeignKeyField(
        "ketafollow.ApiClient", related_name="consents", on_delete=fields.RESTRICT
    )
    granted_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "data_sharing_consent"
        indexes = (("api_client_id", "patient_id"),)


@dataclass(frozen=True)
class NewUser:
    email: str
    role: Role
    given_name: str = ""
    family_name: str = ""
    time_zone: str = "UTC"
    birth_date: date | None = None
    phone: str | None = None
    care_team: str | None = None  # patients: the one team; providers: see `care_teams`
    care_teams: tuple[str, ...] = ()
    npi: str | None = None
    credentials: str = ""


@dataclass(frozen=True)
class NewApiClient:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    care_teams: tuple[str, ...] = field(default=())


def normalise_email(raw: str) -> str:
    """E-mail addresses are compared case-insensitively and without surrounding spaces."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidInput("email", "email must be a valid e-mail address")
    return email


def validate_time_zone(name: str) -> str:
    """An IANA zone name (`America/New_York`); schedules are computed in it, DST included."""
    if name not in available_timezones():
        raise InvalidInput("timeZone", f"unknown IANA time zone {name!r}")
    try:
        ZoneInfo(name)
    except ZoneInfoNotFoundError as error:  # pragma: no cover - listed but not loadable
        raise InvalidInput("timeZone", f"unknown IANA time zone {name!r}") from error
    return name


def npi_is_valid(npi: str) -> bool:
    """The NPI check digit: Luhn over the 9 digits prefixed with 80840 (CMS NPI standard)."""
    if not re.fullmatch(r"\d{10}", npi):
        return False
    digits = [int(d) for d in "80840" + npi]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _require_name(field_name: str, value: str) -> str:
    cleaned = " ".join(value.split())
    if not cleaned:
        raise InvalidInput(field_name, f"{field_name} is required")
    if len(cleaned) > 100:
        raise InvalidInput(field_name, f"{field_name} must be at most 100 characters")
    return cleaned


def _validate_new_user(data: NewUser, today: date) -> None:
    if data.role is Role.ADMIN:
        return
    _require_name("givenName", data.given_name)
    _require_name("familyName", data.family_name)
    validate_time_zone(data.time_zone)
    if data.role is Role.PATIENT:
        if data.birth_date is None:
            raise InvalidInput("birthDate", "birthDate is required for a patient")
        if not date(1900, 1, 1) <= data.birth_date <= today:
            raise InvalidInput("birthDate", "birthDate must be between 1900-01-01 and today")
        if not data.care_team:
            raise InvalidInput("careTeam", "a patient must belong to a care team")
    if data.role is Role.PROVIDER and data.npi is not None and not npi_is_valid(data.npi):
        raise InvalidInput("npi", "npi must be 10 digits with a valid check digit")


async def _care_team_named(name: str) -> CareTeam:
    team = await CareTeam.get_or_none(name=name)
    if team is None:
        raise NotFound(f"care team {name!r}")
    return team


async def ensure_care_team(name: str) -> CareTeam:
    """The care team called `name`, created if it does not exist yet: for the seeds, which load
    twice as a no-op. An admin creating a team (API or command line) calls
    `administration.create_care_team`, audited, which refuses a taken name."""
    cleaned = _require_name("name", name)
    team, _ = await CareTeam.get_or_create(name=cleaned)
    return team


async def create_user(data: NewUser, *, password_hash: str, today: date, active: bool = True) -> User:
    """Create a user and, for patients and providers, their profile, in one transaction.

    An invited user is created inactive, with no usable password, until they activate the account.
    """
    email = normalise_email(data.email)
    _validate_new_user(data, today)
    async with in_transaction():
        if await User.exists(email=email):
            raise Conflict(f"a user with e-mail {email} already exists")
        if data.npi is not None and await Provider.exists(npi=data.npi):
            raise InvalidInput("npi", "a provider with this NPI is already registered")
        try:
            user = await User.create(email=email, role=data.role, password_hash=password_hash, is_active=active)
        except IntegrityError as error:
            raise Conflict(f"a user with e-mail {email} already exists") from error
        if data.role is Role.PATIENT:
            patient = await Patient.create(
                user=user,
                care_team=await _care_team_named(data.care_team or ""),
                given_name=_require_name("givenName", data.given_name),
                family_name=_require_name("familyName", data.family_name),
                birth_date=data.birth_date,
                time_zone=data.time_zone,
                phone=data.phone,
            )
            await record_event(
                "Patient.created", resource_type="Patient", resource_id=patient.id, operation=Operation.CREATED,
                version=1, now=patient.created_at, patient_id=patient.id,
            )  # fmt: skip
        elif data.role is Role.PROVIDER:
            provider = await Provider.create(
                user=user,
                given_name=_require_name("givenName", data.given_name),
                family_name=_require_name("familyName", data.family_name),
                credentials=data.credentials.strip(),
                npi=data.npi,
                time_zone=data.time_zone,
            )
            for name in data.care_teams:
                await provider.care_teams.add(await _care_team_named(name))
    return user


async def create_api_client(data: NewApiClient, *, secret_hash: str) -> ApiClient:
    """Register an EHR client with its scopes and the care teams whose patients it may see."""
    if not CLIENT_ID_PATTERN.match(data.client_id):
        raise InvalidInput("clientId", "clientId must be 3-64 characters of a-z, 0-9, '.', '_' or '-'")
    unknown = sorted(set(data.scopes) - API_SCOPES)
    if unknown:
        raise InvalidInput("scopes", f"unknown scopes: {', '.join(unknown)} (known: {', '.join(sorted(API_SCOPES))})")
    name = _require_name("name", data.name)
    async with in_transaction():
        if await ApiClient.exists(client_id=data.client_id):
            raise Conflict(f"an API client with id {data.client_id} already exists")
        client = await ApiClient.create(
            client_id=data.client_id, name=name, secret_hash=secret_hash, scopes=sorted(set(data.scopes))
        )
        for team_name in data.care_teams:
            await client.care_teams.add(await _care_team_named(team_name))
    return client
