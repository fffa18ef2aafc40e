"""A patient's consent to share their record with an EHR client, as a FHIR Consent (PRODUCT.md
capability 10).

Read under the patient's chart rule (`clinical_patient`), and by an EHR client only for its own
consents: another client's is refused as not found, and audited.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from models.ehr.fhir.common import (
    HL7,
    LOINC,
    Readable,
    Records,
    Resource,
    concept,
    instant,
    meta,
    period,
    record_id,
    reference,
)
from models.identity.access import Viewer, clinical_patient
from models.identity.accounts import ApiClient, DataSharingConsent
from models.kernel.audit import AuditAction, denied
from models.kernel.errors import NotFound

CLIENT_IDENTIFIER_SYSTEM = "urn:ketafollow:api-client"


def consent(record: DataSharingConsent, client: ApiClient) -> dict[str, Any]:
    """A patient's consent to share their record with one EHR client; `inactive` once revoked
    (from then on the client receives nothing more of the record)."""
    return {
        "resourceType": "Consent",
        "id": str(record.id),
        "meta": meta(record.updated_at, 2 if record.revoked_at else 1),
        "status": "inactive" if record.revoked_at else "active",
        "scope": concept(f"{HL7}/consentscope", "patient-privacy", "Privacy Consent"),
        "category": [concept(LOINC, "59284-0", "Patient Consent")],
        "patient": reference("Patient", record.patient_id),  # type: ignore[attr-defined]
        "dateTime": instant(record.granted_at),
        "policyRule": concept(f"{HL7}/v3-ActCode", "OPTIN", "opt-in"),
        "provision": {
            "type": "permit",
            "period": period(record.granted_at, record.revoked_at),
            "actor": [
                {
                    "role": concept(f"{HL7}/v3-ParticipationType", "IRCP", "information recipient"),
                    "reference": {
                        "identifier": {"system": CLIENT_IDENTIFIER_SYSTEM, "value": client.client_id},
                        "display": client.name,
                    },
                }
            ],
        },
    }


async def _consent(viewer: Viewer, resource_id: str) -> DataSharingConsent:
    record = await DataSharingConsent.get_or_none(id=record_id(resource_id)).select_related("api_client")
    if record is None:
        raise NotFound("resource")
    if viewer.is_api_client and record.api_client.id != viewer.id:  # another client's consent
        patient_id: UUID = record.patient_id  # type: ignore[attr-defined]
        raise denied(viewer, NotFound("resource"), AuditAction.READ, "Consent", patient_id=patient_id)
    await clinical_patient(viewer, record.patient_id, "Consent")  # type: ignore[attr-defined]
    return record


CONSENT = Readable("Consent", _consent, lambda record: consent(record, record.api_client))


async def _consents(ids: list[UUID]) -> dict[UUID, list[Resource]]:
    rows = await DataSharingConsent.filter(id__in=ids).select_related("api_client")
    return {row.id: [consent(row, row.api_client)] for row in rows}


# In the change feed only: the patient Bundle carries the clinical record, not who it is shared with.
CONSENTS = Records("Consent", ("Consent",), _consents)
