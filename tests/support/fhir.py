"""Readings recorded through the API for the FHIR tests, and the models the feed covers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fhir.resources.R4B.adverseevent import AdverseEvent
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.careteam import CareTeam as FhirCareTeam
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.consent import Consent
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from starlette.applications import Starlette

from api.database import use_database
from models.care.dosing_records import DosingSession

MODELS: dict[str, Any] = {
    "Patient": FhirPatient,
    "MedicationAdministration": MedicationAdministration,
    "Observation": Observation,
    "QuestionnaireResponse": QuestionnaireResponse,
    "AdverseEvent": AdverseEvent,
    "Flag": Flag,
    "Communication": Communication,
    "Practitioner": Practitioner,
    "CareTeam": FhirCareTeam,
    "MedicationStatement": MedicationStatement,
    "CarePlan": CarePlan,
    "MedicationRequest": MedicationRequest,
    "Consent": Consent,
}


MID_DOSE = timedelta(minutes=40)


async def record_clinic_readings(app: Starlette, email: str) -> DosingSession:
    """Heart rate and SpO2 before, at 40 minutes and after, and the 40-minute blood pressure, on
    one of the patient's completed sessions, as a clinic's REMS monitoring form records them (no
    API writes these fields yet: straight through the ORM)."""
    with use_database(app.state.database):
        session = await DosingSession.filter(patient__user__email=email, post_systolic__not_isnull=True).first()
        assert session is not None
        await DosingSession.filter(id=session.id).update(
            setting="CLINIC", pre_heart_rate=72, pre_spo2=98, mid_systolic=150, mid_diastolic=92, mid_heart_rate=88,
            mid_spo2=93, mid_measured_at=session.started_at + MID_DOSE, post_heart_rate=64, post_spo2=97,
        )  # fmt: skip
        return await DosingSession.get(id=session.id)
