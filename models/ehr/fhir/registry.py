"""The FHIR resources we serve, collected from the mapping modules, and the reads that look them
up: one resource by type and id (`fhir_resource`), a patient's record as a Bundle
(`patient_bundle`); the change feed renders its events through `RECORDS` (PRODUCT.md
capability 10).

Each mapping module declares its resources (a `Readable` per resource type, a `Records` per kind
of record); they are listed here, in one place, because the order says something: which reader
of a shared type answers first, which order the Bundle has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from models.ehr.fhir import alerts, audit, care, consent, identity, messaging, outcomes, reports, surveys
from models.ehr.fhir.common import Readable, Records, Resource, instant
from models.identity.access import Viewer, clinical_patient
from models.kernel.errors import InvalidInput, NotFound

# What `fhirResource` serves. A type several records map to has a reader per shape of its ids:
# the first that claims an id answers for it.
READABLE: tuple[Readable[Any], ...] = (
    identity.PATIENT,
    care.MEDICATION_ADMINISTRATION,
    surveys.SCORE_OBSERVATION,  # `<response id>-total`, before readings: `<id>-bp-pre-total` is a score's
    care.READING_OBSERVATION,  # `<session id>-<bp|hr|spo2>-<pre|mid|post>`
    reports.CHECK_IN_OBSERVATION,  # any other Observation id
    surveys.QUESTIONNAIRE_RESPONSE,
    reports.ADVERSE_EVENT,
    alerts.FLAG,
    messaging.COMMUNICATION,
    identity.PRACTITIONER,
    identity.CARE_TEAM,
    outcomes.MEDICATION_STATEMENT,
    care.CARE_PLAN,
    care.MEDICATION_REQUEST,
    surveys.QUESTIONNAIRE,
    consent.CONSENT,
    audit.AUDIT_EVENT,
)


def _by_type(readers: tuple[Readable[Any], ...]) -> dict[str, list[Readable[Any]]]:
    found: dict[str, list[Readable[Any]]] = {}
    for reader in readers:
        found.setdefault(reader.resource_type, []).append(reader)
    return found


_READERS = _by_type(READABLE)
RESOURCE_TYPES = tuple(_READERS)  # in the order an unknown type's refusal lists them

# The records that reach the change feed, in the order the patient Bundle lists them.
RECORDS: tuple[Records, ...] = (
    identity.PATIENTS,
    care.PLANS,
    care.SESSIONS,
    outcomes.DOSES,
    reports.CHECK_INS,
    surveys.RESPONSES,
    reports.SIDE_EFFECTS,
    alerts.ALERTS,
    messaging.MESSAGES,
    consent.CONSENTS,
)
RECORDS_BY_EVENT_TYPE = {records.event_type: records for records in RECORDS}


async def fhir_resource(viewer: Viewer, resource_type: str, resource_id: str) -> Resource:
    """One resource the viewer may read, as FHIR JSON; `NotFound("resource")` for one that does
    not exist or that the viewer may not see, whichever rule refused it (the patient's, the
    record's, the audit log's): the same words either way, and the refusal audited."""
    readers = _READERS.get(resource_type)
    if readers is None:
        raise InvalidInput("resourceType", f"resourceType must be one of {', '.join(RESOURCE_TYPES)}")
    reader = next((reader for reader in readers if reader.claims(resource_id)), None)
    if reader is None:
        raise NotFound("resource")
    try:
        return await reader.read(viewer, resource_id)
    except NotFound:
        raise NotFound("resource") from None


async def patient_bundle(viewer: Viewer, patient_id: UUID, *, now: datetime) -> dict[str, Any]:
    """A patient's record as a FHIR `collection` Bundle: the Patient, then each session with its
    readings, side effects and alerts, oldest first (one query per kind of record)."""
    patient = await clinical_patient(viewer, patient_id, "Bundle")
    resources: list[Resource] = []
    for records in RECORDS:
        if records.of_patient is not None:
            resources += await records.of_patient(patient)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": instant(now),
        "total": len(resources),
        "entry": [
            {"fullUrl": f"urn:ketafollow:{resource['resourceType']}/{resource['id']}", "resource": resource}
            for resource in resources
        ],
    }
