"""Who is asking, and what they may see: the viewer and the object-level access rules.

Every domain operation that touches patient data receives the `Viewer` and asks this module;
root fields, nested fields, connections and `node(id)` all pass through the same functions, so
there is one rule per question. A refusal and a missing record look the same (`NotFound`).

Rules (PRODUCT.md capability 1, CLINICAL.md §12 minimum necessary):
- a patient sees their own record;
- a provider sees the patients of their care teams;
- an admin sees patient identities (to manage accounts) and the audit log, no clinical data;
- an EHR client sees, within its granted scopes, the patients of its care teams who have an
  active consent to share with it.

Which patients is `patients_visible_to`'s question (care teams and providers:
`care_teams_visible_to`, `providers_visible_to`); which of their properties is `may_read`'s.
The decisions on one patient's clinical record (`clinical_patient`, `require_clinical_access`,
`require_clinical_record`, `treating_provider_patient`) are here too: the lookups that use them
are `models.identity.directory`'s and each area's.
A property is read by selecting it, and just as much by filtering or ordering a list by it, or by
a cursor of a list ordered by it: all of these ask `may_read` (STYLE.md, one access rule per
property), and cursors are sealed (schema.pagination).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from tortoise.expressions import Q, Subquery
from tortoise.models import Model
from tortoise.queryset import ValuesListQuery

from models.identity.accounts import ApiClient, DataSharingConsent, Patient, Role, User, client_credential
from models.kernel.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail, audit_patient_read, denied
from models.kernel.errors import Forbidden, NotFound
from models.kernel.prepared import prepared, prepared_read

RecordT = TypeVar("RecordT", bound=Model)


class ViewerKind(StrEnum):
    USER = "USER"
    API_CLIENT = "API_CLIENT"


class Sensitivity(StrEnum):
    """What a property of a patient tells (CLINICAL.md §12, minimum necessary)."""

    # Who the patient is and who looks after them: names, birth date, time zone, care team.
    IDENTITY = "identity"
    # Their health and care: alerts, sessions, readings, surveys, plans, outcomes, opioid use.
    CLINICAL = "clinical"


class Scope(StrEnum):
    """What an EHR client may be granted (models.identity.accounts.API_SCOPES)."""

    PATIENTS_READ = "patients:read"
    CLINICAL_READ = "clinical:read"
    CHANGES_READ = "changes:read"


@dataclass(frozen=True)
class OwnProfile:
    """A patient viewer's own record (its identity fields), read with the account by
    `load_user_viewer`: `me.patient` needs no second read of the same row."""

    id: UUID
    care_team_id: UUID
    given_name: str
    family_name: str
    birth_date: date
    time_zone: str


@dataclass(frozen=True)
class Viewer:
    """An authenticated user or EHR client, resolved once per request."""

    kind: ViewerKind
    id: UUID
    label: str
    role: Role | None = None
    patient_id: UUID | None = None
    provider_id: UUID | None = None
    care_team_ids: frozenset[UUID] = frozenset()
    scopes: frozenset[str] = frozenset()
    audit: AuditTrail = field(default_factory=AuditTrail, compare=False, repr=False)
    own_profile: OwnProfile | None = field(default=None, compare=False, repr=False)

    @property
    def is_api_client(self) -> bool:
        return self.kind is ViewerKind.API_CLIENT

    @property
    def role_name(self) -> str:
        return "EHR_CLIENT" if self.is_api_client else str(self.role)

    def is_role(self, role: Role) -> bool:
        return not self.is_api_client and self.role is role

    def has_scope(self, scope: Scope) -> bool:
        return self.is_api_client and scope.value in self.scopes


@prepared_read(User)
def _viewer_rows(user_id: UUID) -> ValuesListQuery[Any]:
    return User.filter(id=user_id, is_active=True).values_list(
        "role", "email", "patient__id", "patient__care_team_id", "provider__id", "provider__care_teams__id",
        "patient__given_name", "patient__family_name", "patient__birth_date", "patient__time_zone",
    )  # fmt: skip


async def load_user_viewer(user_id: UUID, audit: AuditTrail) -> Viewer | None:
    """The viewer for a signed-in user, or None if the account is gone or deactivated, or its
    patient or provider profile is missing. One query (asked by every request): the account, its
    profile and a provider's care teams, one row per care team; a patient's identity fields come
    with it (`OwnProfile`)."""
    rows = await prepared(_viewer_rows, user_id=user_id)
    if not rows:
        return None
    role, email, patient_id, patient_team, provider_id, _, *identity = rows[0]
    role = Role(role)
    care_teams: frozenset[UUID] = frozenset()
    own_profile = None
    if role is Role.PATIENT:
        if patient_id is None:
            return None
        care_teams = frozenset({patient_team})
        own_profile = OwnProfile(patient_id, patient_team, *identity)
        provider_id = None
    elif role is Role.PROVIDER:
        if provider_id is None:
            return None
        care_teams = frozenset(row[5] for row in rows if row[5] is not None)
        patient_id = None
    else:
        patient_id = provider_id = None
    return Viewer(
        kind=ViewerKind.USER,
        id=user_id,
        label=email,
        role=role,
        patient_id=patient_id,
        provider_id=provider_id,
        care_team_ids=care_teams,
        audit=audit,
        own_profile=own_profile,
    )


async def load_client_viewer(
    client_id: UUID, token_scopes: frozenset[str], credential: str | None, audit: AuditTrail
) -> Viewer | None:
    """The viewer for an EHR client; scopes are those of the token still granted to the client.
    None when the client is deactivated, or its secret was rotated since the token was issued
    (`credential`, the token's fingerprint of the secret, no longer matches)."""
    client = await ApiClient.get_or_none(id=client_id, is_active=True).prefetch_related("care_teams")
    if (
        client is None
        or credential is None
        or not hmac.compare_digest(credential, client_credential(client.secret_hash))
    ):
        return None
    return Viewer(
        kind=ViewerKind.API_CLIENT,
        id=client.id,
        label=client.client_id,
        scopes=token_scopes & frozenset(client.scopes),
        care_team_ids=frozenset(team.id for team in client.care_teams),
        audit=audit,
    )


def patients_visible_to(viewer: Viewer) -> Q:
    """A filter on `Patient` selecting exactly the patients whose identity the viewer may see."""
    if viewer.is_api_client:
        if not viewer.has_scope(Scope.PATIENTS_READ):
            return Q(pk=None)
        return Q(care_team_id__in=list(viewer.care_team_ids)) & Q(
            id__in=Subquery(DataSharingConsent.filter(api_client_id=viewer.id, revoked_at=None).values("patient_id"))
        )
    if viewer.role is Role.ADMIN:
        return Q()
    if viewer.role is Role.PROVIDER:
        return Q(care_team_id__in=list(viewer.care_team_ids))
    if viewer.role is Role.PATIENT and viewer.patient_id is not None:
        return Q(id=viewer.patient_id)
    return Q(pk=None)


def may_read(viewer: Viewer, sensitivity: Sensitivity) -> bool:
    """Whether the viewer may read properties of this sensitivity of the patients it sees: to
    select them, and to filter or order by them. Identities: everyone who sees the patient.
    Clinical data: the patient, their care team's providers, an EHR client granted
    `clinical:read`; never an admin."""
    if sensitivity is Sensitivity.IDENTITY:
        return True
    if viewer.is_api_client:
        return viewer.has_scope(Scope.CLINICAL_READ)
    return viewer.role in (Role.PATIENT, Role.PROVIDER)


class PatientOrder(StrEnum):
    URGENCY = "URGENCY"  # the most urgent open alert first, then its deadline, then name
    NAME = "NAME"  # family name, given name


# What ordering or filtering a patient list by each argument reads: a viewer may use it only if
# it may read that property (`may_read`, the rule that decides what it may select).
ORDER_READS = {PatientOrder.URGENCY: Sensitivity.CLINICAL, PatientOrder.NAME: Sensitivity.IDENTITY}
FILTER_READS = {"careTeamId": Sensitivity.IDENTITY, "hasOpenAlerts": Sensitivity.CLINICAL}


def default_patient_order(viewer: Viewer) -> PatientOrder:
    """The most urgent first for those who may see alerts; by name for everyone else."""
    return PatientOrder.URGENCY if may_read(viewer, ORDER_READS[PatientOrder.URGENCY]) else PatientOrder.NAME


def check_patient_list_arguments(viewer: Viewer, order: PatientOrder, filters: dict[str, object]) -> None:
    """`Forbidden`, naming the argument, when a list would be ordered or filtered (`filters`: the
    given ones, by name) by a property the viewer may not read: an admin, or an EHR client without
    `clinical:read`, ordering by alerts would learn which patients have urgent ones."""
    if not may_read(viewer, ORDER_READS[order]):
        raise Forbidden(
            f"orderBy: {order.value} sorts by open alerts, clinical data you may not see; use orderBy: NAME",
            argument="orderBy",
        )
    for name, value in filters.items():
        if value is not None and not may_read(viewer, FILTER_READS[name]):
            raise Forbidden(f"filter.{name} filters by clinical data you may not see", argument=f"filter.{name}")


def audit_refusal(viewer: Viewer, resource_type: str, resource_id: UUID | str, patient_id: UUID | None) -> None:
    viewer.audit.add(
        AuditEntry(
            AuditAction.READ,
            resource_type,
            AuditOutcome.DENIED,
            patient_id=patient_id,
            resource_id=str(resource_id),
        )
    )


def care_teams_visible_to(viewer: Viewer) -> Q:
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(id__in=list(viewer.care_team_ids))


def providers_visible_to(viewer: Viewer) -> Q:
    """Admins see every provider; others see the providers of the care teams they can see."""
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(care_teams__id__in=list(viewer.care_team_ids))


async def clinical_patient(viewer: Viewer, patient_id: UUID, resource_type: str) -> Patient:
    """The patient whose `resource_type` records the viewer asks for, if it may see them.

    `NotFound` otherwise, exactly as for a patient who does not exist; audited either way.
    """
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None or not may_read(viewer, Sensitivity.CLINICAL):
        audit_refusal(viewer, resource_type, patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id, resource_type)
    return patient


async def clinical_patients(viewer: Viewer, patient_ids: list[UUID], resource_type: str) -> dict[UUID, Patient]:
    """`clinical_patient` for many patients in one query (for DataLoaders): the allowed ones."""
    visible = {p.id: p for p in await Patient.filter(patients_visible_to(viewer), id__in=patient_ids)}
    allowed = visible if may_read(viewer, Sensitivity.CLINICAL) else {}
    for patient_id in patient_ids:
        if patient_id in allowed:
            audit_patient_read(viewer, patient_id, resource_type)
        else:
            audit_refusal(viewer, resource_type, patient_id, patient_id)
    return allowed


def _own_record(viewer: Viewer) -> UUID | None:
    """A patient's own id: for a patient the access decision needs no query (they see their own
    record and no other, and the account was checked when this request was authenticated)."""
    if viewer.is_role(Role.PATIENT):
        return viewer.patient_id
    return None


async def require_clinical_access(viewer: Viewer, patient_id: UUID, resource_type: str) -> None:
    """`clinical_patient` for callers that need the decision, not the row (a patient reading
    their own record costs no query)."""
    own = _own_record(viewer)
    if own is None:
        await clinical_patient(viewer, patient_id, resource_type)
        return
    if patient_id != own:
        audit_refusal(viewer, resource_type, patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient_id, resource_type)


async def clinical_patient_ids(viewer: Viewer, patient_ids: list[UUID], resource_type: str) -> list[UUID]:
    """`clinical_patients` for callers that need the allowed ids, not the rows (DataLoaders)."""
    own = _own_record(viewer)
    if own is None:
        return list(await clinical_patients(viewer, patient_ids, resource_type))
    for patient_id in patient_ids:
        if patient_id == own:
            audit_patient_read(viewer, patient_id, resource_type)
        else:
            audit_refusal(viewer, resource_type, patient_id, patient_id)
    return [patient_id for patient_id in dict.fromkeys(patient_ids) if patient_id == own]


async def treating_provider_patient(
    viewer: Viewer,
    patient_id: UUID,
    *,
    refusal: NotFound | None = None,
    resource_type: str = "Patient",
    resource_id: UUID | None = None,
    action: AuditAction = AuditAction.UPDATE,
) -> Patient:
    """The patient, if the viewer is a provider of their care team (who may change their care).

    Otherwise `refusal` (default: patient not found), the very answer the caller gives for a
    record that does not exist, and a DENIED entry for `resource_type` against the patient."""
    patient = await Patient.get_or_none(id=patient_id)
    if patient is None or not viewer.is_role(Role.PROVIDER) or patient.care_team_id not in viewer.care_team_ids:  # type: ignore[attr-defined]
        refused = refusal or NotFound("patient")
        raise denied(viewer, refused, action, resource_type, patient_id=patient_id, resource_id=resource_id)
    return patient


async def require_clinical_record(viewer: Viewer, patient_id: UUID, resource_type: str, refusal: NotFound) -> None:
    """`require_clinical_access` for a record read by its id: a refusal is `refusal`, the very
    answer for a record that does not exist (not "patient not found", which would tell them
    apart)."""
    try:
        await require_clinical_access(viewer, patient_id, resource_type)
    except NotFound:
        raise refusal from None


def require_patient_self(viewer: Viewer, refusal: Forbidden, action: AuditAction, resource_type: str) -> UUID:
    """The viewer's own patient id, for what only a patient does for themself (their reports, their
    sessions, their consent); `refusal`, audited as DENIED, for anyone else."""
    if not viewer.is_role(Role.PATIENT) or viewer.patient_id is None:
        raise denied(viewer, refusal, action, resource_type)
    return viewer.patient_id


async def clinical_record(viewer: Viewer, model: type[RecordT], record_id: UUID, refusal: NotFound) -> RecordT:
    """A patient's record of `model` read by its id, if the viewer may read that patient's
    clinical record; `refusal` otherwise, as for a record that does not exist (audited either way)."""
    record = await model.get_or_none(id=record_id)
    if record is None:
        raise refusal
    patient_id: UUID = record.patient_id  # type: ignore[attr-defined]
    await require_clinical_record(viewer, patient_id, model.__name__, refusal)
    return record
