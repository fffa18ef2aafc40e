"""Reading who is who: patients, providers and care teams, as the viewer may see them.

Every read of a patient's record leaves an audit entry (one per patient touched); a refusal is
audited too and looks exactly like a record that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from tortoise.expressions import Q, Subquery

from models.access import Scope, Viewer, patients_visible_to
from models.accounts import CareTeam, Patient, Provider, Role
from models.audit import AuditAction, AuditEntry, AuditOutcome, denied
from models.errors import NotFound


@dataclass(frozen=True)
class PatientCursor:
    """Position in the name-ordered patient list (keyset pagination: stable under inserts)."""

    family_name: str
    given_name: str
    id: UUID


def audit_patient_read(viewer: Viewer, patient_id: UUID, resource_type: str = "Patient") -> None:
    viewer.audit.add(
        AuditEntry(AuditAction.READ, resource_type, AuditOutcome.SUCCESS, patient_id=patient_id, resource_id=None)
    )


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


async def get_patient(viewer: Viewer, patient_id: UUID) -> Patient:
    """The patient, if the viewer may see them; `NotFound` otherwise (audited either way)."""
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None:
        audit_refusal(viewer, "Patient", patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id)
    return patient


async def get_patients(viewer: Viewer, patient_ids: list[UUID]) -> dict[UUID, Patient]:
    """The visible patients among `patient_ids`, in one query (for DataLoaders and `node`)."""
    patients = await Patient.filter(patients_visible_to(viewer), id__in=patient_ids)
    found = {patient.id: patient for patient in patients}
    for patient_id in patient_ids:
        if patient_id in found:
            audit_patient_read(viewer, patient_id)
        else:
            audit_refusal(viewer, "Patient", patient_id, patient_id)
    return found


async def list_patients(
    viewer: Viewer,
    *,
    limit: int,
    after: PatientCursor | None = None,
    care_team_id: UUID | None = None,
    with_open_alerts: bool | None = None,
) -> list[Patient]:
    """Visible patients ordered by name, `limit` of them after `after`; with `with_open_alerts`,
    only those with (True) or without (False) an open or acknowledged alert."""
    from models.alerts import Alert, AlertStatus  # alerts audit through this module

    query = Patient.filter(patients_visible_to(viewer))
    if care_team_id is not None:
        query = query.filter(care_team_id=care_team_id)
    if with_open_alerts is not None:
        active = Alert.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED]).values("patient_id")
        flagged = Q(id__in=Subquery(active))
        query = query.filter(flagged if with_open_alerts else ~flagged)
    if after is not None:
        query = query.filter(
            Q(family_name__gt=after.family_name)
            | Q(family_name=after.family_name, given_name__gt=after.given_name)
            | Q(family_name=after.family_name, given_name=after.given_name, id__gt=after.id)
        )
    patients = await query.order_by("family_name", "given_name", "id").limit(limit)
    for patient in patients:
        audit_patient_read(viewer, patient.id)
    return list(patients)


def _care_teams_visible_to(viewer: Viewer) -> Q:
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(id__in=list(viewer.care_team_ids))


async def get_care_teams(viewer: Viewer, care_team_ids: list[UUID]) -> dict[UUID, CareTeam]:
    teams = await CareTeam.filter(_care_teams_visible_to(viewer), id__in=care_team_ids)
    return {team.id: team for team in teams}


async def list_care_teams(viewer: Viewer) -> list[CareTeam]:
    return list(await CareTeam.filter(_care_teams_visible_to(viewer)).order_by("name"))


def _providers_visible_to(viewer: Viewer) -> Q:
    """Admins see every provider; others see the providers of the care teams they can see."""
    if viewer.is_role(Role.ADMIN):
        return Q()
    if viewer.is_api_client and not viewer.has_scope(Scope.PATIENTS_READ):
        return Q(pk=None)
    return Q(care_teams__id__in=list(viewer.care_team_ids))


async def get_providers(viewer: Viewer, provider_ids: list[UUID]) -> dict[UUID, Provider]:
    providers = await Provider.filter(_providers_visible_to(viewer), id__in=provider_ids).distinct()
    return {provider.id: provider for provider in providers}


async def providers_of_care_team(viewer: Viewer, care_team_id: UUID) -> list[Provider]:
    if care_team_id not in (await get_care_teams(viewer, [care_team_id])):
        return []
    return list(await Provider.filter(care_teams__id=care_team_id).order_by("family_name", "given_name", "id"))


async def care_teams_of_provider(viewer: Viewer, provider_id: UUID) -> list[CareTeam]:
    teams = await CareTeam.filter(_care_teams_visible_to(viewer), providers__id=provider_id).order_by("name")
    return list(teams)


def _may_see_clinical_record(viewer: Viewer, patient: Patient) -> bool:
    """Clinical records: the patient, their care team's providers, or a consented EHR client
    with `clinical:read` (the consent is part of `patients_visible_to`). Never admins."""
    if viewer.is_api_client:
        return viewer.has_scope(Scope.CLINICAL_READ)
    return viewer.role in (Role.PATIENT, Role.PROVIDER)


async def clinical_patient(viewer: Viewer, patient_id: UUID, resource_type: str) -> Patient:
    """The patient whose `resource_type` records the viewer asks for, if it may see them.

    `NotFound` otherwise, exactly as for a patient who does not exist; audited either way.
    """
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None or not _may_see_clinical_record(viewer, patient):
        audit_refusal(viewer, resource_type, patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id, resource_type)
    return patient


async def clinical_patients(viewer: Viewer, patient_ids: list[UUID], resource_type: str) -> dict[UUID, Patient]:
    """`clinical_patient` for many patients in one query (for DataLoaders): the allowed ones."""
    visible = {p.id: p for p in await Patient.filter(patients_visible_to(viewer), id__in=patient_ids)}
    allowed = {pid: p for pid, p in visible.items() if _may_see_clinical_record(viewer, p)}
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
