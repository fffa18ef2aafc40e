"""Who the record is about and who cares for them, as FHIR: Patient, Practitioner, CareTeam
(PRODUCT.md capability 10).

A Patient is read under the patient-list rule (`get_patient`); a Practitioner or CareTeam by
whoever can see that team (`get_providers`, `get_care_teams`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from models.ehr.fhir.common import Readable, Records, Resource, meta, record_id, reference
from models.identity.access import Viewer
from models.identity.accounts import CareTeam, Patient, Provider
from models.identity.directory import get_care_teams, get_patient, get_providers, providers_of_care_team
from models.kernel.errors import NotFound


def patient_resource(patient: Patient) -> dict[str, Any]:
    """A Patient: name, birth date, phone."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "meta": meta(patient.updated_at),
        "active": True,
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "birthDate": patient.birth_date.isoformat(),
    }
    if patient.phone:
        resource["telecom"] = [{"system": "phone", "value": patient.phone, "use": "mobile"}]
    return resource


def practitioner(provider: Provider) -> dict[str, Any]:
    """A provider: name, credentials, NPI when known."""
    name: dict[str, Any] = {"family": provider.family_name, "given": [provider.given_name]}
    if provider.credentials:
        name["suffix"] = [provider.credentials]
    resource: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": str(provider.id),
        "meta": meta(provider.updated_at),
        "active": True,
        "name": [name],
    }
    if provider.npi:
        resource["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": provider.npi}]
    return resource


def care_team(team: CareTeam, providers: list[Provider]) -> dict[str, Any]:
    """A care team and its providers."""
    return {
        "resourceType": "CareTeam",
        "id": str(team.id),
        "meta": meta(team.updated_at),
        "status": "active",
        "name": team.name,
        "participant": [{"member": reference("Practitioner", provider.id)} for provider in providers],
    }


async def _patient(viewer: Viewer, resource_id: str) -> Patient:
    return await get_patient(viewer, record_id(resource_id))


async def _provider(viewer: Viewer, resource_id: str) -> Provider:
    providers = await get_providers(viewer, [record_id(resource_id)])
    if not providers:
        raise NotFound("resource")
    return next(iter(providers.values()))


async def _care_team(viewer: Viewer, resource_id: str) -> tuple[CareTeam, list[Provider]]:
    teams = await get_care_teams(viewer, [record_id(resource_id)])
    if not teams:
        raise NotFound("resource")
    team = next(iter(teams.values()))
    return team, await providers_of_care_team(viewer, team.id)


PATIENT = Readable("Patient", _patient, patient_resource)
PRACTITIONER = Readable("Practitioner", _provider, practitioner)
CARE_TEAM = Readable("CareTeam", _care_team, lambda found: care_team(*found))


async def _patients(ids: list[UUID]) -> dict[UUID, list[Resource]]:
    return {patient.id: [patient_resource(patient)] for patient in await Patient.filter(id__in=ids)}


async def _the_patient(patient: Patient) -> list[Resource]:
    return [patient_resource(patient)]


PATIENTS = Records("Patient", ("Patient",), _patients, _the_patient)
