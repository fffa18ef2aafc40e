"""FHIR R4 JSON in the API: `fhirResource(resourceType, id)`. Read-only; the mapping is models.fhir."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from models import fhir
from schema.accounts import node_uuid, parse_uuid
from schema.context import Context
from schema.errors import BadUserInput, refusals_as_errors
from schema.permissions import viewer_of


@strawberry.type
class FhirQuery:
    @strawberry.field(
        description=(
            "One record as FHIR R4 JSON: Patient, MedicationAdministration (a dosing session), Observation "
            "(a check-in; `<session id>-bp-pre` or `-bp-post`; `<response id>-total`), QuestionnaireResponse, "
            "AdverseEvent (a side effect), Flag (an alert), Communication (a message), "
            "MedicationStatement (an opioid dose), Practitioner or CareTeam."
        )
    )
    async def fhir_resource(self, info: Info[Context, None], resource_type: str, id: strawberry.ID) -> JSON:
        with refusals_as_errors():
            resource: dict[str, Any] = await fhir.fhir_resource(viewer_of(info), resource_type, str(id))
        return resource  # type: ignore[return-value]  # JSON is any JSON value

    @strawberry.field(description="A patient's record as a FHIR R4 `collection` Bundle.")
    async def fhir_patient_bundle(self, info: Info[Context, None], patient_id: strawberry.ID) -> JSON:
        patient = node_uuid(info, patient_id, "Patient") or parse_uuid(str(patient_id))
        if patient is None:
            raise BadUserInput("patientId is not a patient id")
        with refusals_as_errors():
            bundle = await fhir.patient_bundle(viewer_of(info), patient, now=info.context.now())
        return bundle  # type: ignore[return-value]
