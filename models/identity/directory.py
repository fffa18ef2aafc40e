"""Reading who is who: patients, providers and care teams, as the viewer may see them.

Lookups only: who may see whom, and which arguments a viewer may order or filter a list by, are
`models.identity.access`'s decisions, which these lookups ask. Every read of a patient's record
leaves an audit entry (one per patient touched); a refusal is audited too and looks exactly like
a record that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from tortoise.expressions import Q, Subquery
from tortoise.queryset import QuerySet

from models.alerts.alerts import Alert, AlertStatus
from models.identity.access import (
    OwnProfile,
    PatientOrder,
    Viewer,
    audit_refusal,
    care_teams_visible_to,
    check_patient_list_arguments,
    patients_visible_to,
    providers_visible_to,
)
from models.identity.accounts import CareTeam, Patient, Provider, Role
from models.kernel.audit import audit_patient_read
from models.kernel.errors import NotFound

# A patient without an open alert sorts after every alert, by name.
NO_ALERT_RANK = 9
NO_DEADLINE = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True)
class PatientCursor:
    """Position in a patient list (keyset pagination: stable under inserts). In the urgency order
    it starts with the patient's most urgent open alert (`NO_ALERT_RANK`, `NO_DEADLINE` without)."""

    family_name: str
    given_name: str
    id: UUID
    severity_rank: int = NO_ALERT_RANK
    respond_by: datetime = NO_DEADLINE

    def urgency(self) -> tuple[int, datetime, str, str, UUID]:
        return (self.severity_rank, self.respond_by, self.family_name, self.given_name, self.id)


async def get_patient(viewer: Viewer, patient_id: UUID) -> Patient:
    """The patient, if the viewer may see them; `NotFound` otherwise (audited either way)."""
    patient = await Patient.filter(patients_visible_to(viewer), id=patient_id).first()
    if patient is None:
        audit_refusal(viewer, "Patient", patient_id, patient_id)
        raise NotFound("patient")
    audit_patient_read(viewer, patient.id)
    return patient


async def own_patient(viewer: Viewer, patient_id: UUID) -> Patient | OwnProfile:
    """A patient viewer's own record (`me.patient`): the identity fields the viewer load read with
    the account, audited as `get_patient` audits the read (a patient sees their own record and no
    other, so the decision is the same); `get_patient` for a viewer loaded without them."""
    profile = viewer.own_profile
    own = viewer.is_role(Role.PATIENT) and viewer.patient_id == patient_id
    if profile is None or profile.id != patient_id or not own:
        return await get_patient(viewer, patient_id)
    audit_patient_read(viewer, profile.id)
    return profile


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
    order: PatientOrder,
    limit: int,
    after: PatientCursor | None = None,
    care_team_id: UUID | None = None,
    with_open_alerts: bool | None = None,
) -> list[tuple[Patient, PatientCursor]]:
    """Visible patients in `order`, `limit` of them after `after`, each with its position; with
    `with_open_alerts`, only those with (True) or without (False) an open or acknowledged alert.

    `Forbidden` when the order or a filter reads what the viewer may not (see
    `check_patient_list_arguments`). A fixed number of queries whatever the panel's size, and only
    the page's patients are loaded (`_urgent_page` says what the urgency order reads besides).
    """
    check_patient_list_arguments(viewer, order, {"careTeamId": care_team_id, "hasOpenAlerts": with_open_alerts})
    visible = Patient.filter(patients_visible_to(viewer))
    if care_team_id is not None:
        visible = visible.filter(care_team_id=care_team_id)
    active = Alert.filter(status__in=[AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED])
    flagged = Q(id__in=Subquery(active.values("patient_id")))
    rows: list[tuple[Patient, PatientCursor]] = []
    by_name, name_after = order is PatientOrder.NAME, after
    if order is PatientOrder.URGENCY:
        among_alerts = after is None or after.severity_rank != NO_ALERT_RANK
        if among_alerts and with_open_alerts is not False:
            rows = await _urgent_page(active.filter(patient_id__in=Subquery(visible.values("id"))), limit, after)
        # Then the patients without an open alert, by name.
        by_name, name_after = with_open_alerts is not True, None if among_alerts else after
        with_open_alerts = False
    if by_name and len(rows) < limit:
        if with_open_alerts is not None:
            visible = visible.filter(flagged if with_open_alerts else ~flagged)
        if name_after is not None:
            visible = visible.filter(
                Q(family_name__gt=name_after.family_name)
                | Q(family_name=name_after.family_name, given_name__gt=name_after.given_name)
                | Q(family_name=name_after.family_name, given_name=name_after.given_name, id__gt=name_after.id)
            )
        named = await visible.order_by("family_name", "given_name", "id").limit(limit - len(rows))
        rows += [(patient, PatientCursor(patient.family_name, patient.given_name, patient.id)) for patient in named]
    for patient, _ in rows:
        audit_patient_read(viewer, patient.id)
    return rows


async def _urgent_page(
    active: QuerySet[Any], limit: int, after: PatientCursor | None
) -> list[tuple[Patient, PatientCursor]]:
    """The patients with an open alert, the most urgent first (their most urgent alert, then name),
    `limit` of them after `after`. Reads each open alert's severity, deadline and patient's name
    (the care team's work queue, not the whole panel) and loads the page's patients; an index on
    the alerts' patient would let the database order them instead."""
    alerts = active.order_by("-severity_rank", "-respond_by").values_list(
        "patient_id", "severity_rank", "respond_by", "patient__family_name", "patient__given_name"
    )
    most_urgent: dict[UUID, PatientCursor] = {}
    for patient_id, rank, respond_by, family, given in await alerts:
        # The last alert of a patient is their most urgent.
        most_urgent[patient_id] = PatientCursor(family, given, patient_id, rank, respond_by)
    positions = sorted(most_urgent.values(), key=PatientCursor.urgency)
    if after is not None:
        positions = [position for position in positions if position.urgency() > after.urgency()]
    page = positions[:limit]
    if not page:
        return []
    patients = {patient.id: patient for patient in await Patient.filter(id__in=[p.id for p in page])}
    return [(patients[position.id], position) for position in page]


async def get_care_teams(viewer: Viewer, care_team_ids: list[UUID]) -> dict[UUID, CareTeam]:
    teams = await CareTeam.filter(care_teams_visible_to(viewer), id__in=care_team_ids)
    return {team.id: team for team in teams}


async def list_care_teams(viewer: Viewer) -> list[CareTeam]:
    return list(await CareTeam.filter(care_teams_visible_to(viewer)).order_by("name"))


async def get_providers(viewer: Viewer, provider_ids: list[UUID]) -> dict[UUID, Provider]:
    providers = await Provider.filter(providers_visible_to(viewer), id__in=provider_ids).distinct()
    return {provider.id: provider for provider in providers}


async def providers_of_care_team(viewer: Viewer, care_team_id: UUID) -> list[Provider]:
    if care_team_id not in (await get_care_teams(viewer, [care_team_id])):
        return []
    return list(await Provider.filter(care_teams__id=care_team_id).order_by("family_name", "given_name", "id"))


async def care_teams_of_provider(viewer: Viewer, provider_id: UUID) -> list[CareTeam]:
    teams = await CareTeam.filter(care_teams_visible_to(viewer), providers__id=provider_id).order_by("name")
    return list(teams)
